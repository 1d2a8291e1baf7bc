"""``sqlite3``: ``connect`` and the queries, commits and fetches of its connections and cursors.

``sqlite3.Connection`` and ``sqlite3.Cursor`` are C types, which are never patched.  Instead
``sqlite3.connect`` is wrapped to pass a *factory*: a Python subclass of ``sqlite3.Connection``
(or of the user's own ``factory=`` class) whose methods are guarded and whose ``cursor()``
makes guarded cursors.  That happens for every connection opened after install, on the loop or
off it, because connections are usually opened at start-up and used later in async handlers.
The objects are still ``sqlite3.Connection``/``Cursor`` instances and behave identically; only
``type(conn) is sqlite3.Connection`` no longer holds.

Not guarded: row iteration (``for row in cursor``: the query was already reported at
``execute``, and a per-row check would tax every fetch), ``close()``, ``Blob`` I/O and
connections built by calling ``sqlite3.Connection(...)`` directly (the ``sqlite3.connect``
audit event still reports the connect itself).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from .. import _wording
from .._format import short
from .._judge import current, on_loop_call
from .._loop import get_running_loop
from .._spec import AuditHook, Family, Format, Hook, WouldBlock, copy_metadata
from ._dbapi import (
    cached,
    connect_with_factory,
    guarded_method,
    guarded_methods_class,
    is_guarded,
    subclass,
)
from ._sql import fmt_sql

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)
__asyncguard_work__ = True  # the guard judging or reporting a call (_frames)

# sqlite3 itself is imported only when the application imports it: the hook on
# ``sqlite3.connect`` is applied by the patcher then (a post-import hook), and everything
# below that needs the module runs after that.

CATEGORY = "database"

Args = tuple[Any, ...]
Kwargs = dict[str, Any]


# -- predicates and message arguments ----------------------------------------------------------


def _excluded() -> bool:
    """Connections made while the family was installed outlive ``install(exclude=["database"])``:
    they stand down then (slow path only)."""

    guard = current()
    return guard is None or "database" in guard.exclude


def _always(args: Args, kwargs: Kwargs) -> bool:
    return not _excluded()


def _in_transaction(args: Args, kwargs: Kwargs) -> bool:
    """commit/rollback outside a transaction do nothing (no I/O)."""
    try:
        pending = bool(args[0].in_transaction)
    except Exception:  # closed, or another thread's connection: the original says so itself
        return False
    return pending and not _excluded()


def _has_rows(args: Args, kwargs: Kwargs) -> bool:
    """fetch* on a cursor without a result set (no query yet, INSERT/UPDATE...) reads nothing."""
    try:
        rows = args[0].description is not None
    except Exception:
        return False
    return rows and not _excluded()


def _fmt_none(args: Args, kwargs: Kwargs) -> str:
    return ""


def _fmt_audit_database(args: Args) -> str:
    return _database(args[0]) if args else ""


def _fmt_size(args: Args, kwargs: Kwargs) -> str:
    if len(args) > 1:
        return short(args[1])
    return short(kwargs["size"]) if "size" in kwargs else ""


def _database(database: Any) -> str:
    if isinstance(database, bytes):  # 3.10 raises the audit event with the encoded path
        database = os.fsdecode(database)
    if isinstance(database, str) and database.startswith("file:") and "?" in database:
        database = database.split("?", 1)[0] + "?…"  # URI parameters may hold keys
    return short(database)


def _fmt_database(args: Args, kwargs: Kwargs) -> str:
    if args:
        return _database(args[0])
    return _database(kwargs["database"]) if "database" in kwargs else ""


# -- the hooks the guarded classes report through -------------------------------------------------


def _hook(cls: str, name: str, would_block: WouldBlock, fmt: Format) -> Hook:
    return Hook(
        "sqlite3",
        f"{cls}.{name}",
        f"sqlite3.{cls}.{name}",
        CATEGORY,
        _wording.DATABASE,
        would_block=would_block,
        fmt=fmt,
        method=True,
    )


CONNECTION_HOOKS: dict[str, Hook] = {
    "execute": _hook("Connection", "execute", _always, fmt_sql),
    "executemany": _hook("Connection", "executemany", _always, fmt_sql),
    "executescript": _hook("Connection", "executescript", _always, fmt_sql),
    "commit": _hook("Connection", "commit", _in_transaction, _fmt_none),
    "rollback": _hook("Connection", "rollback", _in_transaction, _fmt_none),
    "backup": _hook("Connection", "backup", _always, _fmt_none),
}
# ``with conn:`` commits (or rolls back) in C without looking ``commit`` up (3.11+)
_EXIT_COMMIT = CONNECTION_HOOKS["commit"]
_EXIT_ROLLBACK = CONNECTION_HOOKS["rollback"]

CURSOR_HOOKS: dict[str, Hook] = {
    "execute": _hook("Cursor", "execute", _always, fmt_sql),
    "executemany": _hook("Cursor", "executemany", _always, fmt_sql),
    "executescript": _hook("Cursor", "executescript", _always, fmt_sql),
    "fetchone": _hook("Cursor", "fetchone", _has_rows, _fmt_none),
    "fetchmany": _hook("Cursor", "fetchmany", _has_rows, _fmt_size),
    "fetchall": _hook("Cursor", "fetchall", _has_rows, _fmt_none),
}


# -- guarded methods -----------------------------------------------------------------------------


def _exit_method(original: Callable[..., Any]) -> Callable[..., Any]:

    running_loop = get_running_loop
    judged = original

    def __exit__(self: Any, *args: Any) -> Any:  # noqa: N807 - the name it replaces
        __tracebackhide__ = __traceback_hide__ = True
        if running_loop() is None:
            return original(self, *args)
        hook = _EXIT_COMMIT if not args or args[0] is None else _EXIT_ROLLBACK
        return on_loop_call(hook, judged, (self, *args), {})

    copy_metadata(__exit__, original, _EXIT_COMMIT)
    return __exit__


def _via_cursor(
    conn_method: Callable[..., Any], cursor_method: Callable[..., Any]
) -> Callable[..., Any]:
    """``conn.execute(...)`` as the C code does it -- a new cursor, then its ``execute`` -- but
    with the cursor from ``self.cursor()``, so the cursor returned is a guarded one (3.11+
    makes a plain ``sqlite3.Cursor`` in C; 3.10 already calls ``self.cursor()``)."""

    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = __traceback_hide__ = True
        cursor = self.cursor()
        cursor_method(cursor, *args, **kwargs)
        return cursor

    call.__wrapped__ = conn_method  # type: ignore[attr-defined]
    return call


def guarded_cursor_class(base: type) -> type:
    """A guarded subclass of the cursor class ``base`` (cached)."""
    return guarded_methods_class(base, CURSOR_HOOKS)


def _copy_names(wrapper: Any, original: Any) -> None:
    for name in ("__name__", "__qualname__", "__doc__"):
        setattr(wrapper, name, getattr(original, name, None))
    wrapper.__wrapped__ = original


def _cursor_method(cursor_type: type, original: Callable[..., Any]) -> Callable[..., Any]:
    default = guarded_cursor_class(cursor_type)

    def cursor(self: Any, *args: Any, **kwargs: Any) -> Any:
        factory = args[0] if args else kwargs.get("factory")
        if factory is None:
            factory = default
        elif isinstance(factory, type) and issubclass(factory, cursor_type):
            factory = guarded_cursor_class(factory)
        # a factory that is not a Cursor class (a function) is the user's business
        return original(self, factory)

    _copy_names(cursor, original)
    return cursor


def guarded_connection_class(base: type) -> type:
    """A guarded subclass of the connection class ``base`` (cached)."""
    if is_guarded(base):
        return base

    def build(base: type) -> type:
        import sqlite3

        namespace: dict[str, Any] = {}
        own_cursor = getattr(base, "cursor") is sqlite3.Connection.cursor  # noqa: B009
        for name, hook in CONNECTION_HOOKS.items():
            original = getattr(base, name)
            if (
                own_cursor
                and name.startswith("execute")
                and original is getattr(sqlite3.Connection, name)
            ):
                original = _via_cursor(original, getattr(sqlite3.Cursor, name))
            namespace[name] = guarded_method(hook, original)
        namespace["__exit__"] = _exit_method(getattr(base, "__exit__"))  # noqa: B009
        if own_cursor:
            # a subclass with its own cursor() keeps it (and its own default factory)
            namespace["cursor"] = _cursor_method(sqlite3.Cursor, sqlite3.Connection.cursor)
        return subclass(base, namespace)

    return cached(base, build)


# -- sqlite3.connect ------------------------------------------------------------------------------

# connect(database, timeout, detect_types, isolation_level, check_same_thread, factory, ...)
_FACTORY_INDEX = 5


def _guard_factory(connection_type: type, args: Args, kwargs: Kwargs) -> tuple[Args, Kwargs]:
    """``args, kwargs`` of ``connect`` with the factory replaced by its guarded subclass."""
    if len(args) > _FACTORY_INDEX:
        factory = args[_FACTORY_INDEX]
    else:
        factory = kwargs.get("factory", connection_type)
    if not (isinstance(factory, type) and issubclass(factory, connection_type)):
        return args, kwargs  # a factory function: it builds what it likes
    guarded = guarded_connection_class(factory)
    if len(args) > _FACTORY_INDEX:
        return (*args[:_FACTORY_INDEX], guarded, *args[_FACTORY_INDEX + 1 :]), kwargs
    return args, {**kwargs, "factory": guarded}


def _connect_wrapper(hook: Hook, original: Callable[..., Any]) -> Callable[..., Any]:
    """Built by the patcher once ``sqlite3`` is imported."""
    import sqlite3

    return connect_with_factory(hook, original, _guard_factory, sqlite3.Connection)


CONNECT = Hook(
    "sqlite3",
    "connect",
    "sqlite3.connect",
    CATEGORY,
    _wording.DATABASE,
    fmt=_fmt_database,
    factory=_connect_wrapper,
)

FAMILY = Family(
    name="database",
    # sqlite3 objects refuse other threads (check_same_thread): never offloaded
    routes=(("sqlite3.*", "inline"),),
    description="sqlite3: connect, and execute/commit/fetch on its connections and cursors",
    hooks=(CONNECT,),
    audit=(
        AuditHook(
            "sqlite3.connect",
            "sqlite3.connect",
            CATEGORY,
            _wording.DATABASE,
            fmt=_fmt_audit_database,
        ),
    ),
    extra=tuple(
        (hook.key, CATEGORY, _wording.DATABASE)
        for hook in (*CONNECTION_HOOKS.values(), *CURSOR_HOOKS.values())
    ),
)
