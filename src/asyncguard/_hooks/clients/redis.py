"""``redis``: ``Redis.execute_command`` (every command method goes through it), pipelines
(``execute``, ``WATCH`` and the commands sent while watching, the ``UNWATCH`` of ``reset``),
pub/sub commands and a waiting ``get_message``.  ``redis.asyncio`` is a separate class tree,
never touched."""

from __future__ import annotations

from ..._format import short
from ..._spec import Format, Hook, WouldBlock
from . import _common as common
from ._common import Args, Kwargs, Library

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)
__asyncguard_work__ = True  # the guard judging or reporting a call (_frames)

# commands whose arguments are credentials or configuration: only their name is shown
_SECRET = frozenset({"AUTH", "HELLO", "ACL", "CONFIG", "MIGRATE"})


def _fmt_command(args: Args, kwargs: Kwargs) -> str:
    """The command and its first key, never the values: ``'SET', 'user:1', …``."""
    if len(args) < 2:
        return ""
    name = args[1]
    text = name.decode("latin-1") if isinstance(name, bytes) else str(name)
    if text.split(" ", 1)[0].upper() in _SECRET:
        return short(name) + (", …" if len(args) > 2 else "")
    shown = [short(name), *(short(value) for value in args[2:3])]
    if len(args) > 3:
        shown.append("…")
    return ", ".join(shown)


def _pipeline_has_work(args: Args, kwargs: Kwargs) -> bool:
    """``execute()`` on an empty pipeline that watches nothing returns ``[]`` at once."""
    try:
        pipe = args[0]
        return bool(len(pipe) or pipe.watching)
    except Exception:
        return True


def _pipeline_unwatches(args: Args, kwargs: Kwargs) -> bool:
    """``reset()`` (also ``close()`` and leaving ``with``) sends UNWATCH only when watching."""
    try:
        pipe = args[0]
        return bool(pipe.watching and pipe.connection)
    except Exception:
        return True


def _get_message_waits(args: Args, kwargs: Kwargs) -> bool:
    """``get_message()`` (timeout 0.0) only polls; ``timeout=None`` or > 0 waits."""
    timeout = common.arg(args, kwargs, 2, "timeout")
    if "timeout" not in kwargs and len(args) < 3:
        return False  # the default, 0.0
    return timeout is None or (isinstance(timeout, (int, float)) and timeout > 0)


def _fmt_timeout(args: Args, kwargs: Kwargs) -> str:
    timeout = common.arg(args, kwargs, 2, "timeout")
    return f"timeout={short(timeout)}"


def _hook(attr: str, key: str, fmt: Format, would_block: WouldBlock | None = None) -> Hook:
    return Hook(
        "redis.client",
        attr,
        key,
        common.NETWORK,
        common.REDIS,
        would_block=would_block,
        fmt=fmt,
        method=True,
    )


HOOKS = (
    _hook("Redis.execute_command", "redis.Redis.execute_command", _fmt_command),
    _hook(
        "Pipeline.execute",
        "redis.client.Pipeline.execute",
        common.fmt_none,
        would_block=_pipeline_has_work,
    ),
    # WATCH, and commands issued while watching, run at once
    _hook(
        "Pipeline.immediate_execute_command",
        "redis.client.Pipeline.immediate_execute_command",
        _fmt_command,
    ),
    _hook(
        "Pipeline.reset",
        "redis.client.Pipeline.reset",
        common.fmt_none,
        would_block=_pipeline_unwatches,
    ),
    _hook("PubSub.execute_command", "redis.client.PubSub.execute_command", _fmt_command),
    _hook(
        "PubSub.get_message",
        "redis.client.PubSub.get_message",
        _fmt_timeout,
        would_block=_get_message_waits,
    ),
)

# 4.2.0 (2022): the hint sends users to redis.asyncio, which first shipped in 4.2.0 (before it
# the async client was the separate aioredis package); the hooked methods are older.
LIBRARY = Library(
    name="redis",
    module="redis",
    distributions=("redis",),
    minimum="4.2.0",
    hooks=HOOKS,
)
