"""PEP 578 audit hooks: calls raised in C (``open``, ``socket.connect``, ``subprocess.Popen``,
``sqlite3.connect``, ``time.sleep`` on 3.13+, ...), including calls made from C code and through
names bound before install.

An audit hook can never be removed, so one hook is added per process and gated: when nothing is
watched, ``event in _watched`` fails on an empty dict.  Its cost on other events (every
``sys._getframe``, every ``open``) is one dict lookup.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from ._loop import get_running_loop
from ._spec import AuditHook

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)

Handler = Callable[[AuditHook, tuple[Any, ...]], None]

_watched: dict[str, AuditHook] = {}
_handler: Handler | None = None
_added = False


def _hook(event: str, args: tuple[Any, ...]) -> None:
    spec = _watched.get(event)
    if spec is not None and get_running_loop() is not None and _handler is not None:
        _handler(spec, args)


def enable(specs: list[AuditHook], handler: Handler) -> None:
    global _added, _watched, _handler
    _handler = handler
    _watched = {spec.event: spec for spec in specs}
    if not _added:
        sys.addaudithook(_hook)
        _added = True


def disable() -> None:
    global _watched
    _watched = {}
