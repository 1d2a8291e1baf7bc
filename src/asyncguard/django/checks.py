"""System checks: invalid ``ASYNC_GUARD`` settings, and raise mode in production."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

from . import conf

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    return [
        Error(
            problem,
            hint="See the asyncguard README, section Django.",
            id="asyncguard.E001",
        )
        for problem in conf.problems()
    ]


@register(Tags.compatibility, deploy=True)
def check_deploy(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    if conf.problems() or settings.DEBUG or conf.mode() != "raise":
        return []
    return [
        Warning(
            "asyncguard is in 'raise' mode with DEBUG = False: a blocking call in an async "
            "view becomes a 500 error for your users.",
            hint="Use ASYNC_GUARD = {'MODE': 'warn'} (or ASYNC_GUARD_MODE=warn) in production.",
            id="asyncguard.W001",
        )
    ]
