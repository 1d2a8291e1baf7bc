"""psycopg2: ``connect`` and the queries, commits and server-side fetches of its objects.

``psycopg2.extensions.connection`` and ``cursor`` are C types, which are never patched.  As for
sqlite3, ``psycopg2.connect`` is wrapped to pass a ``connection_factory``: a Python subclass of
``psycopg2.extensions.connection`` (or of the user's own factory class, e.g. ``DictConnection``)
whose ``commit``/``rollback`` are guarded and whose ``cursor()`` makes guarded cursors.  That
happens for every connection opened after install, on the loop or off it (connections are
opened at start-up or by a pool and used later in async handlers).  Asynchronous connections
(``async_=True``: aiopg) are left alone: they never block.

Never flagged: ``fetch*``/``scroll`` on client-side cursors (the rows arrived with ``execute``),
``commit``/``rollback`` with no transaction open (no round trip).
Not guarded: iterating a named (server-side) cursor, large objects, two-phase commit, and
connections built by calling a connection class directly (``psycopg2.connect`` is the API).
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable
from typing import Any

from ..._spec import Format, Hook, WouldBlock
from .._dbapi import (
    cached,
    connect_with_factory,
    guarded_method,
    guarded_methods_class,
    is_guarded,
    subclass,
)
from . import _common as common
from ._common import Args, Kwargs, Library


def _excluded() -> bool:
    """Connections and cursors made while psycopg2 was hooked stand down once it is excluded."""
    return common.excluded("psycopg2")


__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)
__asyncguard_work__ = True  # the guard judging or reporting a call (_frames)

# psycopg2.extensions: STATUS_BEGIN (a transaction is open), STATUS_PREPARED (two-phase)
_STATUS_IN_TRANSACTION = (2, 5)


def _sync_connection(args: Args, kwargs: Kwargs) -> bool:
    try:
        asynchronous = bool(args[0].connection.async_)
    except Exception:
        return not _excluded()
    return not asynchronous and not _excluded()


def _server_side(args: Args, kwargs: Kwargs) -> bool:
    """fetch*/scroll read from the server only on a named (server-side) cursor."""
    try:
        named = args[0].name is not None
    except Exception:
        return False
    return named and not _excluded()


def _in_transaction(args: Args, kwargs: Kwargs) -> bool:
    """commit/rollback with no transaction open return at once (no round trip)."""
    try:
        conn = args[0]
        pending = not conn.closed and conn.status in _STATUS_IN_TRANSACTION
    except Exception:
        return False
    return pending and not _excluded()


def _fmt_query(args: Args, kwargs: Kwargs) -> str:
    query = common.arg(args, kwargs, 1, "query")
    has_params = len(args) > 2 or kwargs.get("vars") is not None
    return common.sql(query, has_params)


def _fmt_executemany(args: Args, kwargs: Kwargs) -> str:
    return common.sql(common.arg(args, kwargs, 1, "query"), True)


def _fmt_procname(args: Args, kwargs: Kwargs) -> str:
    name = common.arg(args, kwargs, 1, "procname")
    has_params = len(args) > 2 or kwargs.get("parameters") is not None
    return common.sql(name, has_params)


def _fmt_copy(args: Args, kwargs: Kwargs) -> str:
    # copy_from(file, table, ...), copy_to(file, table, ...): the table, not the file
    table = common.arg(args, kwargs, 2, "table")
    return "<file>, " + common.sql(table, False)


def _fmt_copy_expert(args: Args, kwargs: Kwargs) -> str:
    return common.sql(common.arg(args, kwargs, 1, "sql"), False) + ", <file>"


def _fmt_size(args: Args, kwargs: Kwargs) -> str:
    size = common.arg(args, kwargs, 1, "size")
    return "" if size is None else repr(size)


def _fmt_connect(args: Args, kwargs: Kwargs) -> str:
    return common.conninfo(common.arg(args, kwargs, 0, "dsn"), kwargs)


def _hook(cls: str, name: str, would_block: WouldBlock, fmt: Format) -> Hook:
    return Hook(
        "psycopg2.extensions",
        f"{cls}.{name}",
        f"psycopg2.extensions.{cls}.{name}",
        common.DATABASE,
        common.POSTGRES,
        would_block=would_block,
        fmt=fmt,
        method=True,
    )


CONNECTION_HOOKS: dict[str, Hook] = {
    "commit": _hook("connection", "commit", _in_transaction, common.fmt_none),
    "rollback": _hook("connection", "rollback", _in_transaction, common.fmt_none),
}

CURSOR_HOOKS: dict[str, Hook] = {
    "execute": _hook("cursor", "execute", _sync_connection, _fmt_query),
    "executemany": _hook("cursor", "executemany", _sync_connection, _fmt_executemany),
    "callproc": _hook("cursor", "callproc", _sync_connection, _fmt_procname),
    "copy_from": _hook("cursor", "copy_from", _sync_connection, _fmt_copy),
    "copy_to": _hook("cursor", "copy_to", _sync_connection, _fmt_copy),
    "copy_expert": _hook("cursor", "copy_expert", _sync_connection, _fmt_copy_expert),
    "fetchone": _hook("cursor", "fetchone", _server_side, common.fmt_none),
    "fetchmany": _hook("cursor", "fetchmany", _server_side, _fmt_size),
    "fetchall": _hook("cursor", "fetchall", _server_side, common.fmt_none),
    "scroll": _hook("cursor", "scroll", _server_side, common.fmt_none),
}


def _extensions() -> Any:
    """``psycopg2.extensions``, imported by then: only called once ``psycopg2`` is."""
    return importlib.import_module("psycopg2.extensions")


def guarded_cursor_class(base: type) -> type:
    """A guarded subclass of the cursor class ``base`` (cached)."""
    return guarded_methods_class(base, CURSOR_HOOKS)


_CURSOR_PARAMETERS = ("name", "cursor_factory", "withhold", "scrollable")


def _adopt(cursor: Any, cursor_type: type) -> Any:
    """A cursor made by a connection class's own ``cursor()`` (``DictConnection``) becomes an
    instance of the guarded subclass of its (Python) class."""
    cls = type(cursor)
    if not is_guarded(cls) and cls is not cursor_type and issubclass(cls, cursor_type):
        guarded = guarded_cursor_class(cls)
        if guarded is not cls:
            with contextlib.suppress(TypeError):  # an exotic layout: left unguarded
                cursor.__class__ = guarded
    return cursor


def _cursor_method(base: type) -> Callable[..., Any]:
    extensions = _extensions()
    connection_type = extensions.connection
    cursor_type = extensions.cursor
    original = base.cursor  # type: ignore[attr-defined]
    builtin = original is connection_type.cursor

    def cursor(self: Any, *args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = __traceback_hide__ = True
        if not builtin:
            return _adopt(original(self, *args, **kwargs), cursor_type)
        if args and len(args) <= len(_CURSOR_PARAMETERS):
            kwargs = {**dict(zip(_CURSOR_PARAMETERS, args, strict=False)), **kwargs}
            args = ()
        factory = kwargs.get("cursor_factory") or self.cursor_factory or cursor_type
        if isinstance(factory, type) and issubclass(factory, cursor_type):
            kwargs["cursor_factory"] = guarded_cursor_class(factory)
        # a factory that is not a cursor class (a function) is the user's business
        return original(self, *args, **kwargs)

    for name in ("__name__", "__qualname__", "__doc__"):
        setattr(cursor, name, getattr(original, name, None))
    cursor.__wrapped__ = original  # type: ignore[attr-defined]
    return cursor


def guarded_connection_class(base: type) -> type:
    """A guarded subclass of the connection class ``base`` (cached)."""
    if is_guarded(base):
        return base

    def build(base: type) -> type:
        namespace: dict[str, Any] = {
            name: guarded_method(hook, getattr(base, name))
            for name, hook in CONNECTION_HOOKS.items()
        }
        namespace["cursor"] = _cursor_method(base)
        return subclass(base, namespace)

    return cached(base, build)


# connect(dsn=None, connection_factory=None, cursor_factory=None, **kwargs)
_FACTORY_INDEX = 1


def _asynchronous(kwargs: Kwargs) -> bool:
    return bool(kwargs.get("async_") or kwargs.get("async"))


def _connect_blocks(args: Args, kwargs: Kwargs) -> bool:
    return not _asynchronous(kwargs) and not _excluded()


def _guard_factory(connection_type: type, args: Args, kwargs: Kwargs) -> tuple[Args, Kwargs]:
    if _asynchronous(kwargs):
        return args, kwargs  # aiopg & co: never blocks, left as it is
    if len(args) > _FACTORY_INDEX:
        factory = args[_FACTORY_INDEX]
    else:
        factory = kwargs.get("connection_factory")
    if factory is None:
        factory = connection_type
    if not (isinstance(factory, type) and issubclass(factory, connection_type)):
        return args, kwargs  # a factory function: it builds what it likes
    guarded = guarded_connection_class(factory)
    if len(args) > _FACTORY_INDEX:
        return (*args[:_FACTORY_INDEX], guarded, *args[_FACTORY_INDEX + 1 :]), kwargs
    return args, {**kwargs, "connection_factory": guarded}


def connect_wrapper(hook: Hook, original: Callable[..., Any]) -> Callable[..., Any]:
    """Built by the patcher once ``psycopg2`` is imported."""
    return connect_with_factory(hook, original, _guard_factory, _extensions().connection)


CONNECT = Hook(
    "psycopg2",
    "connect",
    "psycopg2.connect",
    common.DATABASE,
    common.POSTGRES,
    would_block=_connect_blocks,
    fmt=_fmt_connect,
    factory=connect_wrapper,
    sensitive=True,  # its connection string and keywords hold the password
)

EXTRA: tuple[tuple[str, str, str], ...] = tuple(
    (hook.key, hook.category, hook.hint)
    for hook in (*CONNECTION_HOOKS.values(), *CURSOR_HOOKS.values())
)

# 2.7 (2017): the cursor predicate reads connection.async_, which arrived in 2.7 (with the
# async_=True spelling of connect, as ``async`` became a keyword in Python 3.7); with an older
# psycopg2 an asynchronous (aiopg) connection's queries would be flagged.
LIBRARY = Library(
    name="psycopg2",
    module="psycopg2",
    distributions=("psycopg2", "psycopg2-binary"),
    minimum="2.7",
    hooks=(CONNECT,),
    extra=EXTRA,
)
