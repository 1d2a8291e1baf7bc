"""Abridged, secret-free argument text for messages: ``time.sleep(0.5)``, ``open('a.txt')``."""

from __future__ import annotations

import os
from typing import Any

from ._redact import redact

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)

_MAX = 60


def short(value: Any) -> str:
    """``repr`` of one argument, at most 60 chars, scrubbed of secrets before it is cut (URLs
    lose credentials, query and fragment; passwords, tokens, cookies...: see ``_redact``)."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    try:
        text = redact(repr(value))
    except Exception:  # a broken __repr__ must never break the caller
        text = f"<{type(value).__name__}>"
    if len(text) > _MAX:
        text = text[: _MAX - 1] + "…"
    return text


def positional(args: tuple[Any, ...], *, skip: int = 0, limit: int = 2) -> str:
    shown = [short(a) for a in args[skip : skip + limit]]
    if len(args) > skip + limit:
        shown.append("…")
    return ", ".join(shown)
