"""Reading the console: ``input()`` and ``getpass.getpass()``.

Both wait for a person at a terminal, so on a loop thread they are always flagged, whatever
``sys.stdin`` is.  ``input`` also raises the ``builtins.input`` audit event (before reading),
which catches a reference saved before install.
"""

from __future__ import annotations

from typing import Any

from .. import _wording
from .._format import short
from .._spec import AuditHook, Family, Hook

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)
__asyncguard_work__ = True  # the guard judging or reporting a call (_frames)

CATEGORY = "console"
GETPASS_HINT = "ask for secrets before starting the loop, or " + _wording.THREAD.removeprefix("or ")


def _fmt_prompt(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    if args:
        return short(args[0])
    return short(kwargs["prompt"]) if "prompt" in kwargs else ""


FAMILY = Family(
    name="console",
    description="console input: input(), getpass.getpass()",
    hooks=(
        Hook("builtins", "input", "input", CATEGORY, _wording.INPUT, fmt=_fmt_prompt),
        Hook("getpass", "getpass", "getpass.getpass", CATEGORY, GETPASS_HINT, fmt=_fmt_prompt),
    ),
    audit=(
        AuditHook(
            "builtins.input",
            "input",
            CATEGORY,
            _wording.INPUT,
            fmt=lambda args: short(args[0]) if args and args[0] is not None else "",
        ),
    ),
)
