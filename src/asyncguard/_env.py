"""Configuration from environment variables alone, for staging: ``ASYNC_GUARD_MODE=warn`` and
friends.  Read by ``AsyncGuardMiddleware`` and the Django app, where they override the keyword
arguments and the ``ASYNC_GUARD`` setting (a deployment flips them without a code change).

=============================== ======================================= =====================
variable                        value                                   option
=============================== ======================================= =====================
``ASYNC_GUARD_MODE``            ``raise`` | ``warn`` | ``offload`` | ``off`` ``mode``
``ASYNC_GUARD_ALLOW``           rules, comma-separated                  ``allow``
``ASYNC_GUARD_EXCLUDE``         hook families or libraries, comma-sep.  ``exclude``
``ASYNC_GUARD_MIN_DURATION``    seconds (``0.005``) or ``5ms``          ``min_duration``
``ASYNC_GUARD_STALL_THRESHOLD`` seconds or ``100ms``; ``off`` disables  ``stall_threshold``
``ASYNC_GUARD_JSON``            a file path, or ``-`` for stderr        ``json``
``ASYNC_GUARD_RATE_LIMIT``      log lines a minute (``0``: no limit)    ``rate_limit``
``ASYNC_GUARD_MAX_SITES``       call sites tracked                      ``max_sites``
``ASYNC_GUARD_SUMMARY_INTERVAL`` seconds between summaries (``0``: exit) ``summary_interval``
``ASYNC_GUARD_LOG``             ``1``/``0`` (``true``/``false``)          ``log``
``ASYNC_GUARD_OFFLOAD_THREADS`` worker threads for offload mode          ``offload_threads``
=============================== ======================================= =====================
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping
from typing import Any

from ._guard import MODES, Guard

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)

PREFIX = "ASYNC_GUARD_"


def _duration(text: str) -> float:
    text = text.strip().lower()
    scale = 1.0
    if text.endswith("ms"):
        text, scale = text[:-2], 0.001
    elif text.endswith("s"):
        text = text[:-1]
    value = float(text) * scale
    if value < 0 or value != value:
        raise ValueError
    return value


def _threshold(text: str) -> float | None:
    if text.strip().lower() in ("off", "none", "0"):
        return None
    return _duration(text)


def _count(text: str) -> int:
    value = int(text.strip())
    if value < 0:
        raise ValueError
    return value


def _flag(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError


def _items(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


# variable suffix -> (option, parser, what a valid value looks like)
VARIABLES: dict[str, tuple[str, Callable[[str], Any], str]] = {
    "MODE": ("mode", str.strip, "'raise', 'warn', 'offload' or 'off'"),
    "ALLOW": ("allow", _items, "comma-separated allow rules"),
    "EXCLUDE": ("exclude", _items, "comma-separated hook families or libraries (clients.redis)"),
    "MIN_DURATION": ("min_duration", _duration, "seconds like 0.005 or 5ms"),
    "STALL_THRESHOLD": ("stall_threshold", _threshold, "seconds like 0.1 or 100ms, or off"),
    "JSON": ("json", str.strip, "a file path, or - for standard error"),
    "RATE_LIMIT": ("rate_limit", _count, "log lines a minute, 0 for no limit"),
    "MAX_SITES": ("max_sites", _count, "a whole number of call sites"),
    "SUMMARY_INTERVAL": ("summary_interval", _duration, "seconds, 0 for only at exit"),
    "LOG": ("log", _flag, "1 or 0"),
    "OFFLOAD_THREADS": ("offload_threads", _count, "a whole number of worker threads"),
}


def options_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The install options the environment sets; ``ValueError`` naming the variable, its value
    and what it accepts (the guard validates the values further: modes, rules, families)."""
    environ = os.environ if environ is None else environ
    unknown = unknown_variables(environ)
    if unknown:
        close = difflib.get_close_matches(unknown[0], [PREFIX + s for s in VARIABLES], n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ValueError(
            f"unknown environment variable {unknown[0]}{hint} (asyncguard reads "
            f"{', '.join(PREFIX + suffix for suffix in VARIABLES)})"
        )
    options: dict[str, Any] = {}
    for suffix, (option, parse, valid) in VARIABLES.items():
        name = PREFIX + suffix
        raw = environ.get(name)
        if raw is None or raw.strip() == "":
            continue
        try:
            value = parse(raw)
        except ValueError:
            raise ValueError(f"{name}={raw!r} is not valid; expected {valid}") from None
        if option == "mode" and value not in MODES:
            raise ValueError(
                f"{name}={raw!r} is not a valid mode; choose one of {', '.join(map(repr, MODES))}"
            )
        if option in ("allow", "exclude"):
            try:  # the guard's own checks (modes, rule syntax, family names), on a scratch guard
                Guard().configure(**{option: value})
            except ValueError as exc:
                raise ValueError(f"{name}={raw!r}: {exc}") from None
        options[option] = value
    return options


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """``ASYNC_GUARD_*`` variables that are not ours (a typo would silently do nothing)."""
    environ = os.environ if environ is None else environ
    known = {PREFIX + suffix for suffix in VARIABLES}
    return sorted(name for name in environ if name.startswith(PREFIX) and name not in known)
