"""Third-party synchronous clients, hooked when the application imports them.

Every hook names a module that asyncguard itself never imports: the patcher applies it with a
post-import hook when the application imports ``requests``, ``redis``, ``psycopg``...

- HTTP: ``requests`` (the module helpers, ``Session.request``/``send``), ``urllib3``
  (``PoolManager``/``HTTPConnectionPool`` ``request``/``urlopen``, ``urllib3.request``),
  ``httpx`` (``Client.send``, which every ``Client`` method goes through, and the module
  helpers).  ``httpx.AsyncClient`` is never touched; an ``httpx.Client`` whose transport is a
  ``MockTransport`` or ``WSGITransport`` does no network I/O and is not flagged.
- Redis: ``redis.Redis.execute_command`` (every command method goes through it), pipelines,
  pub/sub commands and waiting ``get_message``.  ``redis.asyncio`` is a separate class tree.
- PostgreSQL: ``psycopg2`` (C types: guarded subclasses passed as factories, see
  ``_clients_psycopg2``) and ``psycopg`` 3's sync ``Connection``/``Cursor``/``ServerCursor``
  (Python classes, patched).  ``psycopg.AsyncConnection`` is a separate class tree.
- memcached: ``pymemcache``'s ``Client`` commands (``PooledClient`` and ``HashClient`` use it).
- SMTP: ``smtplib.SMTP``'s commands (``sendmail``, ``send_message``, ``login``, ``starttls``,
  ``quit``...) on a connected client (connecting, ``smtplib.SMTP(host)``, is the network
  family's).

A call reports at the outermost hook: ``requests.get`` -> ``Session.request`` -> urllib3 ->
socket raises at ``requests.get`` in raise mode, and in warn mode the inner calls run inside the
reported one (they are covered by it) -- one report per call.
"""

from __future__ import annotations

import dataclasses
import sys
import types
from collections.abc import Callable
from typing import Any

from .._format import short
from .._judge import on_loop_call
from .._loop import get_running_loop
from .._spec import Family, Format, Hook, WouldBlock, copy_metadata
from . import _clients_common as common
from . import _clients_psycopg2
from ._clients_common import Args, Kwargs

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)
__asyncguard_work__ = True  # the guard judging or reporting a call (_frames)

# -- HTTP -------------------------------------------------------------------------------------

_HTTP_VERBS = ("get", "options", "head", "post", "put", "patch", "delete")


def _fmt_url(args: Args, kwargs: Kwargs) -> str:
    return common.url(common.arg(args, kwargs, 0, "url"))


def _fmt_method_url(args: Args, kwargs: Kwargs) -> str:
    method = common.arg(args, kwargs, 0, "method")
    return f"{short(method)}, {common.url(common.arg(args, kwargs, 1, 'url'))}"


def _fmt_self_method_url(args: Args, kwargs: Kwargs) -> str:
    return _fmt_method_url(args[1:], kwargs)


def _fmt_prepared(args: Args, kwargs: Kwargs) -> str:
    request = common.arg(args, kwargs, 1, "request")
    try:
        return f"<{type(request).__name__} [{request.method}] {common.url(request.url)}>"
    except Exception:
        return "<request>"


def _fmt_httpx_request(args: Args, kwargs: Kwargs) -> str:
    request = common.arg(args, kwargs, 1, "request")
    try:
        return f"<Request({short(request.method)}, {common.url(request.url)})>"
    except Exception:
        return "<request>"


def _httpx_send_blocks(args: Args, kwargs: Kwargs) -> bool:
    """An ``httpx.Client`` on a ``MockTransport``/``WSGITransport`` never touches the network."""
    httpx = sys.modules.get("httpx")
    try:
        request = common.arg(args, kwargs, 1, "request")
        transport = args[0]._transport_for_url(request.url)
        in_memory = httpx is not None and isinstance(
            transport, (httpx.MockTransport, httpx.WSGITransport)
        )
    except Exception:
        return True
    return not in_memory


def _httpx_read_blocks(args: Args, kwargs: Kwargs) -> bool:
    """Only a streamed response (``client.stream(...)``, ``send(stream=True)``) whose body is
    still unread, on a sync network stream, reads from the socket."""
    httpx = sys.modules.get("httpx")
    try:
        response = args[0]
        if response.is_stream_consumed or httpx is None:
            return False
        stream = response.stream
        return isinstance(stream, httpx.SyncByteStream) and not isinstance(stream, httpx.ByteStream)
    except Exception:
        return False


def _http(
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
        common.NETWORK,
        common.HTTP,
        would_block=would_block,
        fmt=fmt,
        method=method,
        optional=optional,
    )


HTTP_HOOKS: tuple[Hook, ...] = (
    # requests: the helpers (requests.api's names are the same objects: swapped too)
    _http("requests", "request", "requests.request", _fmt_method_url),
    *(_http("requests", verb, f"requests.{verb}", _fmt_url) for verb in _HTTP_VERBS),
    _http(
        "requests", "Session.request", "requests.Session.request", _fmt_self_method_url, method=True
    ),
    _http("requests", "Session.send", "requests.Session.send", _fmt_prepared, method=True),
    # urllib3 (PoolManager/HTTPConnectionPool inherit ``request`` from RequestMethods)
    _http("urllib3", "request", "urllib3.request", _fmt_method_url, optional=True),  # 2.0+
    _http(
        "urllib3",
        "PoolManager.request",
        "urllib3.PoolManager.request",
        _fmt_self_method_url,
        method=True,
    ),
    _http(
        "urllib3",
        "PoolManager.urlopen",
        "urllib3.PoolManager.urlopen",
        _fmt_self_method_url,
        method=True,
    ),
    _http(
        "urllib3",
        "HTTPConnectionPool.request",
        "urllib3.HTTPConnectionPool.request",
        _fmt_self_method_url,
        method=True,
    ),
    _http(
        "urllib3",
        "HTTPConnectionPool.urlopen",
        "urllib3.HTTPConnectionPool.urlopen",
        _fmt_self_method_url,
        method=True,
    ),
    # httpx: every Client method (get, post, stream, ...) goes through send
    _http(
        "httpx",
        "Client.send",
        "httpx.Client.send",
        _fmt_httpx_request,
        method=True,
        would_block=_httpx_send_blocks,
    ),
    _http(
        "httpx",
        "Response.read",
        "httpx.Response.read",
        common.fmt_none,
        method=True,
        would_block=_httpx_read_blocks,
    ),
    _http("httpx", "request", "httpx.request", _fmt_method_url),
    *(_http("httpx", verb, f"httpx.{verb}", _fmt_url) for verb in _HTTP_VERBS),
)


# -- Redis ------------------------------------------------------------------------------------

# commands whose arguments are credentials or configuration: only their name is shown
_REDIS_SECRET = frozenset({"AUTH", "HELLO", "ACL", "CONFIG", "MIGRATE"})


def _fmt_redis_command(args: Args, kwargs: Kwargs) -> str:
    """The command and its first key, never the values: ``'SET', 'user:1', …``."""
    if len(args) < 2:
        return ""
    name = args[1]
    text = name.decode("latin-1") if isinstance(name, bytes) else str(name)
    if text.split(" ", 1)[0].upper() in _REDIS_SECRET:
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


def _redis(attr: str, key: str, fmt: Format, would_block: WouldBlock | None = None) -> Hook:
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


REDIS_HOOKS: tuple[Hook, ...] = (
    _redis("Redis.execute_command", "redis.Redis.execute_command", _fmt_redis_command),
    _redis(
        "Pipeline.execute",
        "redis.client.Pipeline.execute",
        common.fmt_none,
        would_block=_pipeline_has_work,
    ),
    # WATCH, and commands issued while watching, run at once
    _redis(
        "Pipeline.immediate_execute_command",
        "redis.client.Pipeline.immediate_execute_command",
        _fmt_redis_command,
    ),
    _redis(
        "Pipeline.reset",
        "redis.client.Pipeline.reset",
        common.fmt_none,
        would_block=_pipeline_unwatches,
    ),
    _redis("PubSub.execute_command", "redis.client.PubSub.execute_command", _fmt_redis_command),
    _redis(
        "PubSub.get_message",
        "redis.client.PubSub.get_message",
        _fmt_timeout,
        would_block=_get_message_waits,
    ),
)


# -- psycopg (3) ------------------------------------------------------------------------------

# pq.TransactionStatus: ACTIVE, INTRANS, INERROR (IDLE = 0 and UNKNOWN = 4 need no round trip)
_PQ_IN_TRANSACTION = (1, 2, 3)


def _psycopg_in_transaction(args: Args, kwargs: Kwargs) -> bool:
    try:
        status = args[0].pgconn.transaction_status
    except Exception:
        return True
    return status in _PQ_IN_TRANSACTION


def _psycopg_pipeline_fetch(args: Args, kwargs: Kwargs) -> bool:
    """A client-side cursor's rows arrived with ``execute``; only in pipeline mode does a
    fetch wait for the server."""
    try:
        return getattr(args[0].connection, "_pipeline", None) is not None
    except Exception:
        return False


def _fmt_psycopg_query(args: Args, kwargs: Kwargs) -> str:
    query = common.arg(args, kwargs, 1, "query")
    has_params = len(args) > 2 or kwargs.get("params") is not None
    return common.sql(query, has_params)


def _fmt_psycopg_many(args: Args, kwargs: Kwargs) -> str:
    return common.sql(common.arg(args, kwargs, 1, "query"), True)


def _fmt_statement(args: Args, kwargs: Kwargs) -> str:
    return common.sql(common.arg(args, kwargs, 1, "statement"), len(args) > 2 or "params" in kwargs)


def _fmt_size(args: Args, kwargs: Kwargs) -> str:
    size = common.arg(args, kwargs, 1, "size")
    return "" if size is None else short(size)


def _fmt_psycopg_connect(args: Args, kwargs: Kwargs) -> str:
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


def _psycopg(
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


PSYCOPG_HOOKS: tuple[Hook, ...] = (
    # = Connection.connect, bound; its connection string and keywords hold the password
    _psycopg("connect", _fmt_psycopg_connect, method=False, sensitive=True),
    _psycopg("Connection.connect", _fmt_psycopg_connect, method=False, factory=classmethod_wrapper),
    _psycopg("Connection.execute", _fmt_psycopg_query),
    _psycopg("Connection.commit", common.fmt_none, _psycopg_in_transaction),
    _psycopg("Connection.rollback", common.fmt_none, _psycopg_in_transaction),
    # ``with conn.transaction():`` sends BEGIN (or SAVEPOINT) on entering
    _psycopg("Transaction.__enter__", common.fmt_none, key="psycopg.Connection.transaction"),
    _psycopg("Cursor.execute", _fmt_psycopg_query),
    _psycopg("Cursor.executemany", _fmt_psycopg_many),
    _psycopg("Cursor.copy", _fmt_statement),  # reported when called (the `with` line)
    _psycopg("Cursor.stream", _fmt_psycopg_query),  # reported when called
    _psycopg("Cursor.fetchone", common.fmt_none, _psycopg_pipeline_fetch),
    _psycopg("Cursor.fetchmany", _fmt_size, _psycopg_pipeline_fetch),
    _psycopg("Cursor.fetchall", common.fmt_none, _psycopg_pipeline_fetch),
    _psycopg("ServerCursor.execute", _fmt_psycopg_query),
    _psycopg("ServerCursor.fetchone", common.fmt_none),
    _psycopg("ServerCursor.fetchmany", _fmt_size),
    _psycopg("ServerCursor.fetchall", common.fmt_none),
    _psycopg("ServerCursor.scroll", common.fmt_none),
)


# -- pymemcache -------------------------------------------------------------------------------


def _fmt_memcache_key(args: Args, kwargs: Kwargs) -> str:
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


def _memcache_many_blocks(args: Args, kwargs: Kwargs) -> bool:
    keys = common.arg(args, kwargs, 1, "keys")
    if keys is None:
        keys = kwargs.get("values")
    try:
        return len(keys) > 0
    except TypeError:
        return True


_MEMCACHE_KEYED = (
    "set", "add", "replace", "append", "prepend", "cas", "get", "gets", "delete", "incr",
    "decr", "touch",
)  # fmt: skip
_MEMCACHE_MANY = ("set_many", "set_multi", "get_many", "get_multi", "gets_many", "delete_many",
                  "delete_multi")  # fmt: skip
_MEMCACHE_OTHER = ("stats", "version", "flush_all", "cache_memlimit", "raw_command", "quit",
                   "shutdown")  # fmt: skip


def _memcache(name: str, fmt: Format, would_block: WouldBlock | None = None) -> Hook:
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


MEMCACHE_HOOKS: tuple[Hook, ...] = (
    *(_memcache(name, _fmt_memcache_key) for name in _MEMCACHE_KEYED),
    *(_memcache(name, _fmt_memcache_key, _memcache_many_blocks) for name in _MEMCACHE_MANY),
    *(_memcache(name, common.fmt_none) for name in _MEMCACHE_OTHER),
)


# -- smtplib ----------------------------------------------------------------------------------


def _smtp_connected(args: Args, kwargs: Kwargs) -> bool:
    """Not connected, these raise ``SMTPServerDisconnected`` without any I/O."""
    try:
        return getattr(args[0], "sock", None) is not None
    except Exception:
        return True


def _fmt_sendmail(args: Args, kwargs: Kwargs) -> str:
    sender = common.arg(args, kwargs, 1, "from_addr")
    recipients = common.arg(args, kwargs, 2, "to_addrs")
    if isinstance(recipients, (list, tuple)):
        shown = f"<{len(recipients)} recipients>" if len(recipients) != 1 else short(recipients)
    else:
        shown = short(recipients)
    return f"{short(sender)}, {shown}, <message>"


def _fmt_send_message(args: Args, kwargs: Kwargs) -> str:
    return "<message>"


def _fmt_login(args: Args, kwargs: Kwargs) -> str:
    return f"{short(common.arg(args, kwargs, 1, 'user'))}, '…'"


def _smtp(name: str, fmt: Format, *, sensitive: bool = False) -> Hook:
    return Hook(
        "smtplib",
        f"SMTP.{name}",
        f"smtplib.SMTP.{name}",
        common.NETWORK,
        common.SMTP,
        would_block=_smtp_connected,
        fmt=fmt,
        method=True,
        sensitive=sensitive,
    )


def _fmt_address(args: Args, kwargs: Kwargs) -> str:
    return short(common.arg(args, kwargs, 1, "address"))


def _fmt_command(args: Args, kwargs: Kwargs) -> str:
    command = common.arg(args, kwargs, 1, "cmd")
    if isinstance(command, str) and command.split(" ", 1)[0].upper() == "AUTH":
        return "'AUTH', …"
    return short(command) + (", …" if len(args) > 2 or "args" in kwargs else "")


SMTP_HOOKS: tuple[Hook, ...] = (
    _smtp("sendmail", _fmt_sendmail),
    _smtp("send_message", _fmt_send_message),
    _smtp("login", _fmt_login, sensitive=True),
    _smtp("starttls", common.fmt_none),
    # the single commands (Django's backend: ehlo/starttls/login, sendmail, quit)
    _smtp("ehlo", common.fmt_none),
    _smtp("helo", common.fmt_none),
    _smtp("noop", common.fmt_none),
    _smtp("rset", common.fmt_none),
    _smtp("quit", common.fmt_none),
    _smtp("mail", _fmt_address),
    _smtp("rcpt", _fmt_address),
    _smtp("data", lambda args, kwargs: "<message>"),
    _smtp("verify", _fmt_address),
    _smtp("docmd", _fmt_command),
)


FAMILY = Family(
    name="clients",
    description=(
        "third-party sync clients, hooked when imported: requests, urllib3, httpx.Client, "
        "redis, psycopg2, psycopg (sync), pymemcache; smtplib sending"
    ),
    # optional: a library version without one of these attributes loses that hook only
    hooks=tuple(
        dataclasses.replace(hook, optional=True)
        for hook in (
            *HTTP_HOOKS,
            *REDIS_HOOKS,
            _clients_psycopg2.CONNECT,
            *PSYCOPG_HOOKS,
            *MEMCACHE_HOOKS,
            *SMTP_HOOKS,
        )
    ),
    extra=_clients_psycopg2.EXTRA,
)
