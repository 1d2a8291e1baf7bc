"""Real services for tests, started once per session on 127.0.0.1, on free ports, in temp dirs.

Loaded by conftest (``pytest_plugins = ["services"]``); each fixture starts its service the
first time a test asks for it and stops it at the end of the session:

- ``redis_server`` -> ``(host, port)``: ``redis-server``, no persistence;
- ``memcached_server`` -> ``(host, port)``: ``memcached``, TCP only;
- ``postgres_server`` -> a libpq DSN (``"host=127.0.0.1 port=N dbname=asyncguard user=postgres"``):
  a fresh cluster made by ``initdb`` (trust authentication, TCP only, no fsync), run as the
  ``postgres`` (else ``nobody``) user when the tests run as root -- PostgreSQL refuses root;
- ``smtp_server`` -> ``(host, port, messages)``: aiosmtpd's ``Controller`` on a thread; every
  message received is appended to ``messages`` as an ``email.message.EmailMessage`` with the
  envelope in ``X-MailFrom`` / ``X-RcptTo`` headers.  The list is shared by the whole session:
  find your message by a unique subject (or clear the list first).

A missing binary or package skips the test through ``conftest.skip_service`` (a failure in CI).
Readiness is polled (a real protocol round trip), never waited for with a fixed sleep.  Every
server runs before any test installs the guard and on a thread without an asyncio loop of
its own -- except aiosmtpd's, which is given a hostname so that it makes no DNS lookup there.
"""

from __future__ import annotations

import email
import email.policy
import glob
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from conftest import skip_service

HOST = "127.0.0.1"
STARTUP_TIMEOUT = 60.0
POLL_INTERVAL = 0.02


def _ephemeral_ports() -> range:
    """The ports the kernel gives outgoing connections and ``bind(port=0)``."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return range(int(low), int(high) + 1)
    except (OSError, ValueError):
        return range(32768, 61000)  # Linux's default


def free_port() -> int:
    """A port nothing listens on now, for a server about to start.

    Chosen at random below the ephemeral range: a port from ``bind(port=0)`` is free again
    once the probe closes, and until the server binds it any outgoing connection (the suite
    makes thousands, on two workers) or another ``bind(0)`` may take it.  A port outside
    that range is taken only by another test's server choosing the same one, and the
    callers restart on another port then.
    """
    ephemeral = _ephemeral_ports()
    low, high = 20000, min(ephemeral.start, 32768)
    for _ in range(50):
        port = random.randrange(low, high) if high - low > 1000 else 0
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise RuntimeError(f"no free port found on {HOST} between {low} and {high}")


def _round_trip(port: int, request: bytes, expect: bytes) -> bool:
    """One request on a fresh TCP connection; True when the reply starts with ``expect``."""
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as sock:
            sock.sendall(request)
            reply = b""
            while len(reply) < len(expect):
                chunk = sock.recv(256)
                if not chunk:
                    break
                reply += chunk
            return reply.startswith(expect)
    except OSError:
        return False


def _log_tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-2000:]
    except OSError:
        return ""


def _wait_until(
    ready: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, log: Path
) -> None:
    """Poll ``ready()`` until it holds; fail at once (with the server's log) if it exits."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not ready():
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{_log_tail(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready after {STARTUP_TIMEOUT}s:\n{_log_tail(log)}")
        time.sleep(POLL_INTERVAL)


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _start(
    argv: list[str],
    log: Path,
    ready: Callable[[], bool],
    what: str,
    **popen: Any,
) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, **popen
        )
    try:
        _wait_until(ready, proc, what, log)
    except BaseException:
        _stop(proc, signal.SIGKILL)
        raise
    return proc


def _start_on_free_port(
    make: Callable[[int], subprocess.Popen[bytes]],
) -> tuple[int, subprocess.Popen[bytes]]:
    """Start a server on a free port; retry on another port if one was taken meanwhile."""
    for attempt in range(3):
        port = free_port()
        try:
            return port, make(port)
        except RuntimeError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


# -- Redis ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    binary = shutil.which("redis-server")
    if binary is None:
        skip_service("redis-server is not installed (apt-get install redis-server)")
    assert binary is not None
    workdir = tmp_path_factory.mktemp("redis")
    log = workdir / "redis.log"

    def make(port: int) -> subprocess.Popen[bytes]:
        argv = [
            binary,
            "--bind", HOST,
            "--port", str(port),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", str(workdir),
        ]  # fmt: skip
        return _start(argv, log, lambda: _round_trip(port, b"PING\r\n", b"+PONG"), "redis-server")

    port, proc = _start_on_free_port(make)
    try:
        yield HOST, port
    finally:
        _stop(proc)


# -- memcached --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def memcached_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    binary = shutil.which("memcached")
    if binary is None:
        skip_service("memcached is not installed (apt-get install memcached)")
    assert binary is not None
    log = tmp_path_factory.mktemp("memcached") / "memcached.log"
    user = ["-u", "nobody"] if os.geteuid() == 0 else []  # memcached refuses to run as root

    def make(port: int) -> subprocess.Popen[bytes]:
        argv = [binary, "-l", HOST, "-p", str(port), "-U", "0", "-m", "16", *user]
        return _start(argv, log, lambda: _round_trip(port, b"version\r\n", b"VERSION"), "memcached")

    port, proc = _start_on_free_port(make)
    try:
        yield HOST, port
    finally:
        _stop(proc)


# -- PostgreSQL -------------------------------------------------------------------------------


def _postgres_bin(name: str) -> str | None:
    def version(path: str) -> tuple[int, ...]:
        number = Path(path).parent.parent.name
        return tuple(int(part) for part in number.split(".") if part.isdigit())

    for bindir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        candidate = os.path.join(bindir, name)
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which(name)


def _postgres_user() -> dict[str, Any]:
    """Popen options to run PostgreSQL as an unprivileged user when we are root."""
    if os.geteuid() != 0:
        return {}
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    skip_service("running as root and neither a 'postgres' nor a 'nobody' user exists")
    return {}


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    binaries = {
        name: _postgres_bin(name) for name in ("initdb", "postgres", "pg_isready", "createdb")
    }
    missing = [name for name, path in binaries.items() if path is None]
    if missing:
        skip_service(
            f"PostgreSQL binaries not found: {', '.join(missing)} (apt-get install postgresql)"
        )
    initdb, postgres, pg_isready, createdb = (str(binaries[name]) for name in binaries)
    as_user = _postgres_user()
    # the server's user must reach its directory: under /tmp, not a root-only $TMPDIR
    parent = "/tmp" if as_user and os.path.isdir("/tmp") else None
    base = Path(tempfile.mkdtemp(prefix="asyncguard-pg-", dir=parent))
    try:
        if as_user:
            os.chown(base, as_user["user"], as_user["group"])
        data = base / "data"
        log = base / "postgres.log"
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        result = subprocess.run(
            [initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=env,
            cwd=base,
            check=False,
            **as_user,
        )
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{result.stdout.decode()}{result.stderr.decode()}")

        def make(port: int) -> subprocess.Popen[bytes]:
            argv = [
                postgres,
                "-D", str(data),
                "-p", str(port),
                "-c", f"listen_addresses={HOST}",
                "-c", "unix_socket_directories=",
                "-c", "fsync=off",
                "-c", "synchronous_commit=off",
                "-c", "full_page_writes=off",
                "-c", "max_connections=50",
            ]  # fmt: skip

            def ready() -> bool:
                check = [pg_isready, "-q", "-h", HOST, "-p", str(port), "-U", "postgres"]
                return subprocess.run(check, check=False, env=env).returncode == 0

            return _start(argv, log, ready, "postgres", env=env, cwd=base, **as_user)

        port, proc = _start_on_free_port(make)
        try:
            subprocess.run(
                [createdb, "-h", HOST, "-p", str(port), "-U", "postgres", "asyncguard"],
                check=True,
                env=env,
                stdin=subprocess.DEVNULL,
            )
            yield f"host={HOST} port={port} dbname=asyncguard user=postgres"
        finally:
            _stop(proc, signal.SIGINT)  # "fast" shutdown: disconnect clients, stop
    finally:
        shutil.rmtree(base, ignore_errors=True)


# -- SMTP -------------------------------------------------------------------------------------


class _Collect:
    """aiosmtpd handler: parse each message and keep it, with its envelope as headers."""

    def __init__(self, messages: list[EmailMessage]) -> None:
        self.messages = messages

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        content = envelope.original_content or envelope.content
        if isinstance(content, str):
            content = content.encode("utf-8")
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        message["X-MailFrom"] = envelope.mail_from
        message["X-RcptTo"] = ", ".join(envelope.rcpt_tos)
        self.messages.append(message)
        return "250 Message accepted for delivery"


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[tuple[str, int, list[EmailMessage]]]:
    try:
        from aiosmtpd.controller import Controller
    except ImportError:
        skip_service("aiosmtpd is not installed (pip install aiosmtpd)")
    messages: list[EmailMessage] = []
    controller = None
    for attempt in range(3):
        port = free_port()
        # server_hostname: else aiosmtpd calls socket.getfqdn() on its loop for every client
        controller = Controller(
            _Collect(messages), hostname=HOST, port=port, server_hostname="localhost"
        )
        try:
            controller.start()  # returns once the server answered a real connection
            break
        except Exception:
            if attempt == 2:
                raise
    assert controller is not None
    try:
        yield HOST, port, messages
    finally:
        controller.stop()
