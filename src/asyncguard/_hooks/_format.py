"""Abridged, secret-free argument text for messages: ``time.sleep(0.5)``, ``open('a.txt')``."""

from __future__ import annotations

import os
import re
from typing import Any

_MAX = 60
_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)(?:[^/?#@]*@)?([^?#]*)([?#].*)?$")


def short(value: Any) -> str:
    """``repr`` of one argument, at most 60 chars; URLs lose credentials, query and fragment."""
    if isinstance(value, (str, bytes)):
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        match = _URL.match(text)
        if match:
            value = match.group(1) + match.group(2) + ("?…" if match.group(3) else "")
    elif isinstance(value, os.PathLike):
        value = os.fspath(value)
    try:
        text = repr(value)
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
