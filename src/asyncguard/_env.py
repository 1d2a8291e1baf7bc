"""Configuration from environment variables alone, for staging: ``ASYNC_GUARD_MODE=warn`` and
friends.  Read by ``AsyncGuardMiddleware`` and the Django app, where they override the keyword
arguments and the ``ASYNC_GUARD`` setting (a deployment flips them without a code change).

The variables, their forms and validation are the option table's (``_config.TABLE``: each row
with an ``env`` name; the README's Staging section lists them): a bad value or an unknown
``ASYNC_GUARD_*`` name is a ``ValueError`` naming the variable, its value and what it accepts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from . import _config

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)

PREFIX = _config.ENV_PREFIX
# variable suffix -> its option's row
VARIABLES: dict[str, _config.Option] = {
    name.removeprefix(PREFIX): option for name, option in _config.ENV.items()
}


def options_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The install options the environment sets (``os.environ`` by default), validated."""
    return _config.from_env(os.environ if environ is None else environ)


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """``ASYNC_GUARD_*`` variables that are not ours (a typo would silently do nothing)."""
    return _config.unknown_variables(os.environ if environ is None else environ)
