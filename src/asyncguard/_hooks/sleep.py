"""``time.sleep``: the attribute, names bound before install, and (3.13+) the audit event."""

from __future__ import annotations

from typing import Any

from .. import _wording
from .._format import short
from .._spec import AuditHook, Family, Hook

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)
__asyncguard_work__ = True  # the guard judging or reporting a call (_frames)


def _blocks(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    # time.sleep(0) only yields the GIL; it never waits
    return not (args and isinstance(args[0], (int, float)) and args[0] <= 0)


def _fmt(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    return short(args[0]) if args else ""


FAMILY = Family(
    name="sleep",
    description="time.sleep",
    hooks=(
        Hook("time", "sleep", "time.sleep", "sleep", _wording.SLEEP, would_block=_blocks, fmt=_fmt),
    ),
    audit=(
        AuditHook(
            "time.sleep",
            "time.sleep",
            "sleep",
            _wording.SLEEP,
            would_block=lambda args: _blocks(args, {}),
        ),
    ),
)
