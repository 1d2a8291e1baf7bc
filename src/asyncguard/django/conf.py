"""``ASYNC_GUARD`` settings -> guard options, with errors that name the key, value and choices.

Django is imported inside the functions, so the middleware can import this module in a project
without Django (importing asyncguard never imports Django)."""

from __future__ import annotations

import os
from typing import Any

from .. import _env, _guard
from .._allow import AllowRule
from .._hooks import catalog

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)

SETTING = "ASYNC_GUARD"
ENV_MODE = "ASYNC_GUARD_MODE"
KEYS = (
    "MODE",
    "ALLOW",
    "MIN_DURATION",
    "EXCLUDE",
    "LOG",
    "DEBUG_HEADER",
    "STALL_THRESHOLD",
    "JSON",
    "RATE_LIMIT",
    "MAX_SITES",
    "SUMMARY_INTERVAL",
    "OFFLOAD_THREADS",
    "OFFLOAD_ROUTES",
)
# settings keys checked by the guard's own validation, with the install option they set
CHECKED = {
    "STALL_THRESHOLD": "stall_threshold",
    "RATE_LIMIT": "rate_limit",
    "MAX_SITES": "max_sites",
    "SUMMARY_INTERVAL": "summary_interval",
    "OFFLOAD_THREADS": "offload_threads",
    "OFFLOAD_ROUTES": "offload_routes",
}


def problems() -> list[str]:
    """Every problem with the settings, one sentence each (empty when they are valid)."""
    from django.conf import settings  # imported with Django: the middleware imports this module

    found: list[str] = []
    raw = getattr(settings, SETTING, {})
    if not isinstance(raw, dict):
        return [f"{SETTING} must be a dict like {{'MODE': 'warn'}}, got {raw!r}"]
    for key in raw:
        if key not in KEYS:
            found.append(f"{SETTING}[{key!r}] is not a setting; valid keys are {', '.join(KEYS)}")
    choices = ", ".join(map(repr, _guard.MODES))
    mode = raw.get("MODE")
    if mode is not None and mode not in _guard.MODES:
        found.append(f"{SETTING}['MODE'] = {mode!r} is not a valid mode; choose one of {choices}")
    try:
        _env.options_from_env()
    except ValueError as exc:
        found.append(str(exc))
    allow = raw.get("ALLOW", [])
    if isinstance(allow, str) or not isinstance(allow, (list, tuple)):
        found.append(f"{SETTING}['ALLOW'] must be a list of rules, got {allow!r}")
    else:
        for rule in allow:
            try:
                AllowRule.parse(rule)
            except ValueError as exc:
                found.append(f"{SETTING}['ALLOW'] entry {rule!r}: {exc}")
    duration = raw.get("MIN_DURATION", 0.0)
    if isinstance(duration, bool) or not isinstance(duration, (int, float)) or duration < 0:
        found.append(f"{SETTING}['MIN_DURATION'] = {duration!r} must be a number of seconds >= 0")
    exclude = raw.get("EXCLUDE", [])
    if isinstance(exclude, str) or not isinstance(exclude, (list, tuple)):
        found.append(f"{SETTING}['EXCLUDE'] must be a list of hook families, got {exclude!r}")
    else:
        excludable = catalog.exclude_choices()
        for name in exclude:
            if name not in excludable:
                found.append(
                    f"{SETTING}['EXCLUDE'] entry {name!r} is not a hook family; choose from "
                    f"{', '.join(map(repr, catalog.family_names()))}, or one library: "
                    f"{', '.join(map(repr, catalog.library_names()))}"
                )
    for key, option in CHECKED.items():
        if key in raw:
            try:
                _guard.Guard().configure(**{option: raw[key]})
            except ValueError as exc:
                found.append(f"{SETTING}[{key!r}] = {raw[key]!r}: {exc}")
    path = raw.get("JSON")
    if path is not None and (not isinstance(path, str) or not path):
        found.append(f"{SETTING}['JSON'] = {path!r} must be a file path, or '-' for stderr")
    for key in ("LOG", "DEBUG_HEADER"):
        value = raw.get(key)
        if value is not None and not isinstance(value, bool):
            found.append(f"{SETTING}[{key!r}] = {value!r} must be True or False")
    return found


def mode() -> str:
    """The effective mode: environment, then settings, then ``raise`` under DEBUG else ``off``."""
    from django.conf import settings

    raw = getattr(settings, SETTING, {})
    configured = raw.get("MODE") if isinstance(raw, dict) else None
    default = "raise" if settings.DEBUG else "off"
    return str(os.environ.get(ENV_MODE) or configured or default)


def load_options() -> tuple[dict[str, Any], bool]:
    """``(install options, debug header on?)``; ``ImproperlyConfigured`` on bad settings."""
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    found = problems()
    if found:
        raise ImproperlyConfigured("; ".join(found))
    raw: dict[str, Any] = getattr(settings, SETTING, {})
    options: dict[str, Any] = {
        "mode": mode(),
        "allow": list(raw.get("ALLOW", [])),
        "min_duration": float(raw.get("MIN_DURATION", 0.0)),
        "exclude": list(raw.get("EXCLUDE", [])),
        "log": bool(raw.get("LOG", True)),
    }
    for key, option in (*CHECKED.items(), ("JSON", "json")):
        if key in raw:
            options[option] = raw[key]
    options.update(_env.options_from_env())  # the environment wins
    header = raw.get("DEBUG_HEADER")
    return options, bool(settings.DEBUG if header is None else header)
