"""Network: blocking sockets, TLS, DNS, HTTP and mail clients, ``select`` and selectors.

Attribute hooks give the key users know and time the call; audit hooks catch the same calls
made from C or through names bound before install (``sock.connect`` taken earlier,
``_socket.getaddrinfo``) and stand down when one of our wrappers is already on the stack.

Never flagged: sockets with timeout 0.0 (every socket asyncio and uvloop use), DNS calls that
only parse a numeric address, ``select``/selectors/poll with a zero timeout, the running
loop's own selector, and asyncio's TLS (``SSLObject`` over memory BIOs, never hooked).

``socket.create_connection`` is reported by its first blocking step (``socket.getaddrinfo``
for a host name, ``socket.socket.connect`` for a numeric address), raised at its entry: once
it has made its socket, an error that is not an ``OSError`` would leak it unclosed.
"""

from __future__ import annotations

import dataclasses
import selectors
import socket as _socketmod
from typing import Any

from .. import _wording
from .._format import positional, short
from .._spec import Args, AuditHook, Family, Hook, Kwargs
from ._net_wrap import keyed_by, poll_factory, selector_method, socket_method

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)
__asyncguard_work__ = True  # the guard judging or reporting a call (_frames)

NETWORK = "network"
DNS = "dns"

# -- predicates ---------------------------------------------------------------------------


def _socket_blocks(args: Args, kwargs: Kwargs) -> bool:
    # a timeout of 0.0 is a non-blocking socket: it fails with BlockingIOError, never waits
    try:
        return bool(args[0].gettimeout() != 0.0)
    except Exception:
        return True


def _handshake_blocks(args: Args, kwargs: Kwargs) -> bool:
    # SSLSocket.do_handshake(block=True) makes a non-blocking socket blocking for the handshake
    block = args[1] if len(args) > 1 else kwargs.get("block", False)
    return bool(block) or _socket_blocks(args, kwargs)


def _wrap_socket_blocks(args: Args, kwargs: Kwargs) -> bool:
    """``SSLContext.wrap_socket`` handshakes only on a connected blocking socket."""
    sock = args[1] if len(args) > 1 else kwargs.get("sock")
    handshake = args[3] if len(args) > 3 else kwargs.get("do_handshake_on_connect", True)
    if not handshake or sock is None:
        return False
    try:
        if sock.gettimeout() == 0.0:
            return False  # wrap_socket refuses: ValueError, no handshake
        sock.getpeername()
    except Exception:
        return False  # not connected: the handshake comes later, at connect()
    return True


def _numeric_host(host: object) -> bool:
    if host is None:
        return True  # the wildcard or loopback address, no lookup
    if isinstance(host, bytes):
        try:
            host = host.decode("ascii")
        except UnicodeDecodeError:
            return False
    if not isinstance(host, str) or not host:
        return False
    address = host.partition("%")[0]  # IPv6 scope id
    for family in (_socketmod.AF_INET, _socketmod.AF_INET6):
        try:
            _socketmod.inet_pton(family, address)
        except (OSError, ValueError):
            continue
        return True
    return False


def _numeric_port(port: object) -> bool:
    if port is None or isinstance(port, int):
        return True
    if isinstance(port, (str, bytes)):
        return port in ("", b"") or port.isdigit()
    return False


def _getaddrinfo_blocks(args: Args, kwargs: Kwargs) -> bool:
    # like asyncio's _ipaddr_info: a numeric host and port need no resolver, nor /etc files
    host = args[0] if args else kwargs.get("host")
    port = args[1] if len(args) > 1 else kwargs.get("port")
    flags = args[5] if len(args) > 5 else kwargs.get("flags", 0)
    if isinstance(flags, int) and flags & _socketmod.AI_NUMERICHOST:
        numeric_serv = flags & getattr(_socketmod, "AI_NUMERICSERV", 0)
        return not (numeric_serv or _numeric_port(port))
    return not (_numeric_host(host) and _numeric_port(port))


def _gethostbyname_blocks(args: Args, kwargs: Kwargs) -> bool:
    return not (args and args[0] is not None and _numeric_host(args[0]))


_NI_NUMERIC = _socketmod.NI_NUMERICHOST | _socketmod.NI_NUMERICSERV


def _getnameinfo_blocks(args: Args, kwargs: Kwargs) -> bool:
    flags = args[1] if len(args) > 1 else None
    return not (isinstance(flags, int) and flags & _NI_NUMERIC == _NI_NUMERIC)


def _zero(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0


def _select_blocks(args: Args, kwargs: Kwargs) -> bool:
    # select.select(r, w, x, 0) only polls; a negative timeout is a ValueError
    timeout = args[3] if len(args) > 3 else kwargs.get("timeout")
    return not _zero(timeout)


def _selector_blocks(args: Args, kwargs: Kwargs) -> bool:
    # selectors: None waits forever, <= 0 polls
    timeout = args[1] if len(args) > 1 else kwargs.get("timeout")
    return not _zero(timeout)


def _poll_blocks(args: Args, kwargs: Kwargs) -> bool:
    # poll objects: milliseconds; None or negative waits forever, 0 polls
    timeout = args[0] if args else None
    return not (isinstance(timeout, (int, float)) and timeout == 0)


def _url_text(url: object) -> str | None:
    if isinstance(url, str):
        return url
    full_url = getattr(url, "full_url", None)  # urllib.request.Request
    return full_url if isinstance(full_url, str) else None


def _url_blocks(url: object) -> bool:
    text = _url_text(url)
    # a data: URL is decoded in memory
    return not (text is not None and text[:5].lower() == "data:")


def _urlopen_blocks(args: Args, kwargs: Kwargs) -> bool:
    return _url_blocks(args[0] if args else kwargs.get("url"))


def _opener_blocks(args: Args, kwargs: Kwargs) -> bool:
    return _url_blocks(args[1] if len(args) > 1 else kwargs.get("fullurl"))


def _smtp_init_blocks(args: Args, kwargs: Kwargs) -> bool:
    # SMTP(host) connects; SMTP() without local_hostname calls socket.getfqdn()
    host = args[1] if len(args) > 1 else kwargs.get("host", "")
    local_hostname = args[3] if len(args) > 3 else kwargs.get("local_hostname")
    return bool(host) or local_hostname is None


def _ftp_init_blocks(args: Args, kwargs: Kwargs) -> bool:
    return bool(args[1] if len(args) > 1 else kwargs.get("host", ""))


def _address_of(args: Args, kwargs: Kwargs) -> Any:
    return args[0] if args else kwargs.get("address")


def _create_connection_connects(args: Args, kwargs: Kwargs) -> bool:
    # timeout=0 makes connect() fail at once with BlockingIOError
    timeout = args[1] if len(args) > 1 else kwargs.get("timeout")
    return not (timeout is not None and _zero(timeout))


def _audit_socket_blocks(args: Args) -> bool:
    return _socket_blocks(args, {})


def _audit_getaddrinfo_blocks(args: Args) -> bool:
    # event args: host, port, family, type, proto (the flags are not passed)
    return not (args and _numeric_host(args[0]) and len(args) > 1 and _numeric_port(args[1]))


def _audit_gethostbyname_blocks(args: Args) -> bool:
    return _gethostbyname_blocks(args, {})


def _audit_urllib_blocks(args: Args) -> bool:
    return _url_blocks(args[0] if args else None)


# -- message arguments (abridged, no payloads, no query strings) ---------------------------


def _nbytes(data: object) -> str:
    try:
        return f"<{memoryview(data).nbytes} bytes>"  # type: ignore[arg-type]
    except Exception:
        return "<data>"


def _fmt_self_args(args: Args, kwargs: Kwargs) -> str:
    return positional(args, skip=1)


def _fmt_send(args: Args, kwargs: Kwargs) -> str:
    return _nbytes(args[1]) if len(args) > 1 else ""


def _fmt_sendto(args: Args, kwargs: Kwargs) -> str:
    if len(args) < 3:
        return _fmt_send(args, kwargs)
    return f"{_nbytes(args[1])}, {short(args[-1])}"


def _fmt_sendmsg(args: Args, kwargs: Kwargs) -> str:
    try:
        total = sum(memoryview(buffer).nbytes for buffer in args[1])
    except Exception:
        return "…"
    return f"[<{total} bytes>]" + (", …" if len(args) > 2 else "")


def _fmt_into(args: Args, kwargs: Kwargs) -> str:
    shown = ["<buffer>"] + [short(a) for a in args[2:3]]
    return ", ".join(shown)


def _fmt_nothing(args: Args, kwargs: Kwargs) -> str:
    return ""


def _fmt_wrap_socket(args: Args, kwargs: Kwargs) -> str:
    hostname = args[5] if len(args) > 5 else kwargs.get("server_hostname")
    return "sock" if hostname is None else f"sock, server_hostname={short(hostname)}"


def _strip_query(url: str) -> str:
    for mark in ("?", "#"):
        head, found, _ = url.partition(mark)
        if found:
            return head + "?…"
    return url


def _fmt_url(url: object) -> str:
    text = _url_text(url)
    return short(url) if text is None else short(_strip_query(text))


def _fmt_request(args: Args, kwargs: Kwargs) -> str:
    method = args[1] if len(args) > 1 else kwargs.get("method")
    url = args[2] if len(args) > 2 else kwargs.get("url")
    return f"{short(method)}, {_fmt_url(url)}"


def _fmt_urlopen(args: Args, kwargs: Kwargs) -> str:
    return _fmt_url(args[0] if args else kwargs.get("url"))


def _fmt_opener(args: Args, kwargs: Kwargs) -> str:
    return _fmt_url(args[1] if len(args) > 1 else kwargs.get("fullurl"))


def _fmt_address(args: Args, kwargs: Kwargs) -> str:
    return short(_address_of(args, kwargs))


def _fmt_address_lookup(args: Args, kwargs: Kwargs) -> str:
    address = _address_of(args, kwargs)
    return positional(tuple(address)) if isinstance(address, tuple) else short(address)


# -- hooks --------------------------------------------------------------------------------


def _socket_hook(
    name: str, fmt: Any, *, optional: bool = False, cls: str = "socket", module: str = "socket"
) -> Hook:
    key_class = "socket.socket" if module == "socket" else "ssl.SSLSocket"
    return Hook(
        module,
        f"{cls}.{name}",
        f"{key_class}.{name}",
        NETWORK,
        _wording.NETWORK,
        would_block=_socket_blocks,
        fmt=fmt,
        method=True,
        factory=socket_method,
        optional=optional,
    )


_SOCKET_METHODS: tuple[tuple[str, Any, bool], ...] = (
    # name, message arguments, optional (not on every platform)
    ("connect", _fmt_self_args, False),
    ("connect_ex", _fmt_self_args, False),
    ("accept", _fmt_nothing, False),
    ("send", _fmt_send, False),
    ("sendall", _fmt_send, False),
    ("sendto", _fmt_sendto, False),
    ("sendmsg", _fmt_sendmsg, True),
    ("recv", _fmt_self_args, False),
    ("recv_into", _fmt_into, False),
    ("recvfrom", _fmt_self_args, False),
    ("recvfrom_into", _fmt_into, False),
    ("recvmsg", _fmt_self_args, True),
    ("recvmsg_into", _fmt_nothing, True),
    ("sendfile", _fmt_self_args, False),
)

_SSL_METHODS: tuple[tuple[str, Any], ...] = (
    ("read", _fmt_self_args),
    ("write", _fmt_send),
    ("recv", _fmt_self_args),
    ("recv_into", _fmt_into),
    ("send", _fmt_send),
    ("sendall", _fmt_send),
    ("connect", _fmt_self_args),
    ("accept", _fmt_nothing),
    ("unwrap", _fmt_nothing),
)


def _dns(name: str, would_block: Any = None) -> Hook:
    return Hook(
        "socket",
        name,
        f"socket.{name}",
        DNS,
        _wording.DNS,
        would_block=would_block,
        fmt=lambda args, kwargs: positional(args),
    )


_SELECTOR_CLASSES = (
    "SelectSelector",
    "PollSelector",
    "EpollSelector",
    "DevpollSelector",
    "KqueueSelector",
)


def _selector(name: str) -> Hook:
    return Hook(
        "selectors",
        f"{name}.select",
        f"selectors.{name}.select",
        NETWORK,
        _wording.SELECT,
        would_block=_selector_blocks,
        fmt=_fmt_self_args,
        method=True,
        factory=selector_method,
        optional=True,  # only the ones this platform has
    )


def _client(module: str, attr: str, key: str, would_block: Any = None) -> Hook:
    return Hook(
        module,
        attr,
        key,
        NETWORK,
        _wording.NETWORK,
        would_block=would_block,
        fmt=_fmt_self_args,
        method=True,
        optional=True,
    )


# socket.create_connection(address): one hook object per first blocking step
_CREATE_CONNECTION_CONNECT = Hook(
    "socket",
    "create_connection",
    "socket.socket.connect",
    NETWORK,
    _wording.NETWORK,
    would_block=_create_connection_connects,
    fmt=_fmt_address,
)
_CREATE_CONNECTION_LOOKUP = Hook(
    "socket",
    "create_connection",
    "socket.getaddrinfo",
    DNS,
    _wording.DNS,
    fmt=_fmt_address_lookup,
)


def _create_connection_step(args: Args, kwargs: Kwargs) -> Hook:
    address = _address_of(args, kwargs)
    host = address[0] if isinstance(address, tuple) and address else None
    port = address[1] if isinstance(address, tuple) and len(address) > 1 else None
    if _numeric_host(host) and _numeric_port(port):
        return _CREATE_CONNECTION_CONNECT
    return _CREATE_CONNECTION_LOOKUP


HOOKS: tuple[Hook, ...] = (
    *(_socket_hook(name, fmt, optional=optional) for name, fmt, optional in _SOCKET_METHODS),
    # TLS over blocking sockets (asyncio's SSLObject + MemoryBIO is never touched)
    *(_socket_hook(name, fmt, cls="SSLSocket", module="ssl") for name, fmt in _SSL_METHODS),
    Hook(
        "ssl",
        "SSLSocket.do_handshake",
        "ssl.SSLSocket.do_handshake",
        NETWORK,
        _wording.NETWORK,
        would_block=_handshake_blocks,
        fmt=_fmt_nothing,
        method=True,
    ),
    Hook(
        "ssl",
        "SSLContext.wrap_socket",
        "ssl.SSLContext.wrap_socket",
        NETWORK,
        _wording.NETWORK,
        would_block=_wrap_socket_blocks,
        fmt=_fmt_wrap_socket,
        method=True,
    ),
    dataclasses.replace(_CREATE_CONNECTION_CONNECT, factory=keyed_by(_create_connection_step)),
    # DNS
    _dns("getaddrinfo", _getaddrinfo_blocks),
    _dns("gethostbyname", _gethostbyname_blocks),
    _dns("gethostbyname_ex", _gethostbyname_blocks),
    _dns("gethostbyaddr"),
    _dns("getnameinfo", _getnameinfo_blocks),
    _dns("getfqdn"),
    # HTTP (HTTPSConnection inherits request/getresponse; its connect is its own)
    Hook(
        "http.client",
        "HTTPConnection.connect",
        "http.client.HTTPConnection.connect",
        NETWORK,
        _wording.HTTP,
        fmt=_fmt_nothing,
        method=True,
    ),
    Hook(
        "http.client",
        "HTTPSConnection.connect",
        "http.client.HTTPSConnection.connect",
        NETWORK,
        _wording.HTTP,
        fmt=_fmt_nothing,
        method=True,
        optional=True,  # Python built without ssl
    ),
    Hook(
        "http.client",
        "HTTPConnection.request",
        "http.client.HTTPConnection.request",
        NETWORK,
        _wording.HTTP,
        fmt=_fmt_request,
        method=True,
    ),
    Hook(
        "http.client",
        "HTTPConnection.getresponse",
        "http.client.HTTPConnection.getresponse",
        NETWORK,
        _wording.HTTP,
        fmt=_fmt_nothing,
        method=True,
    ),
    Hook(
        "urllib.request",
        "urlopen",
        "urllib.request.urlopen",
        NETWORK,
        _wording.HTTP,
        would_block=_urlopen_blocks,
        fmt=_fmt_urlopen,
    ),
    Hook(
        "urllib.request",
        "OpenerDirector.open",
        "urllib.request.OpenerDirector.open",
        NETWORK,
        _wording.HTTP,
        would_block=_opener_blocks,
        fmt=_fmt_opener,
        method=True,
    ),
    # other standard-library clients: the constructors that connect, and connect()
    _client("smtplib", "SMTP.__init__", "smtplib.SMTP", _smtp_init_blocks),
    _client("smtplib", "SMTP.connect", "smtplib.SMTP.connect"),
    _client("ftplib", "FTP.__init__", "ftplib.FTP", _ftp_init_blocks),
    _client("ftplib", "FTP.connect", "ftplib.FTP.connect"),
    _client("poplib", "POP3.__init__", "poplib.POP3"),
    _client("imaplib", "IMAP4.__init__", "imaplib.IMAP4"),
    _client("nntplib", "NNTP.__init__", "nntplib.NNTP"),  # removed in 3.13
    # waiting for readiness
    Hook(
        "select",
        "select",
        "select.select",
        NETWORK,
        _wording.SELECT,
        would_block=_select_blocks,
        fmt=lambda args, kwargs: "…, " + short(args[3]) if len(args) > 3 else "…",
    ),
    Hook(
        "select",
        "poll",
        "select.poll.poll",
        NETWORK,
        _wording.SELECT,
        would_block=_poll_blocks,
        fmt=lambda args, kwargs: positional(args),
        factory=poll_factory,
        optional=True,
    ),
    # only the selector classes this platform defines (asyncio has imported selectors already)
    *(_selector(name) for name in _SELECTOR_CLASSES if hasattr(selectors, name)),
)


def _audit(event: str, key: str, category: str, hint: str, **options: Any) -> AuditHook:
    return AuditHook(event, key, category, hint, **options)


def _fmt_audit_self_args(args: Args) -> str:
    return positional(args, skip=1)


AUDIT: tuple[AuditHook, ...] = (
    _audit(
        "socket.connect",
        "socket.socket.connect",
        NETWORK,
        _wording.NETWORK,
        would_block=_audit_socket_blocks,
        fmt=_fmt_audit_self_args,
    ),
    _audit(
        "socket.sendto",
        "socket.socket.sendto",
        NETWORK,
        _wording.NETWORK,
        would_block=_audit_socket_blocks,
        fmt=lambda args: "…, " + short(args[1]) if len(args) > 1 else "…",
    ),
    _audit(
        "socket.sendmsg",
        "socket.socket.sendmsg",
        NETWORK,
        _wording.NETWORK,
        would_block=_audit_socket_blocks,
        fmt=lambda args: "…",
    ),
    _audit(
        "socket.getaddrinfo",
        "socket.getaddrinfo",
        DNS,
        _wording.DNS,
        would_block=_audit_getaddrinfo_blocks,
        fmt=lambda args: positional(args),
    ),
    _audit(
        "socket.gethostbyname",  # raised by gethostbyname and gethostbyname_ex
        "socket.gethostbyname",
        DNS,
        _wording.DNS,
        would_block=_audit_gethostbyname_blocks,
    ),
    _audit("socket.gethostbyaddr", "socket.gethostbyaddr", DNS, _wording.DNS),
    # the event carries no flags: a numeric-only lookup through a C caller is reported too
    _audit("socket.getnameinfo", "socket.getnameinfo", DNS, _wording.DNS),
    _audit(
        "http.client.connect",
        "http.client.HTTPConnection.connect",
        NETWORK,
        _wording.HTTP,
        fmt=lambda args: "",
    ),
    _audit(
        "urllib.Request",
        "urllib.request.OpenerDirector.open",
        NETWORK,
        _wording.HTTP,
        would_block=_audit_urllib_blocks,
        fmt=lambda args: _fmt_url(args[0]) if args else "",
    ),
    _audit(
        "smtplib.connect",
        "smtplib.SMTP.connect",
        NETWORK,
        _wording.NETWORK,
        fmt=_fmt_audit_self_args,
    ),
    _audit(
        "ftplib.connect", "ftplib.FTP.connect", NETWORK, _wording.NETWORK, fmt=_fmt_audit_self_args
    ),
    _audit("poplib.connect", "poplib.POP3", NETWORK, _wording.NETWORK, fmt=_fmt_audit_self_args),
    _audit("imaplib.open", "imaplib.IMAP4", NETWORK, _wording.NETWORK, fmt=_fmt_audit_self_args),
    _audit("nntplib.connect", "nntplib.NNTP", NETWORK, _wording.NETWORK, fmt=_fmt_audit_self_args),
)

FAMILY = Family(
    name="network",
    description=(
        "blocking sockets, TLS sockets, DNS lookups, http.client/urllib, smtplib/ftplib/"
        "poplib/imaplib/nntplib, select.select/poll and selectors"
    ),
    hooks=HOOKS,
    audit=AUDIT,
)
