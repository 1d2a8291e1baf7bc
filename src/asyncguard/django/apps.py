"""The Django app config: checks, and the guard installed when Django is set up."""

from __future__ import annotations

from django.apps import AppConfig

from .. import _guard, _install
from . import checks, conf  # noqa: F401 - checks: imported for its @register side effect

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)


class AsyncGuardConfig(AppConfig):
    name = "asyncguard.django"
    label = "asyncguard"
    verbose_name = "asyncguard"

    def ready(self) -> None:
        if conf.problems():
            return  # the system checks report them; the middleware refuses to start
        options, _ = conf.load_options()
        if options["mode"] != "off" or _guard.current() is not None:
            _install.install(**options)
