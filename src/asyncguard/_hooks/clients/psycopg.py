"""``psycopg`` (3): the sync ``Connection``/``Cursor``/``ServerCursor`` (Python classes,
patched) and ``psycopg.connect``.  ``psycopg.AsyncConnection`` is a separate class tree, never
touched.  Never flagged: fetches of a client-side cursor outside pipeline mode (the rows came
with ``execute``), ``commit``/``rollback`` with no transaction open."""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

from ..._format import short
from ..._judge import on_loop_call
from ..._loop import get_running_loop
from ..._spec import Format, Hook, WouldBlock, copy_metadata
from . import _common as common
from ._common import Args, Kwargs, Library

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)
__asyncguard_work__ = True  # the guard judging or reporting a call (_frames)

# pq.TransactionStatus: ACTIVE, INTRANS, INERROR (IDLE = 0 and UNKNOWN = 4 need no round trip)
_PQ_IN_TRANSACTION = (1, 2, 3)


def _in_transaction(args: Args, kwargs: Kwargs) -> bool:
    try:
        status = args[0].pgconn.transaction_status
    except Exception:
        return True
    return status in _PQ_IN_TRANSACTION


def _pipeline_fetch(args: Args, kwargs: Kwargs) -> bool:
    """A client-side cursor's rows arrived with ``execute``; only in pipeline mode does a
    fetch wait for the server."""
    try:
        return getattr(args[0].connection, "_pipeline", None) is not None
    except Exception:
        return False


def _fmt_query(args: Args, kwargs: Kwargs) -> str:
    query = common.arg(args, kwargs, 1, "query")
    has_params = len(args) > 2 or kwargs.get("params") is not None
    return common.sql(query, has_params)


def _fmt_many(args: Args, kwargs: Kwargs) -> str:
    return common.sql(common.arg(args, kwargs, 1, "query"), True)


def _fmt_statement(args: Args, kwargs: Kwargs) -> str:
    return common.sql(common.arg(args, kwargs, 1, "statement"), len(args) > 2 or "params" in kwargs)


def _fmt_size(args: Args, kwargs: Kwargs) -> str:
    size = common.arg(args, kwargs, 1, "size")
    return "" if size is None else short(size)


def _fmt_connect(args: Args, kwargs: Kwargs) -> str:
    return common.conninfo(common.arg(args, kwargs, 0, "conninfo"), kwargs)


def classmethod_wrapper(hook: Hook, original: Any) -> Any:
    """Wrap a classmethod (``psycopg.Connection.connect``): ``original`` is the bound method
    the patcher read from the class; the class dictionary gets a classmethod again, so that
    subclasses still receive their own ``cls``."""

    func: Callable[..., Any] = original.__func__
    running_loop = get_running_loop

    def wrapper(cls: Any, /, *args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = __traceback_hide__ = True
        if running_loop() is None:
            return func(cls, *args, **kwargs)
        return on_loop_call(hook, types.MethodType(func, cls), args, kwargs)

    copy_metadata(wrapper, func, hook)
    return classmethod(wrapper)


def _hook(
    attr: str,
    fmt: Format,
    would_block: WouldBlock | None = None,
    *,
    key: str | None = None,
    method: bool = True,
    factory: Any = None,
    sensitive: bool = False,
) -> Hook:
    return Hook(
        "psycopg",
        attr,
        key or f"psycopg.{attr}",
        common.DATABASE,
        common.POSTGRES,
        would_block=would_block,
        fmt=fmt,
        method=method,
        factory=factory,
        sensitive=sensitive,
    )


HOOKS = (
    # = Connection.connect, bound; its connection string and keywords hold the password
    _hook("connect", _fmt_connect, method=False, sensitive=True),
    _hook("Connection.connect", _fmt_connect, method=False, factory=classmethod_wrapper),
    _hook("Connection.execute", _fmt_query),
    _hook("Connection.commit", common.fmt_none, _in_transaction),
    _hook("Connection.rollback", common.fmt_none, _in_transaction),
    # ``with conn.transaction():`` sends BEGIN (or SAVEPOINT) on entering
    _hook("Transaction.__enter__", common.fmt_none, key="psycopg.Connection.transaction"),
    _hook("Cursor.execute", _fmt_query),
    _hook("Cursor.executemany", _fmt_many),
    _hook("Cursor.copy", _fmt_statement),  # reported when called (the `with` line)
    _hook("Cursor.stream", _fmt_query),  # reported when called
    _hook("Cursor.fetchone", common.fmt_none, _pipeline_fetch),
    _hook("Cursor.fetchmany", _fmt_size, _pipeline_fetch),
    _hook("Cursor.fetchall", common.fmt_none, _pipeline_fetch),
    _hook("ServerCursor.execute", _fmt_query),
    _hook("ServerCursor.fetchone", common.fmt_none),
    _hook("ServerCursor.fetchmany", _fmt_size),
    _hook("ServerCursor.fetchall", common.fmt_none),
    _hook("ServerCursor.scroll", common.fmt_none),
)

# 3.0 (2021), the first psycopg 3 release: every class and method hooked is there; the
# pipeline-mode predicate reads Connection._pipeline (3.1) with a default.
LIBRARY = Library(
    name="psycopg",
    module="psycopg",
    distributions=("psycopg",),
    minimum="3.0",
    hooks=HOOKS,
)
