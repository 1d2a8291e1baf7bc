"""The Django app config: checks, and the guard installed when Django is set up."""

from __future__ import annotations

import os
import sys

from django.apps import AppConfig
from django.core.exceptions import ImproperlyConfigured

from .. import _guard, _install
from . import checks, conf  # noqa: F401 - checks: imported for its @register side effect

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)


class AsyncGuardConfig(AppConfig):
    name = "asyncguard.django"
    label = "asyncguard"
    verbose_name = "asyncguard"

    def ready(self) -> None:
        """Install the guard the settings and environment ask for; bad settings stop Django
        right here with ``ImproperlyConfigured`` (a server process runs no system checks)."""
        if _pytest_runs():
            return  # the pytest plugin guards each test, or nothing under -p no:asyncguard
        options, _ = conf.load_options()  # ImproperlyConfigured naming the bad values
        if options["mode"] != "off" or _guard.current() is not None:
            try:
                _install.install(**options)
            except ValueError as exc:  # what only installing finds (the JSON file opens)
                raise ImproperlyConfigured(f"{conf.source_of('json')}: {exc}") from None


def _pytest_runs() -> bool:
    """This process runs pytest: pytest 8.2+ sets ``PYTEST_VERSION`` for its session (a server
    that a test starts inherits the variable but does not import pytest)."""
    return "PYTEST_VERSION" in os.environ and "_pytest.config" in sys.modules
