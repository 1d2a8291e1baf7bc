"""``ASYNC_GUARD`` settings -> guard options, with errors that name the key, value and choices.

The keys and their validation are the option table's (``_config.TABLE``: each row with a
``django`` key); the ``ASYNC_GUARD_*`` environment variables override them.
"""

from __future__ import annotations

import os
from typing import Any

from .. import _config

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)

SETTING = _config.SETTING
ENV_MODE = _config.BY_NAME["mode"].env
KEYS = tuple(_config.SETTINGS)


def _raw() -> object:
    from django.conf import settings  # here: the middleware imports this module without Django

    raw = getattr(settings, SETTING, {})
    if isinstance(raw, dict) and raw.get("MODE", "") is None:  # None: the default (DEBUG)
        raw = {key: value for key, value in raw.items() if key != "MODE"}
    return raw


def problems() -> list[str]:
    """Every problem with the settings and the environment, one sentence each (empty when
    they are valid)."""
    found: list[str] = []
    try:
        _config.from_settings(_raw())
    except _config.ConfigError as exc:
        found.extend(exc.problems)
    try:
        _config.from_env(os.environ)
    except _config.ConfigError as exc:
        found.extend(exc.problems)
    return found


def mode() -> str:
    """The effective mode: environment, then settings, then ``raise`` under DEBUG else ``off``.
    (Only called with valid settings: see :func:`problems`.)"""
    from django.conf import settings

    configured = _config.from_settings(_raw()).get("mode")
    default = "raise" if settings.DEBUG else "off"
    return str(_config.from_env(os.environ).get("mode") or configured or default)


def load_options() -> tuple[dict[str, Any], bool]:
    """``(install options, debug header on?)``; ``ImproperlyConfigured`` on bad settings."""
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    found = problems()
    if found:
        raise ImproperlyConfigured("; ".join(found))
    options = _config.from_settings(_raw())
    header = options.pop("debug_header", None)
    options["mode"] = mode()
    options.update(_config.from_env(os.environ))  # the environment wins
    return options, bool(settings.DEBUG if header is None else header)


def source_of(option: str) -> str:
    """Where an option's value came from, as messages name it: the environment variable when
    it is set, else the ``ASYNC_GUARD`` key."""
    row = _config.BY_NAME[option]
    if row.env and os.environ.get(row.env, "").strip():
        return row.env
    return _config.setting_source(row.django or option.upper())
