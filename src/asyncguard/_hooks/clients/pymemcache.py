"""``pymemcache``: the commands of ``pymemcache.client.base.Client`` (``PooledClient`` and
``HashClient`` use it).  Keys are shown, never values."""

from __future__ import annotations

from ..._format import short
from ..._spec import Format, Hook, WouldBlock
from . import _common as common
from ._common import Args, Kwargs, Library

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)
__asyncguard_work__ = True  # the guard judging or reporting a call (_frames)


def _fmt_key(args: Args, kwargs: Kwargs) -> str:
    """The key (or how many keys), never the value."""
    key = common.arg(args, kwargs, 1, "key")
    if key is None:
        key = kwargs.get("keys", kwargs.get("values"))
    if isinstance(key, (str, bytes)):
        shown = short(key)
    elif key is None:
        return ""
    else:
        try:
            count = len(key)
        except TypeError:
            shown = "<keys>"
        else:
            shown = f"<{count} key{'' if count == 1 else 's'}>"
    return shown + (", …" if len(args) > 2 else "")


def _many_blocks(args: Args, kwargs: Kwargs) -> bool:
    keys = common.arg(args, kwargs, 1, "keys")
    if keys is None:
        keys = kwargs.get("values")
    try:
        return len(keys) > 0
    except TypeError:
        return True


_KEYED = (
    "set", "add", "replace", "append", "prepend", "cas", "get", "gets", "delete", "incr",
    "decr", "touch",
)  # fmt: skip
_MANY = ("set_many", "set_multi", "get_many", "get_multi", "gets_many", "delete_many",
         "delete_multi")  # fmt: skip
_OTHER = ("stats", "version", "flush_all", "cache_memlimit", "raw_command", "quit",
          "shutdown")  # fmt: skip


def _hook(name: str, fmt: Format, would_block: WouldBlock | None = None) -> Hook:
    return Hook(
        "pymemcache.client.base",
        f"Client.{name}",
        f"pymemcache.Client.{name}",
        common.NETWORK,
        common.MEMCACHED,
        would_block=would_block,
        fmt=fmt,
        method=True,
        optional=True,
    )


HOOKS = (
    *(_hook(name, _fmt_key) for name in _KEYED),
    *(_hook(name, _fmt_key, _many_blocks) for name in _MANY),
    *(_hook(name, common.fmt_none) for name in _OTHER),
)

# 2.1.0 (2019): the keys name pymemcache.Client, which the package exports from 2.1.0 (before,
# only pymemcache.client.base.Client), and cache_memlimit is there; shutdown (3.5) and
# raw_command (4.0) are hooked where they exist.
LIBRARY = Library(
    name="pymemcache",
    module="pymemcache",
    distributions=("pymemcache",),
    minimum="2.1.0",
    hooks=HOOKS,
)
