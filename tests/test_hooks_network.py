from __future__ import annotations

import _socket
import asyncio
import contextlib
import ftplib
import http.client
import http.server
import imaplib
import poplib
import select
import selectors
import shutil
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from select import select as early_bound_select
from socket import getaddrinfo as early_bound_getaddrinfo
from typing import Any

import pytest

import asyncguard
from conftest import (
    call_line,
    expect_clean_off_loop,
    expect_clean_on_loop,
    expect_violation,
    run_on,
    skip_service,
)

LOCALHOST = "127.0.0.1"


def _unwrapped(func: Any) -> Any:
    """The original behind one of our wrappers (should the guard already be installed)."""
    while getattr(func, "__asyncguard_hook__", None) is not None:
        func = func.__wrapped__
    return func


# Originals captured at import, before any install: the "bound before install" callers whose
# calls only the audit hooks can see.
ORIGINAL_HTTP_CONNECT = _unwrapped(http.client.HTTPConnection.connect)
ORIGINAL_OPENER_OPEN = _unwrapped(urllib.request.OpenerDirector.open)
ORIGINAL_SMTP_CONNECT = _unwrapped(smtplib.SMTP.connect)
ORIGINAL_FTP_CONNECT = _unwrapped(ftplib.FTP.connect)
ORIGINAL_POP3_INIT = _unwrapped(poplib.POP3.__init__)
ORIGINAL_IMAP4_INIT = _unwrapped(imaplib.IMAP4.__init__)


def _import_nntplib() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import nntplib
        except ImportError:  # removed in Python 3.13
            return None
    return nntplib


nntplib = _import_nntplib()


# -- real resources ---------------------------------------------------------------------------


class Net:
    """Real sockets on 127.0.0.1 and files, every one closed at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self._open: list[Any] = []

    def keep(self, resource: Any) -> Any:
        self._open.append(resource)
        return resource

    def close(self) -> None:
        for resource in reversed(self._open):
            with contextlib.suppress(Exception):
                resource.close()

    def listener(self, blocking: bool = True) -> socket.socket:
        sock = self.keep(socket.create_server((LOCALHOST, 0)))
        sock.setblocking(blocking)
        return sock

    def tcp(self, blocking: bool = True) -> socket.socket:
        sock = self.keep(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        sock.setblocking(blocking)
        return sock

    def pair(self, blocking: bool = True) -> tuple[socket.socket, socket.socket]:
        a, b = socket.socketpair()
        self.keep(a)
        self.keep(b)
        a.setblocking(blocking)
        return a, b

    def udp(self, blocking: bool = True) -> socket.socket:
        sock = self.keep(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        sock.bind((LOCALHOST, 0))
        sock.setblocking(blocking)
        return sock


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    resources = Net(tmp_path)
    try:
        yield resources
    finally:
        resources.close()


class LineServer:
    """A real TCP server on 127.0.0.1: sends ``greeting``, then answers each line it reads."""

    def __init__(
        self,
        greeting: bytes,
        reply: Callable[[bytes], bytes] = lambda line: b"",
        wrap: Callable[[socket.socket], socket.socket] | None = None,
    ) -> None:
        self.greeting = greeting
        self.reply = reply
        self.wrap = wrap
        self.listener = socket.create_server((LOCALHOST, 0))
        self.listener.settimeout(0.05)
        self.address: tuple[str, int] = self.listener.getsockname()[:2]
        self.port = self.address[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="line-server", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(10)
            if self.wrap is not None:
                conn = self.wrap(conn)
            with conn, conn.makefile("rb") as lines:
                conn.sendall(self.greeting)
                for line in lines:
                    answer = self.reply(line)
                    if answer:
                        conn.sendall(answer)
        except Exception:  # clients of raise-mode tests hang up without a word
            pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.listener.close()


@contextlib.contextmanager
def serving(*args: Any, **kwargs: Any) -> Iterator[LineServer]:
    server = LineServer(*args, **kwargs)
    try:
        yield server
    finally:
        server.close()


def _imap_reply(line: bytes) -> bytes:
    tag = line.split(b" ", 1)[0]
    return b"* CAPABILITY IMAP4rev1\r\n" + tag + b" OK done\r\n"


@pytest.fixture(scope="module")
def smtp_server() -> Iterator[LineServer]:
    with serving(b"220 localhost ESMTP\r\n", lambda line: b"250 ok\r\n") as server:
        yield server


@pytest.fixture(scope="module")
def ftp_server() -> Iterator[LineServer]:
    with serving(b"220 welcome\r\n", lambda line: b"200 ok\r\n") as server:
        yield server


@pytest.fixture(scope="module")
def pop3_server() -> Iterator[LineServer]:
    with serving(b"+OK ready\r\n", lambda line: b"+OK\r\n") as server:
        yield server


@pytest.fixture(scope="module")
def imap_server() -> Iterator[LineServer]:
    with serving(b"* OK ready\r\n", _imap_reply) as server:
        yield server


@pytest.fixture(scope="module")
def nntp_server() -> Iterator[LineServer]:
    with serving(b"200 ready\r\n", lambda line: b"500 unknown\r\n") as server:
        yield server


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer((LOCALHOST, 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, name="http-server", daemon=True)
    thread.start()
    try:
        yield f"http://{LOCALHOST}:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


# -- TLS: a self-signed certificate made at test time ------------------------------------------


def _cert_with_cryptography(cert: Path, key: Path) -> None:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    public = private.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(LOCALHOST))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _cert_with_openssl(cert: Path, key: Path) -> str | None:
    """Make the pair with the openssl command; the reason it could not, or None."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return "neither the cryptography package nor the openssl command is available"
    command = [
        openssl,
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(cert),
        "-days",
        "2",
        "-subj",
        "/CN=localhost",
        "-addext",
        f"subjectAltName=DNS:localhost,IP:{LOCALHOST}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return f"`openssl req` could not make a self-signed certificate: {result.stderr.strip()}"
    return None


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    try:
        _cert_with_cryptography(cert, key)
    except ImportError:
        reason = _cert_with_openssl(cert, key)
        if reason is not None:
            skip_service(f"no TLS certificate for the local TLS server: {reason}")
    return cert, key


@pytest.fixture(scope="module")
def client_context(tls_files: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(tls_files[0]))
    # a throwaway self-signed certificate need not pass 3.13's strict X.509 profile
    context.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", 0)
    return context


@pytest.fixture(scope="module")
def tls_server(tls_files: tuple[Path, Path]) -> Iterator[LineServer]:
    """Handshakes, sends b"hello", then reads until the client hangs up."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(tls_files[0]), str(tls_files[1]))

    def wrap(conn: socket.socket) -> socket.socket:
        return context.wrap_socket(conn, server_side=True)

    with serving(b"hello", wrap=wrap) as server:
        yield server


# -- helpers for calls only an audit hook sees --------------------------------------------------


def record(
    loop_kind: str, mode: str, call: Callable[[], Any]
) -> tuple[list[asyncguard.Violation], list[BaseException]]:
    """Run ``call()`` on a loop under ``guarded(mode)``: the violations and what it raised."""
    raised: list[BaseException] = []

    async def main() -> None:
        try:
            call()
        except asyncguard.BlockingCallError as exc:
            raised.append(exc)

    with asyncguard.guarded(mode=mode) as guard:
        run_on(loop_kind, main)
    return guard.violations, raised


def expect_audit_violation(
    loop_kind: str, mode: str, call: Callable[[], Any], key: str, category: str = "network"
) -> asyncguard.Violation:
    """Like ``expect_violation`` for a call only the audit hook sees: warn mode reports it
    before it runs, untimed."""
    violations, raised = record(loop_kind, mode, call)
    assert [v.call for v in violations] == [key], [v.message() for v in violations]
    violation = violations[0]
    assert violation.location[0] == call.__code__.co_filename
    assert violation.location[1] == call_line(call), violation.message()
    assert violation.category == category
    assert violation.duration is None
    if mode == "raise":
        assert len(raised) == 1
        assert isinstance(raised[0], asyncguard.BlockingCallError)
        assert raised[0].violation is violation
    else:
        assert raised == []
    return violation


def suppressing(call: Callable[[], Any]) -> Callable[[], None]:
    """Non-blocking calls may fail with BlockingIOError/ssl want-read: that is their answer."""

    def run() -> None:
        with contextlib.suppress(OSError, ValueError):
            call()

    return run


# -- blocking sockets -------------------------------------------------------------------------

Build = Callable[[Net, bool], Callable[[], Any]]


def _connect(net: Net, blocking: bool) -> Callable[[], Any]:
    address = net.listener().getsockname()
    sock = net.tcp(blocking)

    def call() -> Any:
        return sock.connect(address)

    return call


def _connect_ex(net: Net, blocking: bool) -> Callable[[], Any]:
    address = net.listener().getsockname()
    sock = net.tcp(blocking)

    def call() -> Any:
        return sock.connect_ex(address)

    return call


def _accept(net: Net, blocking: bool) -> Callable[[], Any]:
    listener = net.listener(blocking)
    net.keep(socket.create_connection(listener.getsockname()))  # pending: accept won't wait

    def call() -> Any:
        return net.keep(listener.accept()[0])

    return call


def _send(net: Net, blocking: bool) -> Callable[[], Any]:
    a, _ = net.pair(blocking)

    def call() -> Any:
        return a.send(b"ping")

    return call


def _sendall(net: Net, blocking: bool) -> Callable[[], Any]:
    a, _ = net.pair(blocking)

    def call() -> Any:
        return a.sendall(b"ping")

    return call


def _sendto(net: Net, blocking: bool) -> Callable[[], Any]:
    address = net.udp().getsockname()
    sender = net.udp(blocking)

    def call() -> Any:
        return sender.sendto(b"ping", address)

    return call


def _sendmsg(net: Net, blocking: bool) -> Callable[[], Any]:
    a, _ = net.pair(blocking)

    def call() -> Any:
        return a.sendmsg([b"pi", b"ng"])

    return call


def _ready_pair(net: Net, blocking: bool) -> socket.socket:
    a, b = net.pair(blocking)
    b.sendall(b"pong")  # data waiting: in warn mode the receive returns at once
    return a


def _recv(net: Net, blocking: bool) -> Callable[[], Any]:
    a = _ready_pair(net, blocking)

    def call() -> Any:
        return a.recv(4)

    return call


def _recv_into(net: Net, blocking: bool) -> Callable[[], Any]:
    a = _ready_pair(net, blocking)

    def call() -> Any:
        return a.recv_into(bytearray(4))

    return call


def _recvfrom(net: Net, blocking: bool) -> Callable[[], Any]:
    a = _ready_pair(net, blocking)

    def call() -> Any:
        return a.recvfrom(4)

    return call


def _recvfrom_into(net: Net, blocking: bool) -> Callable[[], Any]:
    a = _ready_pair(net, blocking)

    def call() -> Any:
        return a.recvfrom_into(bytearray(4))

    return call


def _recvmsg(net: Net, blocking: bool) -> Callable[[], Any]:
    a = _ready_pair(net, blocking)

    def call() -> Any:
        return a.recvmsg(4)

    return call


def _recvmsg_into(net: Net, blocking: bool) -> Callable[[], Any]:
    a = _ready_pair(net, blocking)

    def call() -> Any:
        return a.recvmsg_into([bytearray(4)])

    return call


def _sendfile(net: Net, blocking: bool) -> Callable[[], Any]:
    path = net.tmp_path / "payload.bin"
    path.write_bytes(b"ping" * 16)
    file = net.keep(path.open("rb"))
    a, _ = net.pair(blocking)

    def call() -> Any:
        return a.sendfile(file)

    return call


SOCKET_CASES: dict[str, Build] = {
    "connect": _connect,
    "connect_ex": _connect_ex,
    "accept": _accept,
    "send": _send,
    "sendall": _sendall,
    "sendto": _sendto,
    "sendmsg": _sendmsg,
    "recv": _recv,
    "recv_into": _recv_into,
    "recvfrom": _recvfrom,
    "recvfrom_into": _recvfrom_into,
    "recvmsg": _recvmsg,
    "recvmsg_into": _recvmsg_into,
    "sendfile": _sendfile,
}


@pytest.mark.parametrize("method", list(SOCKET_CASES))
def test_blocking_socket(loop_kind: str, mode: str, net: Net, method: str) -> None:
    call = SOCKET_CASES[method](net, True)
    violation = expect_violation(
        loop_kind, mode, call, f"socket.socket.{method}", category="network"
    )
    assert "asyncio streams" in violation.message()


@pytest.mark.parametrize("method", list(SOCKET_CASES))
def test_blocking_socket_off_loop(net: Net, method: str) -> None:
    expect_clean_off_loop(SOCKET_CASES[method](net, True))


@pytest.mark.parametrize("method", list(SOCKET_CASES))
def test_non_blocking_socket_not_flagged(loop_kind: str, net: Net, method: str) -> None:
    expect_clean_on_loop(loop_kind, suppressing(SOCKET_CASES[method](net, False)))


def test_socket_with_timeout_is_blocking(loop_kind: str, mode: str, net: Net) -> None:
    a = _ready_pair(net, True)
    a.settimeout(5)  # waits up to 5 s: blocking all the same

    def blocking() -> None:
        a.recv(4)

    expect_violation(loop_kind, mode, blocking, "socket.socket.recv")


def test_socket_messages_show_addresses_not_payloads(net: Net) -> None:
    violation = expect_violation("main", "raise", _connect(net, True), "socket.socket.connect")
    assert violation.call_expr.startswith("socket.socket.connect(('127.0.0.1', ")
    assert expect_violation("main", "raise", _send(net, True), "socket.socket.send").call_expr == (
        "socket.socket.send(<4 bytes>)"
    )
    assert expect_violation("main", "raise", _recv(net, True), "socket.socket.recv").call_expr == (
        "socket.socket.recv(4)"
    )
    sendto = expect_violation("main", "raise", _sendto(net, True), "socket.socket.sendto")
    assert sendto.call_expr.startswith("socket.socket.sendto(<4 bytes>, ('127.0.0.1', ")


def test_makefile_read_reports_the_receive(loop_kind: str, mode: str, net: Net) -> None:
    reader = net.keep(_ready_pair(net, True).makefile("rb"))

    def blocking() -> None:
        reader.read(4)

    expect_violation(loop_kind, mode, blocking, "socket.socket.recv_into")


def test_create_connection_numeric_reports_connect(loop_kind: str, mode: str, net: Net) -> None:
    address = net.listener().getsockname()
    made: list[socket.socket] = []

    def blocking() -> None:
        made.append(net.keep(socket.create_connection(address)))

    violation = expect_violation(loop_kind, mode, blocking, "socket.socket.connect")
    assert violation.call_expr == f"socket.socket.connect({address!r})"
    assert len(made) == (0 if mode == "raise" else 1)  # raised before any socket was made


def test_create_connection_by_name_reports_the_lookup(loop_kind: str, mode: str, net: Net) -> None:
    port = net.listener().getsockname()[1]

    def blocking() -> None:
        net.keep(socket.create_connection(("localhost", port)))

    # one report for the whole helper, under its first blocking step
    violation = expect_violation(loop_kind, mode, blocking, "socket.getaddrinfo", category="dns")
    assert violation.call_expr == f"socket.getaddrinfo('localhost', {port})"


def test_create_connection_off_loop(net: Net) -> None:
    address = net.listener().getsockname()
    expect_clean_off_loop(lambda: net.keep(socket.create_connection(address)))


# -- the audit events raised in C (calls from C, names bound before install) -------------------


def test_audit_connect_of_a_c_method(loop_kind: str, mode: str, net: Net) -> None:
    address = net.listener().getsockname()
    sock = net.tcp()

    def blocking() -> None:
        _socket.socket.connect(sock, address)

    violation = expect_audit_violation(loop_kind, mode, blocking, "socket.socket.connect")
    assert violation.call_expr == f"socket.socket.connect({address!r})"


def test_audit_connect_bound_before_install(loop_kind: str, mode: str, net: Net) -> None:
    address = net.listener().getsockname()
    connect = net.tcp().connect  # bound to the C method before the guard was installed

    def blocking() -> None:
        connect(address)

    expect_audit_violation(loop_kind, mode, blocking, "socket.socket.connect")


def test_audit_connect_non_blocking_not_flagged(loop_kind: str, net: Net) -> None:
    address = net.listener().getsockname()
    sock = net.tcp(blocking=False)
    expect_clean_on_loop(loop_kind, lambda: _socket.socket.connect_ex(sock, address))


def test_audit_sendto(loop_kind: str, mode: str, net: Net) -> None:
    address = net.udp().getsockname()
    sender = net.udp()

    def blocking() -> None:
        _socket.socket.sendto(sender, b"ping", address)

    expect_audit_violation(loop_kind, mode, blocking, "socket.socket.sendto")


def test_audit_sendmsg(loop_kind: str, mode: str, net: Net) -> None:
    a, _ = net.pair()

    def blocking() -> None:
        _socket.socket.sendmsg(a, [b"ping"])

    expect_audit_violation(loop_kind, mode, blocking, "socket.socket.sendmsg")


def _c_getaddrinfo() -> None:
    _socket.getaddrinfo("localhost", 80)


def _c_gethostbyname() -> None:
    _socket.gethostbyname("localhost")


def _c_gethostbyname_ex() -> None:
    _socket.gethostbyname_ex("localhost")


def _c_gethostbyaddr() -> None:
    _socket.gethostbyaddr(LOCALHOST)


def _c_getnameinfo() -> None:
    _socket.getnameinfo((LOCALHOST, 80), 0)


@pytest.mark.parametrize(
    ("call", "key"),
    [
        (_c_getaddrinfo, "socket.getaddrinfo"),
        (_c_gethostbyname, "socket.gethostbyname"),
        (_c_gethostbyname_ex, "socket.gethostbyname"),
        (_c_gethostbyaddr, "socket.gethostbyaddr"),
        (_c_getnameinfo, "socket.getnameinfo"),
    ],
    ids=lambda value: getattr(value, "__name__", value),
)
def test_audit_dns_in_c(loop_kind: str, mode: str, call: Callable[[], None], key: str) -> None:
    expect_audit_violation(loop_kind, mode, call, key, category="dns")


def test_audit_numeric_lookups_in_c_not_flagged(loop_kind: str) -> None:
    def numeric() -> None:
        _socket.getaddrinfo(LOCALHOST, 80)
        _socket.gethostbyname(LOCALHOST)

    expect_clean_on_loop(loop_kind, numeric)


# -- TLS over blocking sockets ------------------------------------------------------------------


def test_ssl_wrap_socket_handshake(
    loop_kind: str, mode: str, net: Net, tls_server: LineServer, client_context: ssl.SSLContext
) -> None:
    raw = net.keep(socket.create_connection(tls_server.address))

    def blocking() -> None:
        net.keep(client_context.wrap_socket(raw, server_hostname="localhost"))

    violation = expect_violation(loop_kind, mode, blocking, "ssl.SSLContext.wrap_socket")
    assert violation.call_expr == "ssl.SSLContext.wrap_socket(sock, server_hostname='localhost')"


def test_ssl_do_handshake(
    loop_kind: str, mode: str, net: Net, tls_server: LineServer, client_context: ssl.SSLContext
) -> None:
    raw = socket.create_connection(tls_server.address)
    tls = net.keep(
        client_context.wrap_socket(raw, server_hostname="localhost", do_handshake_on_connect=False)
    )

    def blocking() -> None:
        tls.do_handshake()

    expect_violation(loop_kind, mode, blocking, "ssl.SSLSocket.do_handshake")


def _tls_socket(net: Net, server: LineServer, context: ssl.SSLContext) -> ssl.SSLSocket:
    raw = socket.create_connection(server.address)
    tls: ssl.SSLSocket = net.keep(context.wrap_socket(raw, server_hostname="localhost"))
    return tls


def test_ssl_recv(
    loop_kind: str, mode: str, net: Net, tls_server: LineServer, client_context: ssl.SSLContext
) -> None:
    tls = _tls_socket(net, tls_server, client_context)
    received: list[bytes] = []

    def blocking() -> None:
        received.append(tls.recv(5))

    expect_violation(loop_kind, mode, blocking, "ssl.SSLSocket.recv")
    assert received == ([] if mode == "raise" else [b"hello"])


def test_ssl_recv_off_loop(
    net: Net, tls_server: LineServer, client_context: ssl.SSLContext
) -> None:
    tls = _tls_socket(net, tls_server, client_context)
    expect_clean_off_loop(lambda: tls.recv(5))


def test_ssl_non_blocking_not_flagged(
    loop_kind: str, net: Net, tls_server: LineServer, client_context: ssl.SSLContext
) -> None:
    tls = _tls_socket(net, tls_server, client_context)
    tls.setblocking(False)
    expect_clean_on_loop(loop_kind, suppressing(lambda: tls.recv(5)))


def test_ssl_wrap_without_handshake_not_flagged(
    loop_kind: str, net: Net, tls_server: LineServer, client_context: ssl.SSLContext
) -> None:
    connected = net.keep(socket.create_connection(tls_server.address))
    unconnected = net.tcp()

    def no_handshake() -> None:
        net.keep(
            client_context.wrap_socket(
                connected, server_hostname="localhost", do_handshake_on_connect=False
            )
        )
        net.keep(client_context.wrap_socket(unconnected, server_hostname="localhost"))

    expect_clean_on_loop(loop_kind, no_handshake)


def test_asyncio_tls_not_flagged(
    loop_kind: str, tls_server: LineServer, client_context: ssl.SSLContext
) -> None:
    async def main() -> bytes:
        reader, writer = await asyncio.open_connection(
            LOCALHOST, tls_server.port, ssl=client_context, server_hostname="localhost"
        )
        data = await reader.readexactly(5)
        writer.close()
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            await writer.wait_closed()
        return data

    with asyncguard.guarded(mode="raise") as guard:
        assert run_on(loop_kind, main) == b"hello"
    assert guard.violations == []


# -- DNS ----------------------------------------------------------------------------------------


def _getaddrinfo() -> None:
    socket.getaddrinfo("localhost", 80)


def _gethostbyname() -> None:
    socket.gethostbyname("localhost")


def _gethostbyname_ex() -> None:
    socket.gethostbyname_ex("localhost")


def _gethostbyaddr() -> None:
    socket.gethostbyaddr(LOCALHOST)


def _getnameinfo() -> None:
    socket.getnameinfo((LOCALHOST, 80), 0)


def _getfqdn() -> None:
    socket.getfqdn("localhost")


def _getaddrinfo_bound_before_install() -> None:
    early_bound_getaddrinfo("localhost", 80)


DNS_CASES = [
    (_getaddrinfo, "socket.getaddrinfo", "'localhost', 80"),
    (_gethostbyname, "socket.gethostbyname", "'localhost'"),
    (_gethostbyname_ex, "socket.gethostbyname_ex", "'localhost'"),
    (_gethostbyaddr, "socket.gethostbyaddr", "'127.0.0.1'"),
    (_getnameinfo, "socket.getnameinfo", "('127.0.0.1', 80), 0"),
    (_getfqdn, "socket.getfqdn", "'localhost'"),
    (_getaddrinfo_bound_before_install, "socket.getaddrinfo", "'localhost', 80"),
]


@pytest.mark.parametrize(
    ("call", "key", "args"), DNS_CASES, ids=lambda v: getattr(v, "__name__", v)
)
def test_dns(loop_kind: str, mode: str, call: Callable[[], None], key: str, args: str) -> None:
    violation = expect_violation(loop_kind, mode, call, key, category="dns")
    assert violation.args == args
    assert "use `await loop.getaddrinfo(...)` instead" in violation.message()


@pytest.mark.parametrize(
    ("call", "key", "args"), DNS_CASES, ids=lambda v: getattr(v, "__name__", v)
)
def test_dns_off_loop(call: Callable[[], None], key: str, args: str) -> None:
    expect_clean_off_loop(call)


def test_numeric_lookups_not_flagged(loop_kind: str) -> None:
    def numeric() -> None:
        socket.getaddrinfo(LOCALHOST, 80)
        socket.getaddrinfo("::1", "443", type=socket.SOCK_STREAM)
        socket.getaddrinfo(None, 0, flags=socket.AI_PASSIVE)
        socket.gethostbyname(LOCALHOST)
        socket.gethostbyname_ex(LOCALHOST)
        socket.getnameinfo((LOCALHOST, 80), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)
        with contextlib.suppress(socket.gaierror):  # AI_NUMERICHOST: fails, never looks up
            socket.getaddrinfo("localhost", 80, flags=socket.AI_NUMERICHOST)

    expect_clean_on_loop(loop_kind, numeric)


def test_service_name_lookup_is_flagged() -> None:
    def blocking() -> None:
        socket.getaddrinfo(LOCALHOST, "http")  # the service name is looked up

    expect_violation("main", "raise", blocking, "socket.getaddrinfo")


# -- asyncio's own networking is never flagged ----------------------------------------------------


def test_asyncio_streams_not_flagged(loop_kind: str) -> None:
    async def main() -> list[bytes]:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(await reader.readline())
            await writer.drain()
            writer.close()
            await writer.wait_closed()

        server = await asyncio.start_server(echo, LOCALHOST, 0)
        port = server.sockets[0].getsockname()[1]
        answers = []
        async with server:
            for host in (LOCALHOST, "localhost"):
                reader, writer = await asyncio.open_connection(host, port)
                writer.write(b"ping\n")
                await writer.drain()
                answers.append(await reader.readline())
                writer.close()
                await writer.wait_closed()
        return answers

    with asyncguard.guarded(mode="raise") as guard:
        assert run_on(loop_kind, main) == [b"ping\n", b"ping\n"]
    assert guard.violations == []


def test_loop_sock_methods_not_flagged(loop_kind: str, net: Net) -> None:
    listener = net.listener(blocking=False)
    client = net.tcp(blocking=False)

    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        accepting = asyncio.ensure_future(loop.sock_accept(listener))
        await loop.sock_connect(client, listener.getsockname())
        server_side = net.keep((await accepting)[0])
        server_side.setblocking(False)
        await loop.sock_sendall(client, b"ping")
        data = await loop.sock_recv(server_side, 4)
        infos = await loop.getaddrinfo("localhost", 80)
        assert infos
        return data

    with asyncguard.guarded(mode="raise") as guard:
        assert run_on(loop_kind, main) == b"ping"
    assert guard.violations == []


def test_loop_getaddrinfo_not_flagged(loop_kind: str) -> None:
    async def main() -> Any:
        loop = asyncio.get_running_loop()
        return await loop.getaddrinfo("localhost", 80)

    with asyncguard.guarded(mode="raise") as guard:
        assert run_on(loop_kind, main)
    assert guard.violations == []


def test_loop_waiting_in_its_selector_not_flagged(loop_kind: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        fired = asyncio.Event()
        loop.call_later(0.02, fired.set)
        for _ in range(5):
            await asyncio.sleep(0.05)
        await fired.wait()

    with asyncguard.guarded(mode="raise") as guard:
        run_on(loop_kind, main)
    assert guard.violations == []


def test_loop_selector_never_reaches_the_slow_path(loop_kind: str) -> None:
    """The loop's own selector is recognised in the wrapper, before any stack walk."""
    from asyncguard import _judge

    slow_path = _judge.on_loop_call.__code__
    reached: list[str] = []

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code is slow_path:
            reached.append(frame.f_locals["hook"].key)

    async def main() -> None:
        sys.setprofile(profile)  # this thread only: the loop's
        try:
            for _ in range(5):
                await asyncio.sleep(0.01)
        finally:
            sys.setprofile(None)

    with asyncguard.guarded(mode="raise") as guard:
        run_on(loop_kind, main)
    assert reached == []
    assert guard.violations == []


def test_loop_selector_is_unwrapped_on_its_instance() -> None:
    """After its first wait the loop's own selector calls the original ``select`` directly
    (bound on the instance); the class keeps the guarded one until uninstall, which gives the
    class back its identical original."""
    loop = asyncio.new_event_loop()
    selector = loop._selector  # type: ignore[attr-defined]
    cls = type(selector)
    owner = next(k for k in cls.__mro__ if "select" in k.__dict__)
    before = owner.__dict__["select"]
    other = cls()
    try:
        with asyncguard.guarded(mode="raise") as guard:
            assert owner.__dict__["select"] is not before  # guarded
            loop.run_until_complete(asyncio.sleep(0.01))
            bound = vars(selector)["select"]
            assert bound.__func__ is before and bound.__self__ is selector
            assert "select" not in vars(other)  # any other selector stays guarded
            with pytest.raises(asyncguard.BlockingCallError):
                loop.run_until_complete(_select_on_loop(other))
        assert owner.__dict__["select"] is before
        assert guard.violations and guard.violations[0].call.endswith(".select")
    finally:
        other.close()
        loop.close()


async def _select_on_loop(selector: selectors.BaseSelector) -> None:
    selector.select(0.01)


# -- http.client and urllib ---------------------------------------------------------------------


@pytest.fixture
def http_conn(http_url: str) -> Iterator[http.client.HTTPConnection]:
    port = int(http_url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection(LOCALHOST, port, timeout=10)
    try:
        yield conn
    finally:
        conn.close()


def test_http_connect(loop_kind: str, mode: str, http_conn: http.client.HTTPConnection) -> None:
    def blocking() -> None:
        http_conn.connect()

    violation = expect_violation(
        loop_kind, mode, blocking, "http.client.HTTPConnection.connect", category="network"
    )
    assert "httpx.AsyncClient" in violation.message()
    assert (http_conn.sock is None) == (mode == "raise")


def test_http_request(loop_kind: str, mode: str, http_conn: http.client.HTTPConnection) -> None:
    def blocking() -> None:
        http_conn.request("GET", "/hello?token=secret")

    violation = expect_violation(loop_kind, mode, blocking, "http.client.HTTPConnection.request")
    assert violation.call_expr == "http.client.HTTPConnection.request('GET', '/hello?…')"
    assert "secret" not in violation.message()


def test_http_getresponse(loop_kind: str, mode: str, http_conn: http.client.HTTPConnection) -> None:
    http_conn.request("GET", "/")
    responses: list[http.client.HTTPResponse] = []

    def blocking() -> None:
        responses.append(http_conn.getresponse())

    expect_violation(loop_kind, mode, blocking, "http.client.HTTPConnection.getresponse")
    for response in responses:
        assert response.read() == b"hello"  # off the loop again
        response.close()


def test_http_off_loop(http_conn: http.client.HTTPConnection) -> None:
    def whole_exchange() -> None:
        http_conn.request("GET", "/")
        with http_conn.getresponse() as response:
            assert response.read() == b"hello"

    expect_clean_off_loop(whole_exchange)


def test_https_connect(
    loop_kind: str, mode: str, tls_server: LineServer, client_context: ssl.SSLContext
) -> None:
    conn = http.client.HTTPSConnection(LOCALHOST, tls_server.port, context=client_context)

    def blocking() -> None:
        conn.connect()

    try:
        expect_violation(loop_kind, mode, blocking, "http.client.HTTPSConnection.connect")
    finally:
        conn.close()


def test_urlopen(loop_kind: str, mode: str, http_url: str) -> None:
    url = f"{http_url}/hello?token=secret"
    responses: list[Any] = []

    def blocking() -> None:
        responses.append(urllib.request.urlopen(url, timeout=10))

    try:
        violation = expect_violation(loop_kind, mode, blocking, "urllib.request.urlopen")
    finally:
        for response in responses:  # the body is read off the loop: reading it is blocking too
            assert response.read() == b"hello"
            response.close()
    assert len(responses) == (0 if mode == "raise" else 1)
    assert violation.call_expr == f"urllib.request.urlopen('{http_url}/hello?…')"
    assert "secret" not in violation.message()


def test_urlopen_off_loop(http_url: str) -> None:
    def fetch() -> None:
        with urllib.request.urlopen(http_url, timeout=10) as response:
            assert response.read() == b"hello"

    expect_clean_off_loop(fetch)


def test_urlopen_data_url_not_flagged(loop_kind: str) -> None:
    expect_clean_on_loop(loop_kind, lambda: urllib.request.urlopen("data:,hello").close())


def test_opener_open(loop_kind: str, mode: str, http_url: str) -> None:
    opener = urllib.request.build_opener()

    def blocking() -> None:
        opener.open(http_url, timeout=10).close()

    expect_violation(loop_kind, mode, blocking, "urllib.request.OpenerDirector.open")


# Python-level audit events (the hooked method was bound before install): raise mode stops the
# call at the event, before any socket exists; warn mode reports it untimed, and the blocking
# steps after it are reported by their own hooks.


def test_audit_http_client_connect(loop_kind: str, http_conn: http.client.HTTPConnection) -> None:
    def blocking() -> None:
        ORIGINAL_HTTP_CONNECT(http_conn)

    expect_audit_violation(loop_kind, "raise", blocking, "http.client.HTTPConnection.connect")
    assert http_conn.sock is None
    violations, _ = record(loop_kind, "warn", blocking)
    assert [v.call for v in violations] == [
        "http.client.HTTPConnection.connect",
        "socket.socket.connect",
    ]


def test_audit_urllib_request(loop_kind: str, http_url: str) -> None:
    opener = urllib.request.build_opener()

    def blocking() -> None:
        ORIGINAL_OPENER_OPEN(opener, f"{http_url}/?token=secret")

    violation = expect_audit_violation(
        loop_kind, "raise", blocking, "urllib.request.OpenerDirector.open"
    )
    assert violation.call_expr == f"urllib.request.OpenerDirector.open('{http_url}/?…')"


# -- other standard-library clients -------------------------------------------------------------


def _close_client(client: Any) -> None:
    for name in ("close", "shutdown", "_close"):
        method = getattr(client, name, None)
        if method is not None:
            with contextlib.suppress(Exception):
                method()
            return


@pytest.fixture
def clients() -> Iterator[list[Any]]:
    made: list[Any] = []
    try:
        yield made
    finally:
        for client in made:
            if isinstance(client, imaplib.IMAP4):
                with contextlib.suppress(Exception):
                    client.shutdown()
            else:
                _close_client(client)


def test_smtp(loop_kind: str, mode: str, smtp_server: LineServer, clients: list[Any]) -> None:
    def blocking() -> None:
        clients.append(smtplib.SMTP(LOCALHOST, smtp_server.port, local_hostname="client"))

    violation = expect_violation(loop_kind, mode, blocking, "smtplib.SMTP")
    assert violation.call_expr == f"smtplib.SMTP('127.0.0.1', {smtp_server.port})"


def test_smtp_without_host_looks_up_the_fqdn(loop_kind: str, mode: str) -> None:
    clients: list[smtplib.SMTP] = []

    def blocking() -> None:
        clients.append(smtplib.SMTP())  # socket.getfqdn() for the EHLO name

    expect_violation(loop_kind, mode, blocking, "smtplib.SMTP")
    expect_clean_on_loop(loop_kind, lambda: smtplib.SMTP(local_hostname="client"))


def test_smtp_connect(loop_kind: str, mode: str, smtp_server: LineServer) -> None:
    client = smtplib.SMTP(local_hostname="client")

    def blocking() -> None:
        client.connect(LOCALHOST, smtp_server.port)

    try:
        expect_violation(loop_kind, mode, blocking, "smtplib.SMTP.connect")
    finally:
        client.close()


def test_ftp_connect(loop_kind: str, mode: str, ftp_server: LineServer) -> None:
    client = ftplib.FTP()

    def blocking() -> None:
        client.connect(LOCALHOST, ftp_server.port)

    try:
        expect_violation(loop_kind, mode, blocking, "ftplib.FTP.connect")
    finally:
        client.close()


def test_ftp_constructor(
    loop_kind: str, mode: str, ftp_server: LineServer, clients: list[Any]
) -> None:
    class LocalFTP(ftplib.FTP):
        port = ftp_server.port

    def blocking() -> None:
        clients.append(LocalFTP(LOCALHOST))

    expect_violation(loop_kind, mode, blocking, "ftplib.FTP")
    expect_clean_on_loop(loop_kind, lambda: ftplib.FTP().close())


def test_pop3(loop_kind: str, mode: str, pop3_server: LineServer, clients: list[Any]) -> None:
    def blocking() -> None:
        clients.append(poplib.POP3(LOCALHOST, pop3_server.port))

    expect_violation(loop_kind, mode, blocking, "poplib.POP3")


def test_imap4(loop_kind: str, mode: str, imap_server: LineServer, clients: list[Any]) -> None:
    def blocking() -> None:
        clients.append(imaplib.IMAP4(LOCALHOST, imap_server.port))

    expect_violation(loop_kind, mode, blocking, "imaplib.IMAP4")


@pytest.mark.skipif(nntplib is None, reason="nntplib was removed in Python 3.13")
def test_nntp(loop_kind: str, mode: str, nntp_server: LineServer, clients: list[Any]) -> None:
    def blocking() -> None:
        clients.append(nntplib.NNTP(LOCALHOST, nntp_server.port))

    expect_violation(loop_kind, mode, blocking, "nntplib.NNTP")


def test_mail_clients_off_loop(
    smtp_server: LineServer, pop3_server: LineServer, imap_server: LineServer
) -> None:
    def connect_all() -> None:
        smtplib.SMTP(LOCALHOST, smtp_server.port).close()
        poplib.POP3(LOCALHOST, pop3_server.port).close()
        imaplib.IMAP4(LOCALHOST, imap_server.port).shutdown()

    expect_clean_off_loop(connect_all)


def _blank(cls: type) -> Any:
    return cls.__new__(cls)


@pytest.mark.parametrize(
    ("client", "key"),
    [
        ("smtplib", "smtplib.SMTP.connect"),
        ("ftplib", "ftplib.FTP.connect"),
        ("poplib", "poplib.POP3"),
        ("imaplib", "imaplib.IMAP4"),
        ("nntplib", "nntplib.NNTP"),
    ],
)
def test_audit_client_events(loop_kind: str, client: str, key: str) -> None:
    """The original method, bound before install: the audit event stops it before connecting."""
    port = 9  # never reached: raise mode stops the call at the event
    if client == "smtplib":
        smtp = smtplib.SMTP(local_hostname="client")

        def blocking() -> None:
            ORIGINAL_SMTP_CONNECT(smtp, LOCALHOST, port)

    elif client == "ftplib":
        ftp = ftplib.FTP()

        def blocking() -> None:
            ORIGINAL_FTP_CONNECT(ftp, LOCALHOST, port)

    elif client == "poplib":

        def blocking() -> None:
            ORIGINAL_POP3_INIT(_blank(poplib.POP3), LOCALHOST, port)

    elif client == "imaplib":

        def blocking() -> None:
            ORIGINAL_IMAP4_INIT(_blank(imaplib.IMAP4), LOCALHOST, port)

    else:
        if nntplib is None:
            pytest.skip("nntplib was removed in Python 3.13")
        original = _unwrapped(nntplib.NNTP.__init__)

        def blocking() -> None:
            original(_blank(nntplib.NNTP), LOCALHOST, port)

    violation = expect_audit_violation(loop_kind, "raise", blocking, key)
    assert violation.args == f"'127.0.0.1', {port}"


# -- select, poll and selectors -----------------------------------------------------------------


def test_select_select(loop_kind: str, mode: str, net: Net) -> None:
    a, _ = net.pair()

    def blocking() -> None:
        select.select([a], [], [], 0.01)

    violation = expect_violation(loop_kind, mode, blocking, "select.select")
    assert violation.call_expr == "select.select(…, 0.01)"
    assert "loop.add_reader" in violation.message()
    if mode == "warn":
        assert violation.duration is not None and violation.duration >= 0.009


def test_select_bound_before_install(loop_kind: str, mode: str, net: Net) -> None:
    a, _ = net.pair()

    def blocking() -> None:
        early_bound_select([a], [], [], 0.001)

    expect_violation(loop_kind, mode, blocking, "select.select")


def test_select_zero_timeout_only_polls(loop_kind: str, net: Net) -> None:
    a, _ = net.pair()
    expect_clean_on_loop(loop_kind, lambda: select.select([a], [a], [], 0))


def test_select_off_loop(net: Net) -> None:
    a, _ = net.pair()
    expect_clean_off_loop(lambda: select.select([a], [], [], 0.001))


needs_poll = pytest.mark.skipif(not hasattr(select, "poll"), reason="no select.poll here")


@needs_poll
def test_poll(loop_kind: str, mode: str) -> None:
    def blocking() -> None:
        select.poll().poll(10)

    violation = expect_violation(loop_kind, mode, blocking, "select.poll.poll")
    assert violation.call_expr == "select.poll.poll(10)"


@needs_poll
def test_poll_zero_timeout_only_polls(loop_kind: str) -> None:
    expect_clean_on_loop(loop_kind, lambda: select.poll().poll(0))


@needs_poll
def test_poll_off_loop() -> None:
    expect_clean_off_loop(lambda: select.poll().poll(1))


@needs_poll
def test_poll_objects_behave_like_the_originals(net: Net) -> None:
    original = select.poll
    a, b = net.pair()
    with asyncguard.guarded(mode="raise"):
        assert select.poll is not original
        poller = select.poll()
        assert repr(poller).startswith("<select.poll object at ")
        poller.register(a, select.POLLIN)
        assert poller.poll(0) == []
        b.sendall(b"x")
        assert poller.poll(1000) == [(a.fileno(), select.POLLIN)]
        poller.modify(a, select.POLLOUT)
        assert poller.poll(None) == [(a.fileno(), select.POLLOUT)]
        poller.unregister(a)
        with pytest.raises(KeyError):
            poller.unregister(a)
        with pytest.raises(TypeError):
            poller.poll("soon")
        with pytest.raises(TypeError):
            poller.poll(timeout=1)  # type: ignore[call-arg]
    assert select.poll is original


SELECTOR_NAMES = [
    name
    for name in (
        "SelectSelector",
        "PollSelector",
        "EpollSelector",
        "DevpollSelector",
        "KqueueSelector",
    )
    if hasattr(selectors, name)
]


@pytest.mark.parametrize("name", SELECTOR_NAMES)
def test_selector_select(loop_kind: str, mode: str, net: Net, name: str) -> None:
    selector = net.keep(getattr(selectors, name)())
    selector.register(net.pair()[0], selectors.EVENT_READ)

    def blocking() -> None:
        selector.select(0.01)

    violation = expect_violation(loop_kind, mode, blocking, f"selectors.{name}.select")
    assert violation.call_expr == f"selectors.{name}.select(0.01)"


@pytest.mark.parametrize("name", SELECTOR_NAMES)
def test_selector_poll_not_flagged(loop_kind: str, net: Net, name: str) -> None:
    selector = net.keep(getattr(selectors, name)())
    selector.register(net.pair()[0], selectors.EVENT_READ)

    def polls() -> None:
        selector.select(0)
        selector.select(-1)

    expect_clean_on_loop(loop_kind, polls)


@pytest.mark.parametrize("name", SELECTOR_NAMES)
def test_selector_off_loop(net: Net, name: str) -> None:
    selector = net.keep(getattr(selectors, name)())
    expect_clean_off_loop(lambda: selector.select(0.001))


def test_default_selector_is_covered(loop_kind: str, net: Net) -> None:
    selector = net.keep(selectors.DefaultSelector())

    def blocking() -> None:
        selector.select(0.001)

    expect_violation(loop_kind, "raise", blocking, f"selectors.{type(selector).__name__}.select")


# -- install / uninstall -------------------------------------------------------------------------


def test_uninstall_restores_every_original() -> None:
    watched: list[tuple[Any, str]] = [
        (socket.socket, "connect"),
        (socket.socket, "recv"),
        (socket.socket, "accept"),
        (socket.socket, "sendfile"),
        (ssl.SSLSocket, "recv"),
        (ssl.SSLContext, "wrap_socket"),
        (socket, "getaddrinfo"),
        (socket, "gethostbyname"),
        (http.client.HTTPConnection, "connect"),
        (urllib.request, "urlopen"),
        (select, "select"),
        (selectors.SelectSelector, "select"),
        (smtplib.SMTP, "__init__"),
    ]
    if hasattr(select, "poll"):
        watched.append((select, "poll"))
    before = {
        (id(owner), name): (vars(owner).get(name), getattr(owner, name)) for owner, name in watched
    }
    with asyncguard.guarded(mode="raise"):
        for owner, name in watched:
            assert getattr(getattr(owner, name), "__asyncguard_hook__", None) is not None, name
    for owner, name in watched:
        own, value = before[(id(owner), name)]
        assert vars(owner).get(name) is own, name
        assert getattr(owner, name) is value, name
    assert "connect" not in vars(socket.socket)  # inherited from _socket.socket again
    assert early_bound_getaddrinfo is socket.getaddrinfo


def test_excluding_the_family(loop_kind: str, net: Net) -> None:
    a = _ready_pair(net, True)

    async def main() -> None:
        a.recv(4)
        socket.getaddrinfo("localhost", 80)

    with asyncguard.guarded(mode="raise", exclude=["network"]) as guard:
        run_on(loop_kind, main)
    assert guard.violations == []
