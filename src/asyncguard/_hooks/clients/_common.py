"""What the client libraries' modules share: ``Library`` (one library's declaration), hints,
predicates and message arguments."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
from dataclasses import dataclass
from typing import Any

from ... import _wording
from ..._allowed import ALL, allowed_var
from ..._format import short
from ..._judge import current
from ..._spec import Format, Hook, WouldBlock, exclude_name
from ..._wording import THREAD

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)
__asyncguard_work__ = True  # the guard judging or reporting a call (_frames)

Args = tuple[Any, ...]
Kwargs = dict[str, Any]

NETWORK = "network"
DATABASE = "database"

HTTP = _wording.HTTP
REDIS = "use `redis.asyncio.Redis` (`await r.get(...)`), " + THREAD
POSTGRES = "use `psycopg.AsyncConnection` (`await psycopg.AsyncConnection.connect(...)`), " + THREAD
MEMCACHED = (
    "use an async memcached client (aiomcache, or Django's `await cache.aget(...)`), " + THREAD
)
SMTP = "use `aiosmtplib` (`await aiosmtplib.send(message, ...)`), " + THREAD


FAMILY = "clients"

logger = logging.getLogger("asyncguard")


@dataclass(frozen=True, eq=False)
class Library:
    """One client library, declared by its module.

    ``name`` is what ``exclude`` names (``"clients.<name>"``) and messages say, ``module`` the
    one the application imports, ``hooks`` its hooks, ``extra`` the keys its special wrappers
    report (``(key, category, hint)``).  ``minimum`` is the oldest version the hooks were
    written against (the module says why); an older one, as ``distributions`` (the first one
    installed) tell, is not hooked.  No ``minimum`` (the standard library): always hooked.
    """

    name: str
    module: str
    hooks: tuple[Hook, ...]
    distributions: tuple[str, ...] = ()
    minimum: str | None = None
    extra: tuple[tuple[str, str, str], ...] = ()

    def family_hooks(self) -> tuple[Hook, ...]:
        """The hooks as the family holds them: marked with the library, gated by its version
        (``check``), and optional (a version without one of the attributes loses that hook
        only)."""
        gate = self.check if self.minimum is not None else None
        return tuple(
            dataclasses.replace(hook, optional=True, library=self.name, gate=gate)
            for hook in self.hooks
        )

    def reason(self) -> str | None:
        """Why the hooks must not be applied (the installed version is older than ``minimum``),
        or ``None``: hooked, also when the version is unknown (no package metadata)."""
        if self.minimum is None:
            return None
        version = installed_version(self)
        found = None if version is None else release(version)
        if found is None or found >= (release(self.minimum) or ()):
            return None
        return (
            f"{self.name} {version} is older than {self.minimum}, the oldest version "
            "asyncguard's hooks were written for"
        )

    def check(self) -> str | None:
        """The gate of every hook of the library, asked when its module is imported (at install
        if it already is), never at asyncguard's import: the reason not to hook it, logged once
        (INFO, logger ``asyncguard``).  Reading the metadata is the guard's own file I/O: it
        runs with blocking allowed, and a failure means hooked."""
        token = allowed_var.set(ALL)
        try:
            try:
                reason = self.reason()
            except Exception:
                return None
            if reason is not None and self.name not in _logged and _logging_on():
                _logged.add(self.name)
                with contextlib.suppress(Exception):  # a broken logging setup
                    logger.info("%s: its calls are not hooked", reason)
            return reason
        finally:
            allowed_var.reset(token)


_logged: set[str] = set()  # libraries whose reason was logged (once per process)


def _current_guard() -> Any:
    return current()


def _logging_on() -> bool:
    guard = _current_guard()
    return guard is None or bool(guard.log)


def installed_version(library: Library) -> str | None:
    """The installed version of ``library`` (its first distribution found), or ``None``."""
    import importlib.metadata  # only once a library is imported: it costs milliseconds

    for distribution in library.distributions:
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


_RELEASE = re.compile(r"\d+(?:\.\d+)*")


def release(version: str) -> tuple[int, ...] | None:
    """``"4.2.0rc1"`` -> ``(4, 2)``: the release numbers, trailing zeros dropped (so that
    ``"4.2"`` and ``"4.2.0"`` compare equal); ``None`` for a version that does not start so."""
    match = _RELEASE.match(version)
    if match is None:
        return None
    parts = [int(part) for part in match.group().split(".")]
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def excluded(library: str) -> bool:
    """Objects made while the library was hooked (psycopg2 connections and cursors) outlive
    ``install(exclude=["clients"])`` or ``exclude=["clients.psycopg2"]``: they stand down then
    (slow path only)."""
    guard = _current_guard()
    return (
        guard is None or FAMILY in guard.exclude or exclude_name(FAMILY, library) in guard.exclude
    )


def fmt_none(args: Args, kwargs: Kwargs) -> str:
    return ""


# -- HTTP clients (requests, urllib3, httpx) ------------------------------------------------------

HTTP_VERBS = ("get", "options", "head", "post", "put", "patch", "delete")


def fmt_url(args: Args, kwargs: Kwargs) -> str:
    return url(arg(args, kwargs, 0, "url"))


def fmt_method_url(args: Args, kwargs: Kwargs) -> str:
    method = arg(args, kwargs, 0, "method")
    return f"{short(method)}, {url(arg(args, kwargs, 1, 'url'))}"


def fmt_self_method_url(args: Args, kwargs: Kwargs) -> str:
    return fmt_method_url(args[1:], kwargs)


def http_hook(
    module: str,
    attr: str,
    key: str,
    fmt: Format,
    *,
    method: bool = False,
    would_block: WouldBlock | None = None,
    optional: bool = False,
) -> Hook:
    return Hook(
        module,
        attr,
        key,
        NETWORK,
        HTTP,
        would_block=would_block,
        fmt=fmt,
        method=method,
        optional=optional,
    )


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
