"""No secret of the user's escapes through the guard.

A known secret (made at run time, so no source line holds it) goes through every call that
takes credentials — DSNs and connection keywords, ``auth=`` and credential headers, SMTP and
Redis authentication, Django's password hashing and ``authenticate`` — on an event loop, in
warn and raise mode, with every sink on: the log, JSON lines, ``guarded()`` collectors,
``on_violation`` callbacks, summaries, the middleware's response header and the raised error.
It must appear in none of them, not even cut short.  Then the frames: an exception through a
hooked call shows no frame of ours (Django's technical 500 page, Sentry, pytest), and a call
Django protects with ``sensitive_variables`` keeps that protection.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import http.server
import json
import logging
import os
import secrets
import smtplib
import socket
import subprocess
import sys
import textwrap
import threading
import traceback
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import psycopg2
import pytest
import redis
import requests
import urllib3

import asyncguard
from asyncguard import _guard
from conftest import run_on
from djangotest.fixtures import django_project  # noqa: F401 - the fixture, used below

SECRET = "Zq" + secrets.token_hex(12)
FRAGMENT = SECRET[:6]  # a cut-off secret is a leak too
HEADERS = {
    "Authorization": f"Bearer {SECRET}",
    "Proxy-Authorization": f"Basic {SECRET}",
    "Cookie": f"sessionid={SECRET}",
    "Set-Cookie": f"csrftoken={SECRET}",
    "X-Api-Key": SECRET,
}


def leaks(texts: list[str]) -> list[str]:
    return [text for text in texts if FRAGMENT in text]


def release_connections() -> None:
    """Close the Django connections this context opened (Django 6.1 keeps a connection opened
    in a coroutine in that context only: a fixture's teardown cannot see it)."""
    if "django.db" in sys.modules:
        from django.db import connections

        with asyncguard.allow_blocking():
            connections.close_all()


# -- every sink, for one blocking call -------------------------------------------------------------


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def _violation_texts(violation: asyncguard.Violation) -> list[str]:
    return [
        violation.message(),
        violation.call_expr,
        violation.args,
        violation.hint,
        repr(violation),
        str(violation.request),
        str(violation.samples),
    ]


def everything_written(mode: str, tmp_path: Path, call: Callable[[], Any]) -> list[str]:
    """Run ``call()`` on a loop under ``guarded(mode)`` with every sink on; return all they
    wrote (and the raised error's text)."""
    handler = _Lines()
    logger = logging.getLogger("asyncguard")
    logger.addHandler(handler)
    json_path = tmp_path / f"guard-{mode}.jsonl"
    called: list[asyncguard.Violation] = []
    raised: list[str] = []

    async def main() -> None:
        try:
            call()
        except asyncguard.BlockingCallError as exc:
            raised.extend([str(exc), repr(exc), "".join(traceback.format_exception(exc))])
        except Exception:  # the service refused the credentials: not what is tested
            pass
        finally:
            release_connections()

    try:
        with asyncguard.guarded(
            mode=mode, json=str(json_path), on_violation=called.append, min_duration=0
        ) as collector:
            run_on("main", main)
            guard = _guard.current()
            assert guard is not None
            summary = guard.summary()
    finally:
        logger.removeHandler(handler)
    assert collector.violations, "the call was not reported: nothing was tested"
    texts = [*handler.lines, json_path.read_text(), summary, *raised]
    for violation in [*collector.violations, *called]:
        texts += _violation_texts(violation)
    return texts


# -- the calls -------------------------------------------------------------------------------------


class _Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self._reply()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._reply()

    def _reply(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def http_port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _http_calls(port: int) -> dict[str, Callable[[], Any]]:
    base = f"http://127.0.0.1:{port}"
    with_credentials = f"http://user:{SECRET}@127.0.0.1:{port}/login?token={SECRET}#{SECRET}"

    def requests_get() -> None:
        requests.get(
            f"{base}/p?token={SECRET}",
            auth=("user", SECRET),
            headers=HEADERS,
            cookies={"sessionid": SECRET},
            timeout=5,
        ).close()

    def requests_url() -> None:
        requests.get(with_credentials, timeout=5).close()

    def requests_post_form() -> None:
        requests.post(f"{base}/login", {"username": "u", "password": SECRET}, timeout=5).close()

    def requests_session() -> None:
        with requests.Session() as session:
            session.request("GET", with_credentials, headers=HEADERS, timeout=5).close()

    def httpx_get() -> None:
        httpx.get(f"{base}/p?api_key={SECRET}", headers=HEADERS, auth=("user", SECRET))

    def httpx_client() -> None:
        with httpx.Client(headers=HEADERS, auth=("user", SECRET)) as client:
            client.post(with_credentials, data={"password": SECRET})

    def urllib3_request() -> None:
        with urllib3.PoolManager() as pool:
            pool.request("GET", with_credentials, headers=HEADERS, fields={"password": SECRET})

    def http_client_request() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", f"/p?token={SECRET}", headers=HEADERS)
            conn.getresponse().read()
        finally:
            conn.close()

    def urllib_urlopen() -> None:
        request = urllib.request.Request(with_credentials, headers=HEADERS)
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()

    return {
        "requests.get": requests_get,
        "requests.get(url with credentials)": requests_url,
        "requests.post(form with a password)": requests_post_form,
        "requests.Session.request": requests_session,
        "httpx.get": httpx_get,
        "httpx.Client": httpx_client,
        "urllib3.PoolManager.request": urllib3_request,
        "http.client.HTTPConnection.request": http_client_request,
        "urllib.request.urlopen": urllib_urlopen,
    }


@pytest.mark.parametrize("mode", ["warn", "raise"])
@pytest.mark.parametrize(
    "name",
    list(_http_calls(0)),
)
def test_http_credentials_are_never_written(
    name: str, mode: str, http_port: int, tmp_path: Path
) -> None:
    texts = everything_written(mode, tmp_path, _http_calls(http_port)[name])
    assert leaks(texts) == []


def test_raw_http_headers_sent_on_a_socket_are_never_written(
    http_port: int, tmp_path: Path
) -> None:
    request = (
        f"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {SECRET}\r\n"
        f"Cookie: sessionid={SECRET}\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", http_port))
    try:
        texts = everything_written("warn", tmp_path, lambda: sock.sendall(request))
    finally:
        sock.close()
    assert leaks(texts) == []


def _postgres_calls(libpq: str) -> dict[str, Callable[[], Any]]:
    params = dict(item.split("=", 1) for item in libpq.split())
    uri = (
        f"postgresql://{params['user']}:{SECRET}@{params['host']}:{params['port']}/"
        f"{params['dbname']}?password={SECRET}"
    )

    def close(conn: Any) -> None:
        with asyncguard.allow_blocking():
            conn.close()

    return {
        "psycopg2.connect(uri)": lambda: close(psycopg2.connect(uri)),
        "psycopg2.connect(password=...)": lambda: close(psycopg2.connect(libpq, password=SECRET)),
        "psycopg2.connect('... password=...')": lambda: close(
            psycopg2.connect(f"{libpq} password='{SECRET}'")
        ),
        "psycopg.connect(uri)": lambda: close(psycopg.connect(uri)),
        "psycopg.connect(password=...)": lambda: close(psycopg.connect(libpq, password=SECRET)),
        "psycopg.Connection.connect": lambda: close(
            psycopg.Connection.connect(f"{libpq} password={SECRET}")
        ),
    }


@pytest.mark.parametrize("mode", ["warn", "raise"])
@pytest.mark.parametrize("name", list(_postgres_calls("host=h port=1 dbname=d user=u")))
def test_database_passwords_are_never_written(
    name: str, mode: str, postgres_server: str, tmp_path: Path
) -> None:
    texts = everything_written(mode, tmp_path, _postgres_calls(postgres_server)[name])
    assert leaks(texts) == []


@pytest.fixture
def closing_server() -> Iterator[int]:
    """A TCP server that accepts each connection and closes it (a MySQL client fails its
    handshake there, after the guard saw it connect)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                conn, _ = listener.accept()
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join()
        listener.close()


@pytest.mark.parametrize("mode", ["warn", "raise"])
@pytest.mark.parametrize("keyword", ["password", "passwd"])
def test_pymysql_passwords_are_never_written(
    keyword: str, mode: str, closing_server: int, tmp_path: Path
) -> None:
    pymysql = pytest.importorskip("pymysql")

    def call() -> None:
        with warnings.catch_warnings():  # passwd= is pymysql's deprecated spelling
            warnings.simplefilter("ignore", DeprecationWarning)
            pymysql.connect(
                host="127.0.0.1",
                port=closing_server,
                user="u",
                connect_timeout=2,
                **{keyword: SECRET},
            )

    texts = everything_written(mode, tmp_path, call)
    assert leaks(texts) == []


@pytest.mark.parametrize("mode", ["warn", "raise"])
@pytest.mark.parametrize("how", ["password=", "url", "AUTH", "CONFIG SET requirepass"])
def test_redis_passwords_are_never_written(
    how: str, mode: str, redis_server: tuple[str, int], tmp_path: Path
) -> None:
    host, port = redis_server

    def call() -> None:
        if how == "password=":
            client = redis.Redis(host=host, port=port, password=SECRET)
        elif how == "url":
            client = redis.Redis.from_url(f"redis://:{SECRET}@{host}:{port}/0")
        else:
            client = redis.Redis(host=host, port=port)
        try:
            if how == "AUTH":
                client.execute_command("AUTH", SECRET)
            elif how == "CONFIG SET requirepass":
                client.execute_command("CONFIG SET", "requirepass", SECRET)
            else:
                client.ping()
        finally:
            with asyncguard.allow_blocking():
                if how == "CONFIG SET requirepass":
                    with contextlib.suppress(Exception):
                        client.execute_command("AUTH", SECRET)
                        client.execute_command("CONFIG SET", "requirepass", "")
                client.close()

    texts = everything_written(mode, tmp_path, call)
    assert leaks(texts) == []


@pytest.mark.parametrize("mode", ["warn", "raise"])
def test_smtp_login_password_is_never_written(
    mode: str, smtp_server: tuple[str, int, list[Any]], tmp_path: Path
) -> None:
    host, port, _ = smtp_server
    client = smtplib.SMTP(host, port, timeout=5)  # connected off the loop
    try:
        texts = everything_written(mode, tmp_path, lambda: client.login("user", SECRET))
    finally:
        client.close()
    assert leaks(texts) == []


# -- Django: password hashing and authenticate -----------------------------------------------------


@pytest.fixture
def django_user(django_project: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:  # noqa: F811
    from django.contrib.auth import get_user_model
    from django.db import connections

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # the guard judges the ORM here
    yield get_user_model().objects.get(username="alice")
    connections.close_all()  # an unclosed SQLite connection is a ResourceWarning: an error


def _django_calls(user: Any) -> dict[str, Callable[[], Any]]:
    # module attributes read at call time: the guard is installed after this runs
    from django.contrib import auth
    from django.contrib.auth import hashers

    encoded = user.password
    calls: dict[str, Callable[[], Any]] = {
        "authenticate": lambda: auth.authenticate(username="alice", password=SECRET),
        "hashers.check_password": lambda: hashers.check_password(SECRET, encoded),
        "hashers.make_password": lambda: hashers.make_password(SECRET),
        "user.check_password": lambda: user.check_password(SECRET),
        "user.set_password": lambda: user.set_password(SECRET),
    }
    if hasattr(hashers, "verify_password"):  # Django 5.0+
        calls["hashers.verify_password"] = lambda: hashers.verify_password(SECRET, encoded)
    return calls


DJANGO_CALLS = [
    "authenticate",
    "hashers.check_password",
    "hashers.make_password",
    "user.check_password",
    "user.set_password",
    "hashers.verify_password",
]


@pytest.mark.parametrize("mode", ["warn", "raise"])
@pytest.mark.parametrize("name", DJANGO_CALLS)
def test_django_passwords_are_never_written(
    name: str, mode: str, django_user: Any, tmp_path: Path
) -> None:
    calls = _django_calls(django_user)
    if name not in calls:
        pytest.skip(f"{name} does not exist in this Django version")
    texts = everything_written(mode, tmp_path, calls[name])
    assert leaks(texts) == []


# -- the request: its query string and the response header -----------------------------------------


def test_request_label_and_response_header_hold_no_secret(http_port: int, tmp_path: Path) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        requests.get(f"http://127.0.0.1:{http_port}/", headers=HEADERS, timeout=5).close()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    sent: list[dict[str, Any]] = []
    middleware = asyncguard.AsyncGuardMiddleware(app, mode="warn", debug_header=True)

    async def main() -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/account",
            "raw_path": f"/account?token={SECRET}".encode(),
            "query_string": f"token={SECRET}".encode(),
            "root_path": "",
            "headers": [(b"authorization", f"Bearer {SECRET}".encode())],
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8000),
        }

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await middleware(scope, receive, send)

    with asyncguard.guarded(mode="warn") as collector:
        run_on("main", main)
    (violation,) = collector.violations
    assert violation.request == "GET /account"
    texts = _violation_texts(violation) + [repr(message) for message in sent]
    assert any(b"x-asyncguard-blocking" in repr(m).lower().encode() for m in sent), sent
    assert leaks(texts) == []


# -- the stall watchdog: the stalled source line ---------------------------------------------------


def test_a_stalled_source_line_shows_no_secret(tmp_path: Path) -> None:
    """The watchdog shows the line that held the loop; a literal credential on it is not
    shown (the module is written here, so that only it holds the secret)."""
    module = tmp_path / "stalls_with_a_literal_secret.py"
    module.write_text(
        textwrap.dedent(
            f"""
            import hashlib

            def stall():
                return hashlib.pbkdf2_hmac("sha256", b"x", b"s", 400_000), dict(password="{SECRET}")
            """
        )
    )
    sys.path.insert(0, str(tmp_path))
    try:
        import stalls_with_a_literal_secret as stalls  # type: ignore[import-not-found]

        async def main() -> None:
            for _ in range(3):
                stalls.stall()
                await asyncio.sleep(0.05)

        handler = _Lines()
        logging.getLogger("asyncguard").addHandler(handler)
        try:
            with asyncguard.guarded(mode="warn", stall_threshold=0.02) as collector:
                run_on("main", main)
        finally:
            logging.getLogger("asyncguard").removeHandler(handler)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("stalls_with_a_literal_secret", None)
    stalls_seen = [v for v in collector.violations if v.call == "stall"]
    assert stalls_seen, [v.message() for v in collector.violations]
    assert any("pbkdf2_hmac" in v.args for v in stalls_seen), [v.args for v in stalls_seen]
    texts = [*handler.lines]
    for violation in stalls_seen:
        texts += _violation_texts(violation)
    assert leaks(texts) == []


# -- frames: what error pages and trackers show ----------------------------------------------------


class TypeErrorBackend:
    """Django's own test backend for ``test_authenticate_sensitive_variables``."""

    def authenticate(self, request: Any, username: str | None = None, password: str = "") -> Any:
        raise TypeError


def _protect_backend() -> None:
    from django.views.decorators.debug import sensitive_variables

    if "__wrapped__" not in vars(TypeErrorBackend.authenticate):
        TypeErrorBackend.authenticate = sensitive_variables("password")(  # type: ignore[method-assign]
            TypeErrorBackend.authenticate
        )


def _exception(call: Callable[[], Any], where: str) -> BaseException:
    """The exception ``call()`` raises, off any loop or on one (warn mode: the engine's frames
    are on the stack while the original runs)."""
    box: list[BaseException] = []

    def catch() -> None:
        try:
            call()
        except BaseException as exc:
            box.append(exc)

    async def main() -> None:
        catch()
        release_connections()

    if where == "no loop":
        catch()
    else:
        run_on("main", main)
    assert box, "the call did not raise"
    return box[0]


def _own_frames(exc: BaseException) -> list[Any]:
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        if str(tb.tb_frame.f_globals.get("__name__", "")).startswith("asyncguard"):
            frames.append(tb.tb_frame)
        tb = tb.tb_next
    return frames


@pytest.mark.parametrize("where", ["no loop", "loop"])
def test_authenticate_keeps_django_sensitive_variables_protection(
    where: str, django_user: Any
) -> None:
    """Django's own ``test_authenticate_sensitive_variables``, with the guard installed."""
    from django.contrib import auth
    from django.test import RequestFactory, override_settings
    from django.views.debug import technical_500_response

    _protect_backend()
    backend = f"{__name__}.TypeErrorBackend"
    with asyncguard.guarded(mode="warn"), override_settings(AUTHENTICATION_BACKENDS=[backend]):
        exc = _exception(lambda: auth.authenticate(username="alice", password=SECRET), where)
        assert isinstance(exc, TypeError)
        response = technical_500_response(
            RequestFactory().get("/"), type(exc), exc, exc.__traceback__
        )
    page = response.content.decode()
    assert FRAGMENT not in page
    assert "TypeErrorBackend" in page
    assert "credentials" in page  # Django's own frame, its variable cleansed
    for frame in _own_frames(exc):  # Python 3.10: the one frame a re-raise puts back
        assert FRAGMENT not in repr(frame.f_locals)


def _sensitive_failures() -> dict[str, Callable[[], Any]]:
    from django.contrib.auth import hashers

    return {
        "make_password": lambda: hashers.make_password(SECRET, hasher="no-such-hasher"),
        "check_password": lambda: hashers.check_password(SECRET, "x", preferred="no-such"),
        "psycopg2.connect": lambda: psycopg2.connect(
            f"host=127.0.0.1 port=1 dbname=d user=u password={SECRET} connect_timeout=1"
        ),
    }


@pytest.mark.parametrize("mode", ["warn", "raise"])
@pytest.mark.parametrize("where", ["no loop", "loop"])
@pytest.mark.parametrize("name", ["make_password", "check_password", "psycopg2.connect"])
def test_no_frame_of_ours_holds_a_credential(
    name: str, where: str, mode: str, django_user: Any
) -> None:
    with asyncguard.guarded(mode=mode):
        exc = _exception(_sensitive_failures()[name], where)
    if mode == "raise" and where == "loop":
        assert isinstance(exc, asyncguard.BlockingCallError)
    own = _own_frames(exc)
    if sys.version_info >= (3, 11):
        assert own == [], [f.f_code.co_name for f in own]
    for frame in own:
        assert FRAGMENT not in repr(frame.f_locals), frame.f_code.co_name


@pytest.mark.parametrize("mode", ["warn", "raise"])
@pytest.mark.parametrize("where", ["no loop", "loop"])
def test_error_pages_show_no_frame_of_ours(where: str, mode: str, django_user: Any) -> None:
    """Any hooked call (here ``time.sleep`` given a bad argument, and a refused connection):
    Django's error page and report skip our frames, pytest hides them, and each is marked."""
    import time

    from django.views.debug import ExceptionReporter

    calls = [
        lambda: time.sleep("one second"),  # type: ignore[arg-type]
        lambda: socket.create_connection(("127.0.0.1", 1), timeout=1),
        lambda: requests.get("http://127.0.0.1:1/", auth=("user", SECRET), timeout=1),
    ]
    for call in calls:
        with asyncguard.guarded(mode=mode):
            exc = _exception(call, where)
        for frame in _own_frames(exc):
            assert frame.f_locals.get("__traceback_hide__") is True, frame.f_code.co_name
            assert frame.f_locals.get("__tracebackhide__") is True, frame.f_code.co_name
        reporter = ExceptionReporter(None, type(exc), exc, exc.__traceback__)
        shown = [frame["filename"] for frame in reporter.get_traceback_frames()]
        assert not [f for f in shown if f.startswith(str(Path(asyncguard.__file__).parent))]
        excinfo = pytest.ExceptionInfo.from_exception(exc)
        entries = excinfo.traceback.filter(excinfo)
        assert not [e for e in entries if "asyncguard" in str(e.frame.f_globals.get("__name__"))]


SENTRY_SCRIPT = """
import json, os, sys
import django
from django.conf import settings

settings.configure(
    INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes"],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    AUTHENTICATION_BACKENDS=["sentry_probe.TypeErrorBackend"],
)
django.setup()
import sentry_sdk
from sentry_sdk.transport import Transport

events = []


class Capture(Transport):
    def capture_envelope(self, envelope):
        for item in envelope.items:
            if item.type == "event":
                events.append(item.payload.json)


sentry_sdk.init(dsn="http://key@127.0.0.1:9/1", transport=Capture, include_local_variables=True,
                default_integrations=True)
import asyncguard
if sys.argv[1] != "none":
    asyncguard.install(mode=sys.argv[1])
import requests
from django.contrib.auth import authenticate, hashers

# the secret is read where it is passed: no frame of this script holds it in a variable
calls = [
    lambda: authenticate(username="u", password=os.environ["PROBE_SECRET"]),
    lambda: hashers.make_password(os.environ["PROBE_SECRET"], hasher="no-such-hasher"),
    lambda: requests.get("http://127.0.0.1:1/", auth=("u", os.environ["PROBE_SECRET"]), timeout=1),
]


def main():
    for call in calls:
        try:
            call()
        except Exception as exc:
            sentry_sdk.capture_exception(exc)


main()
sentry_sdk.flush()
print(json.dumps(events))
"""

PROBE_MODULE = """
from django.views.decorators.debug import sensitive_variables


class TypeErrorBackend:
    @sensitive_variables("password")
    def authenticate(self, request, username=None, password=None):
        raise TypeError
"""


def _sentry_events(mode: str, tmp_path: Path) -> list[dict[str, Any]]:
    tmp_path.mkdir()
    (tmp_path / "sentry_probe.py").write_text(PROBE_MODULE)
    (tmp_path / "probe.py").write_text(SENTRY_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(tmp_path / "probe.py"), mode],
        cwd=tmp_path,
        env={**os.environ, "PROBE_SECRET": SECRET, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    events: list[dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(events) == 3, done.stdout
    return events


def _frames(event: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        frame
        for value in event["exception"]["values"]
        for frame in (value.get("stacktrace") or {}).get("frames", [])
    ]


def _exposed(event: dict[str, Any]) -> list[tuple[str, str]]:
    """``(function, variable)`` of each frame variable in the event that shows the secret."""
    return [
        (str(frame.get("function")), name)
        for frame in _frames(event)
        for name, value in (frame.get("vars") or {}).items()
        if FRAGMENT in json.dumps(value)
    ]


@pytest.mark.parametrize("mode", ["warn", "off"])
def test_sentry_events_show_no_frame_of_ours_and_no_more_secrets(mode: str, tmp_path: Path) -> None:
    """A real sentry-sdk (its Django integration on, frame locals captured) and a transport
    that keeps the events, for ``authenticate`` and ``make_password`` failing and a refused
    ``requests.get(auth=...)``: no frame of ours in any event, and the secret shown in exactly
    the variables it is shown in without asyncguard (Sentry does not know Django's
    ``sensitive_variables``: Django's own wrapper frames show ``func_kwargs`` either way)."""
    pytest.importorskip("sentry_sdk")
    baseline = _sentry_events("none", tmp_path / "none")
    guarded = _sentry_events(mode, tmp_path / mode)
    for event in guarded:
        frames = _frames(event)
        assert frames
        assert not [f for f in frames if str(f.get("module", "")).startswith("asyncguard")]
    assert [_exposed(e) for e in guarded] == [_exposed(e) for e in baseline]
