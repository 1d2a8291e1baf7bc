"""Starting and waiting for processes: ``subprocess``, ``os.system``/``popen``/``spawn*``,
``os.posix_spawn*`` and ``os.wait*``.

``subprocess.Popen`` is guarded at ``Popen.__init__``, so raise mode raises before the fork:
no child is left running behind the error (blockbuster raises only after the fork).
asyncio's own subprocess transport calls ``Popen`` too; asyncio is an exempt caller, so
``await asyncio.create_subprocess_exec(...)`` is never flagged.  ``os.exec*`` is not hooked:
it replaces the process rather than blocking the loop, and ``os.fork`` is left alone.
"""

from __future__ import annotations

import os
from typing import Any

from .. import _wording
from .._format import short
from .._spec import AuditHook, Family, Format, Hook, WouldBlock

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)
__asyncguard_work__ = True  # the guard judging or reporting a call (_frames)

CATEGORY = "subprocess"
WAIT_HINT = (
    "await an asyncio subprocess instead (`await proc.wait()`), poll with `os.WNOHANG`, "
    + _wording.THREAD
)

Args = tuple[Any, ...]
Kwargs = dict[str, Any]

_WNOHANG: int = getattr(os, "WNOHANG", 0)


# -- predicates -----------------------------------------------------------------------------


def _timeout_zero(args: Args, kwargs: Kwargs) -> bool:
    timeout = args[1] if len(args) > 1 else kwargs.get("timeout")
    return isinstance(timeout, (int, float)) and timeout <= 0


def _child_running(args: Args, kwargs: Kwargs) -> bool:
    """``Popen.wait``/``communicate``: only a child that is still running makes them wait."""
    if _timeout_zero(args, kwargs):
        return False  # wait(timeout=0) polls once and raises TimeoutExpired
    proc = args[0]
    if getattr(proc, "returncode", None) is not None:
        return False
    try:
        return proc.poll() is None
    except Exception:  # a half-built Popen: let the original report its own error
        return False


def _options_at(index: int) -> WouldBlock:
    def would_block(args: Args, kwargs: Kwargs) -> bool:
        options = args[index] if len(args) > index else kwargs.get("options", 0)
        return not (isinstance(options, int) and options & _WNOHANG)

    return would_block


# -- message arguments ------------------------------------------------------------------------


def _command(args: Args, kwargs: Kwargs, index: int = 0) -> str:
    if len(args) > index:
        return short(args[index])
    for name in ("args", "cmd", "command"):
        if name in kwargs:
            return short(kwargs[name])
    return ""


def _fmt_command(args: Args, kwargs: Kwargs) -> str:
    return _command(args, kwargs)


def _fmt_popen(args: Args, kwargs: Kwargs) -> str:
    return _command(args, kwargs, index=1)  # args[0] is the Popen being built


def _fmt_none(args: Args, kwargs: Kwargs) -> str:
    return ""


def _fmt_spawn(args: Args, kwargs: Kwargs) -> str:
    # os.spawnv(mode, file, args): the program is what the reader needs
    return short(args[1]) if len(args) > 1 else ""


def _fmt_first(args: Args, kwargs: Kwargs) -> str:
    return short(args[0]) if args else ""


def _fmt_audit_command(args: Args) -> str:
    # the C functions raise their event with the command already encoded (bytes)
    if not args:
        return ""
    command = args[0]
    if isinstance(command, bytes):
        command = os.fsdecode(command)
    return short(command)


def _fmt_audit_spawn(args: Args) -> str:
    # os.spawn audit event: (mode, path, args, env)
    return short(args[1]) if len(args) > 1 else ""


# -- the hooks ------------------------------------------------------------------------------


def _spawner(module: str, attr: str, fmt: Format = _fmt_command, optional: bool = False) -> Hook:
    return Hook(
        module,
        attr,
        f"{module}.{attr}",
        CATEGORY,
        _wording.SUBPROCESS,
        fmt=fmt,
        optional=optional,
    )


def _waiter(attr: str, options_index: int | None) -> Hook:
    return Hook(
        "os",
        attr,
        f"os.{attr}",
        CATEGORY,
        WAIT_HINT,
        would_block=None if options_index is None else _options_at(options_index),
        fmt=_fmt_none if options_index is None else None,
        optional=attr != "waitpid",
    )


_SUBPROCESS_FUNCTIONS = (
    "run",
    "call",
    "check_call",
    "check_output",
    "getoutput",
    "getstatusoutput",
)
_SPAWN_FUNCTIONS = (
    "spawnl",
    "spawnle",
    "spawnlp",
    "spawnlpe",
    "spawnv",
    "spawnve",
    "spawnvp",
    "spawnvpe",
)

HOOKS: tuple[Hook, ...] = (
    Hook(
        "subprocess",
        "Popen.__init__",
        "subprocess.Popen",
        CATEGORY,
        _wording.SUBPROCESS,
        fmt=_fmt_popen,
        method=True,
    ),
    *(_spawner("subprocess", name) for name in _SUBPROCESS_FUNCTIONS),
    Hook(
        "subprocess",
        "Popen.wait",
        "subprocess.Popen.wait",
        CATEGORY,
        _wording.SUBPROCESS,
        would_block=_child_running,
        fmt=_fmt_none,
        method=True,
    ),
    Hook(
        "subprocess",
        "Popen.communicate",
        "subprocess.Popen.communicate",
        CATEGORY,
        _wording.SUBPROCESS,
        would_block=_child_running,
        fmt=_fmt_none,
        method=True,
    ),
    _spawner("os", "system"),
    _spawner("os", "popen"),
    _spawner("os", "posix_spawn", fmt=_fmt_first, optional=True),
    _spawner("os", "posix_spawnp", fmt=_fmt_first, optional=True),
    *(_spawner("os", name, fmt=_fmt_spawn, optional=True) for name in _SPAWN_FUNCTIONS),
    _waiter("wait", None),
    _waiter("waitpid", 1),
    _waiter("wait3", 0),
    _waiter("wait4", 1),
    _waiter("waitid", 2),
)

AUDIT: tuple[AuditHook, ...] = (
    # raised before the fork/spawn, in Python or C; they stand down when a hook above is
    # already judging the call (Popen raises "subprocess.Popen" and maybe "os.posix_spawn")
    AuditHook("subprocess.Popen", "subprocess.Popen", CATEGORY, _wording.SUBPROCESS),
    AuditHook("os.system", "os.system", CATEGORY, _wording.SUBPROCESS, fmt=_fmt_audit_command),
    AuditHook(
        "os.posix_spawn", "os.posix_spawn", CATEGORY, _wording.SUBPROCESS, fmt=_fmt_audit_command
    ),
    # Windows' C os.spawn*; on POSIX they are Python functions built on fork()
    AuditHook("os.spawn", "os.spawnv", CATEGORY, _wording.SUBPROCESS, fmt=_fmt_audit_spawn),
)

FAMILY = Family(
    name="processes",
    description="starting subprocesses and waiting for them (subprocess, os.system, os.wait*)",
    hooks=HOOKS,
    audit=AUDIT,
)
