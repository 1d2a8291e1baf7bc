"""Hints, predicates and message arguments shared by the third-party client hooks."""

from __future__ import annotations

import re
from typing import Any

from .. import _hints
from .._format import short
from .._hints import THREAD
from .._judge import current

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)
__asyncguard_work__ = True  # the guard judging or reporting a call (_frames)

Args = tuple[Any, ...]
Kwargs = dict[str, Any]

NETWORK = "network"
DATABASE = "database"

HTTP = _hints.HTTP
REDIS = "use `redis.asyncio.Redis` (`await r.get(...)`), " + THREAD
POSTGRES = "use `psycopg.AsyncConnection` (`await psycopg.AsyncConnection.connect(...)`), " + THREAD
MEMCACHED = (
    "use an async memcached client (aiomcache, or Django's `await cache.aget(...)`), " + THREAD
)
SMTP = "use `aiosmtplib` (`await aiosmtplib.send(message, ...)`), " + THREAD


def excluded() -> bool:
    """Objects made while the family was installed (psycopg2 connections and cursors) outlive
    ``install(exclude=["clients"])``: they stand down then (slow path only)."""

    guard = current()
    return guard is None or "clients" in guard.exclude


def fmt_none(args: Args, kwargs: Kwargs) -> str:
    return ""


def url(value: object) -> str:
    """A URL (str, bytes, ``httpx.URL``...) without credentials, query string or fragment."""
    if isinstance(value, bytes):
        text = value.decode("latin-1")
    elif isinstance(value, str):
        text = value
    else:
        try:
            text = str(value)
        except Exception:
            return f"<{type(value).__name__}>"
    for mark in ("?", "#"):
        head, found, _ = text.partition(mark)
        if found:
            text = head + "?…"
            break
    return short(text)


def arg(args: Args, kwargs: Kwargs, index: int, name: str) -> Any:
    """Argument ``index`` (positional, ``self`` counted) or keyword ``name``; ``None`` if absent."""
    if len(args) > index:
        return args[index]
    return kwargs.get(name)


_SQL_STRING = re.compile(r"'(?:[^']|'')*'")


def sql(query: object, has_params: bool) -> str:
    """The statement, never its parameters nor its string literals (they are the data)."""
    if isinstance(query, bytes):
        query = query.decode("utf-8", "replace")
    if isinstance(query, str):
        text = short(_SQL_STRING.sub("'…'", query))
    elif query is None:
        return ""
    else:  # psycopg.sql.Composed / SQL, t-strings: their repr holds the literals
        text = f"<{type(query).__name__}>"
    return text + ", …" if has_params else text


_SHOWN_PARAMS = ("host", "hostaddr", "port", "dbname", "database", "user")


def conninfo(dsn: object, kwargs: Kwargs) -> str:
    """A libpq connection string or URI and its keyword parameters, without passwords (the
    string's are scrubbed by ``short``; keyword parameters are shown only when harmless)."""
    shown: list[str] = []
    if isinstance(dsn, str) and dsn:
        shown.append(short(dsn))
    elif dsn is not None and not isinstance(dsn, str):
        shown.append(f"<{type(dsn).__name__}>")
    hidden = False
    for name, value in kwargs.items():
        if name in _SHOWN_PARAMS:
            shown.append(f"{name}={short(value)}")
        elif name not in ("connection_factory", "cursor_factory", "row_factory", "context"):
            hidden = True
    if hidden:
        shown.append("…")
    return ", ".join(shown)
