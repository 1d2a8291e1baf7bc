"""System checks: invalid ``ASYNC_GUARD`` settings, and raise mode in production."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

from .._allow import AllowRule, names_a_missing_module
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


@register(Tags.compatibility)
def check_allow_rules(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    """Allow rules naming a module that does not exist never allow anything: a typo."""
    if conf.problems():
        return []
    options, _ = conf.load_options()
    rules = [AllowRule.parse(text) for text in options.get("allow", ())]
    return [
        Warning(
            f"the allow rule {rule.source!r} names a module that cannot be found: it never "
            "allows anything",
            hint="Check the module's spelling in ASYNC_GUARD['ALLOW'] (or ASYNC_GUARD_ALLOW).",
            id="asyncguard.W002",
        )
        for rule in rules
        if names_a_missing_module(rule)
    ]
