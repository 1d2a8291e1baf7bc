"""A small Django project for in-process tests: settings, urls, async views that block next to
sync views (run by Django in a thread) and correct async ones, templates, models.

Django's settings are process-wide: :func:`configure` sets them once per test process, and
every test module that runs Django in-process should go through it.
"""

from __future__ import annotations

import os
from pathlib import Path


def configure(base_dir: Path) -> None:
    """Configure Django with ``djangotest.settings`` (paths under ``base_dir``), set it up and
    create the database tables (off any event loop).  Later calls do nothing."""
    from django.conf import settings

    if settings.configured:
        if "djangotest" not in settings.INSTALLED_APPS:
            raise RuntimeError(
                "Django settings were configured by something else; the in-process Django "
                "tests need djangotest.configure() to run first"
            )
        return
    os.environ["DJANGOTEST_DIR"] = str(base_dir)
    for name in ("cache", "media", "sessions"):
        (base_dir / name).mkdir(parents=True, exist_ok=True)

    import django
    from django.core.management import call_command

    from . import settings as project

    settings.configure(**{name: getattr(project, name) for name in dir(project) if name.isupper()})
    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    call_command("createcachetable", verbosity=0)

    from django.db import connections

    connections.close_all()
