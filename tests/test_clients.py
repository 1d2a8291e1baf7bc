"""Third-party sync clients against real local servers: HTTP (http.server), Redis, PostgreSQL,
memcached and SMTP (tests/services.py).  One section per module of ``_hooks/clients/``, then the
family as a whole: excluding one library, minimum versions, the keys."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import io
import logging
import smtplib
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from typing import Any

import httpx
import psycopg
import psycopg2
import psycopg2.extensions
import psycopg2.extras
import pymemcache
import pytest
import redis
import redis.asyncio
import requests
import urllib3
from pymemcache.client.hash import HashClient

import asyncguard
from asyncguard._env import options_from_env
from asyncguard._hooks import catalog
from asyncguard._hooks import clients as client_hooks
from asyncguard._hooks.clients import _common as client_common
from conftest import expect_clean_off_loop, expect_clean_on_loop, expect_violation, run_on

HTTP_HINT = "use an async HTTP client such as `httpx.AsyncClient`"
REDIS_HINT = "use `redis.asyncio.Redis`"
POSTGRES_HINT = "use `psycopg.AsyncConnection`"
MEMCACHED_HINT = "use an async memcached client"
SMTP_HINT = "use `aiosmtplib`"
VERBS = ["get", "options", "head", "post", "put", "patch", "delete"]


def expect_clean_async(
    loop_kind: str, main: Callable[[], Any], mode: str = "raise"
) -> list[asyncguard.Violation]:
    """No hook flags ``main()``.  The stall watchdog is off: it measures wall time, and the
    CPU work these async clients do on the loop (``httpx.AsyncClient()`` builds an SSL
    context: ~20 ms of CPU) stays under its 100 ms only on an idle machine (on a loaded
    2-CPU machine: 40-170 ms).  Stalls are tested in test_watchdog.py."""
    with asyncguard.guarded(mode=mode, stall_threshold=None) as guard:
        run_on(loop_kind, main)
    assert guard.violations == [], [v.message() for v in guard.violations]
    return guard.violations


# -- a real HTTP server on 127.0.0.1 ----------------------------------------------------------


class Handler(http.server.BaseHTTPRequestHandler):
    def _reply(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = f"{self.command} {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _reply  # noqa: N815

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="http-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# -- requests: _hooks/clients/requests.py -----------------------------------------------------


@pytest.mark.parametrize("verb", VERBS)
def test_requests_helpers(loop_kind: str, mode: str, http_url: str, verb: str) -> None:
    responses: list[requests.Response] = []

    def blocking() -> None:
        responses.append(getattr(requests, verb)(f"{http_url}/items?token=secret"))

    violation = expect_violation(loop_kind, mode, blocking, f"requests.{verb}", category="network")
    assert violation.call_expr == f"requests.{verb}('{http_url}/items?…')"
    assert HTTP_HINT in violation.message()
    if mode == "warn":
        assert responses[0].status_code == 200


def test_requests_request(loop_kind: str, mode: str, http_url: str) -> None:
    def blocking() -> None:
        requests.request("GET", f"{http_url}/r")

    violation = expect_violation(loop_kind, mode, blocking, "requests.request")
    assert violation.args == f"'GET', '{http_url}/r'"


def test_requests_api_module_is_the_same_function(loop_kind: str, http_url: str) -> None:
    def blocking() -> None:
        requests.api.get(http_url)

    expect_violation(loop_kind, "raise", blocking, "requests.get")


def test_requests_session(loop_kind: str, mode: str, http_url: str) -> None:
    with requests.Session() as session:

        def blocking() -> None:
            response = session.get(f"{http_url}/s")
            assert response.text == "GET /s"

        violation = expect_violation(loop_kind, mode, blocking, "requests.Session.request")
        assert violation.args == f"'GET', '{http_url}/s'"


def test_requests_session_send(loop_kind: str, mode: str, http_url: str) -> None:
    with requests.Session() as session:
        prepared = requests.Request("POST", f"{http_url}/p?q=1", data=b"x").prepare()

        def blocking() -> None:
            session.send(prepared)

        violation = expect_violation(loop_kind, mode, blocking, "requests.Session.send")
        assert violation.args == f"<PreparedRequest [POST] '{http_url}/p?…'>"


def test_requests_reports_once_in_warn_mode(loop_kind: str, http_url: str) -> None:
    """requests.get -> Session.request -> urllib3 -> http.client -> socket: one report."""

    def blocking() -> None:
        requests.get(http_url)

    violation = expect_violation(loop_kind, "warn", blocking, "requests.get")
    assert violation.duration is not None


def test_requests_off_the_loop_and_in_a_worker_thread(loop_kind: str, http_url: str) -> None:
    expect_clean_off_loop(lambda: requests.get(http_url).close())

    async def main() -> None:
        response = await asyncio.to_thread(requests.get, http_url)
        assert response.status_code == 200

    expect_clean_async(loop_kind, main)


def test_requests_allow_rule(loop_kind: str, http_url: str) -> None:
    async def main() -> None:
        requests.get(http_url)

    with asyncguard.guarded(mode="raise", allow=["requests.get"]) as guard:
        run_on(loop_kind, main)
    assert guard.violations == []


# -- urllib3: _hooks/clients/urllib3.py -------------------------------------------------------


@pytest.fixture(scope="module")
def pool_manager() -> Iterator[urllib3.PoolManager]:
    manager = urllib3.PoolManager()
    yield manager
    manager.clear()


def test_urllib3_pool_manager_request(
    loop_kind: str, mode: str, http_url: str, pool_manager: urllib3.PoolManager
) -> None:
    def blocking() -> None:
        response = pool_manager.request("GET", f"{http_url}/u?secret=1")
        assert response.status == 200

    violation = expect_violation(loop_kind, mode, blocking, "urllib3.PoolManager.request")
    assert violation.args == f"'GET', '{http_url}/u?…'"
    assert HTTP_HINT in violation.message()


def test_urllib3_pool_manager_urlopen(
    loop_kind: str, mode: str, http_url: str, pool_manager: urllib3.PoolManager
) -> None:
    def blocking() -> None:
        pool_manager.urlopen("GET", f"{http_url}/u")

    expect_violation(loop_kind, mode, blocking, "urllib3.PoolManager.urlopen")


def test_urllib3_connection_pool(loop_kind: str, mode: str, http_url: str) -> None:
    port = int(http_url.rsplit(":", 1)[1])
    with urllib3.HTTPConnectionPool("127.0.0.1", port) as pool:

        def request() -> None:
            pool.request("GET", "/c?x=1")

        violation = expect_violation(loop_kind, mode, request, "urllib3.HTTPConnectionPool.request")
        assert violation.args == "'GET', '/c?…'"

        def urlopen() -> None:
            pool.urlopen("GET", "/c")

        expect_violation(loop_kind, mode, urlopen, "urllib3.HTTPConnectionPool.urlopen")


def test_urllib3_request(loop_kind: str, mode: str, http_url: str) -> None:
    def blocking() -> None:
        urllib3.request("GET", http_url)

    expect_violation(loop_kind, mode, blocking, "urllib3.request")


def test_urllib3_off_the_loop(http_url: str, pool_manager: urllib3.PoolManager) -> None:
    expect_clean_off_loop(lambda: pool_manager.request("GET", http_url))
    expect_clean_off_loop(lambda: urllib3.request("GET", http_url))


# -- httpx: _hooks/clients/httpx.py -----------------------------------------------------------


@pytest.fixture(scope="module")
def httpx_client() -> Iterator[httpx.Client]:
    with httpx.Client() as client:
        yield client


def test_httpx_client(loop_kind: str, mode: str, http_url: str, httpx_client: httpx.Client) -> None:
    def blocking() -> None:
        response = httpx_client.get(f"{http_url}/x?password=1")
        assert response.text == "GET /x?password=1"

    violation = expect_violation(loop_kind, mode, blocking, "httpx.Client.send")
    assert violation.args == f"<Request('GET', '{http_url}/x?…')>"
    assert HTTP_HINT in violation.message()


HTTPX_METHODS = [
    pytest.param(lambda c, url: c.post(url, content=b"x"), id="post"),  # <- blocks
    pytest.param(lambda c, url: c.put(url), id="put"),  # <- blocks
    pytest.param(lambda c, url: c.delete(url), id="delete"),  # <- blocks
    pytest.param(lambda c, url: c.request("GET", url), id="request"),  # <- blocks
]


@pytest.mark.parametrize("call", HTTPX_METHODS)
def test_httpx_client_methods_go_through_send(
    loop_kind: str, http_url: str, httpx_client: httpx.Client, call: Callable[..., Any]
) -> None:
    def blocking() -> None:
        call(httpx_client, http_url)

    expect_violation(loop_kind, "raise", blocking, "httpx.Client.send", line_of=call)


def test_httpx_client_stream(
    loop_kind: str, mode: str, http_url: str, httpx_client: httpx.Client
) -> None:
    def blocking() -> None:
        with httpx_client.stream("GET", f"{http_url}/s"):  # <- blocks
            pass

    expect_violation(loop_kind, mode, blocking, "httpx.Client.send")


def test_httpx_streamed_response_read(
    loop_kind: str, mode: str, http_url: str, httpx_client: httpx.Client
) -> None:
    with httpx_client.stream("GET", f"{http_url}/s") as response:  # off the loop

        def blocking() -> None:
            assert response.read() == (b"GET /s" if mode == "warn" else b"")

        expect_violation(loop_kind, mode, blocking, "httpx.Response.read")
    # a response read already (every non-streamed one) is not flagged
    response = httpx_client.get(http_url)
    expect_clean_on_loop(loop_kind, response.read)


@pytest.mark.parametrize("verb", VERBS)
def test_httpx_helpers(loop_kind: str, mode: str, http_url: str, verb: str) -> None:
    def blocking() -> None:
        getattr(httpx, verb)(f"{http_url}/h")

    violation = expect_violation(loop_kind, mode, blocking, f"httpx.{verb}")
    assert violation.args == f"'{http_url}/h'"


def test_httpx_request_helper(loop_kind: str, mode: str, http_url: str) -> None:
    def blocking() -> None:
        httpx.request("PUT", http_url, content=b"data")

    violation = expect_violation(loop_kind, mode, blocking, "httpx.request")
    assert violation.args == f"'PUT', '{http_url}'"


def test_httpx_in_memory_transports_are_not_flagged(loop_kind: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="mocked")

    def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"wsgi"]

    with (
        httpx.Client(transport=httpx.MockTransport(handler)) as mocked,
        httpx.Client(transport=httpx.WSGITransport(app=wsgi_app)) as wsgi,
    ):
        expect_clean_on_loop(loop_kind, lambda: mocked.get("http://example.test/"))
        expect_clean_on_loop(loop_kind, lambda: wsgi.get("http://example.test/"))


def test_httpx_async_client_is_never_flagged(loop_kind: str, mode: str, http_url: str) -> None:
    async def main() -> None:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"{http_url}/a")
            assert response.text == "GET /a"
            async with client.stream("POST", http_url, content=b"x") as streamed:
                await streamed.aread()

    expect_clean_async(loop_kind, main, mode)


def test_httpx_off_the_loop(http_url: str, httpx_client: httpx.Client) -> None:
    expect_clean_off_loop(lambda: httpx_client.get(http_url))
    expect_clean_off_loop(lambda: httpx.get(http_url))


# -- Redis: _hooks/clients/redis.py -----------------------------------------------------------


@pytest.fixture(scope="module")
def redis_client(redis_server: tuple[str, int]) -> Iterator[redis.Redis]:
    client = redis.Redis(*redis_server)
    client.ping()  # connected off the loop, before any test
    yield client
    client.close()


def test_redis_command(loop_kind: str, mode: str, redis_client: redis.Redis) -> None:
    def blocking() -> None:
        redis_client.set("user:1", "secret-value")

    violation = expect_violation(
        loop_kind, mode, blocking, "redis.Redis.execute_command", category="network"
    )
    assert violation.args == "'SET', 'user:1', …"  # never the value
    assert REDIS_HINT in violation.message()
    if mode == "warn":
        assert redis_client.get("user:1") == b"secret-value"


def test_redis_get(loop_kind: str, mode: str, redis_client: redis.Redis) -> None:
    redis_client.set("k", "v")
    values: list[Any] = []

    def blocking() -> None:
        values.append(redis_client.get("k"))

    violation = expect_violation(loop_kind, mode, blocking, "redis.Redis.execute_command")
    assert violation.args == "'GET', 'k'"
    assert values == ([b"v"] if mode == "warn" else [])


def test_redis_credentials_are_never_shown(loop_kind: str, redis_client: redis.Redis) -> None:
    def blocking() -> None:
        redis_client.execute_command("AUTH", "hunter2")

    violation = expect_violation(loop_kind, "raise", blocking, "redis.Redis.execute_command")
    assert violation.args == "'AUTH', …"


def test_redis_pipeline(loop_kind: str, mode: str, redis_client: redis.Redis) -> None:
    results: list[Any] = []

    def blocking() -> None:
        with redis_client.pipeline() as pipe:
            pipe.set("p", "1").incr("p")  # buffered: no I/O
            results.append(pipe.execute())  # <- blocks

    expect_violation(loop_kind, mode, blocking, "redis.client.Pipeline.execute")
    assert results == ([[True, 2]] if mode == "warn" else [])


def test_redis_empty_pipeline_is_not_flagged(loop_kind: str, redis_client: redis.Redis) -> None:
    def empty() -> None:
        with redis_client.pipeline() as pipe:
            assert pipe.execute() == []

    expect_clean_on_loop(loop_kind, empty)


def test_redis_watch(loop_kind: str, mode: str, redis_client: redis.Redis) -> None:
    pipe = redis_client.pipeline()

    def blocking() -> None:
        pipe.watch("w")

    violation = expect_violation(
        loop_kind, mode, blocking, "redis.client.Pipeline.immediate_execute_command"
    )
    assert violation.args == "'WATCH', 'w'"
    pipe.reset()


def test_redis_unwatch(loop_kind: str, mode: str, redis_client: redis.Redis) -> None:
    pipe = redis_client.pipeline()
    pipe.watch("w")  # off the loop

    def blocking() -> None:
        pipe.reset()  # sends UNWATCH

    expect_violation(loop_kind, mode, blocking, "redis.client.Pipeline.reset")
    pipe.reset()
    expect_clean_on_loop(loop_kind, pipe.reset)  # not watching: nothing to send


def test_redis_pubsub(loop_kind: str, mode: str, redis_client: redis.Redis) -> None:
    pubsub = redis_client.pubsub()
    try:

        def subscribe() -> None:
            pubsub.subscribe("channel")

        violation = expect_violation(
            loop_kind, mode, subscribe, "redis.client.PubSub.execute_command"
        )
        assert violation.args == "'SUBSCRIBE', 'channel'"

        pubsub.subscribe("channel")  # off the loop

        def wait() -> None:
            pubsub.get_message(timeout=0.2)

        violation = expect_violation(loop_kind, mode, wait, "redis.client.PubSub.get_message")
        assert violation.call_expr == "redis.client.PubSub.get_message(timeout=0.2)"
        # the default timeout (0.0) only polls
        expect_clean_on_loop(loop_kind, pubsub.get_message)
    finally:
        pubsub.close()


def test_redis_asyncio_is_never_flagged(
    loop_kind: str, mode: str, redis_server: tuple[str, int]
) -> None:
    # built off the loop: redis-py's constructors read the package metadata from disk
    # (importlib.metadata.version("redis"): os.stat of sys.path), which the files family reports
    client = redis.asyncio.Redis(host=redis_server[0], port=redis_server[1])

    async def main() -> None:
        try:
            await client.set("a", "1")
            assert await client.get("a") == b"1"
            async with client.pipeline() as pipe:
                assert await pipe.incr("a").get("a").execute() == [2, b"2"]
            pubsub = client.pubsub()
            await pubsub.subscribe("channel")
            await pubsub.get_message(timeout=0.05)
            await pubsub.aclose()
        finally:
            await client.aclose()

    expect_clean_async(loop_kind, main, mode)


def test_redis_off_the_loop(redis_client: redis.Redis) -> None:
    expect_clean_off_loop(lambda: redis_client.get("k"))
    expect_clean_off_loop(lambda: redis_client.pipeline().set("x", 1).execute())


# -- psycopg2: _hooks/clients/psycopg2.py -----------------------------------------------------


@pytest.fixture
def pg2(postgres_server: str) -> Iterator[psycopg2.extensions.connection]:
    """Opened at start-up, off the loop, after install -- used later on a loop."""
    asyncguard.install("raise")
    conn = psycopg2.connect(postgres_server)
    with conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE t (x integer)")
        cur.execute("INSERT INTO t VALUES (1), (2), (3)")
    conn.commit()
    try:
        yield conn
    finally:
        conn.close()


def test_psycopg2_connect(loop_kind: str, mode: str, postgres_server: str) -> None:
    conns: list[Any] = []

    def blocking() -> None:
        conns.append(psycopg2.connect(postgres_server))

    violation = expect_violation(loop_kind, mode, blocking, "psycopg2.connect", category="database")
    assert violation.args == repr(postgres_server)
    assert POSTGRES_HINT in violation.message()
    for conn in conns:
        assert isinstance(conn, psycopg2.extensions.connection)
        conn.close()


def test_psycopg2_passwords_are_never_shown(loop_kind: str, postgres_server: str) -> None:
    def blocking() -> None:
        psycopg2.connect(f"password=hunter2 {postgres_server}")

    violation = expect_violation(loop_kind, "raise", blocking, "psycopg2.connect")
    assert "hunter2" not in violation.message()
    assert "password=…" in violation.args

    def keywords() -> None:
        psycopg2.connect(host="127.0.0.1", dbname="db", password="hunter2")

    violation = expect_violation(loop_kind, "raise", keywords, "psycopg2.connect")
    assert violation.args == "host='127.0.0.1', dbname='db', …"


def test_psycopg2_execute(loop_kind: str, mode: str, pg2: Any) -> None:
    rows: list[Any] = []

    def blocking() -> None:
        cur = pg2.cursor()
        cur.execute("SELECT x FROM t WHERE x > %s AND 'a' = 'a' ORDER BY x", (1,))  # <- blocks
        rows.extend(cur.fetchall())  # client-side: the rows came with execute

    violation = expect_violation(
        loop_kind, mode, blocking, "psycopg2.extensions.cursor.execute", category="database"
    )
    assert violation.args == repr("SELECT x FROM t WHERE x > %s AND '…' = '…' ORDER BY x") + ", …"
    assert rows == ([(2,), (3,)] if mode == "warn" else [])


@pytest.mark.parametrize(
    ("name", "call"),
    [
        (
            "executemany",
            lambda cur: cur.executemany("INSERT INTO t VALUES (%s)", [(4,)]),  # <- blocks
        ),
        ("callproc", lambda cur: cur.callproc("pg_sleep", (0,))),  # <- blocks
        (
            "copy_expert",
            lambda cur: cur.copy_expert("COPY t FROM STDIN", io.StringIO()),  # <- blocks
        ),
        ("copy_from", lambda cur: cur.copy_from(io.StringIO("8\n"), "t")),  # <- blocks
        ("copy_to", lambda cur: cur.copy_to(io.StringIO(), "t")),  # <- blocks
    ],
)
def test_psycopg2_cursor_methods(
    loop_kind: str, mode: str, pg2: Any, name: str, call: Callable[[Any], Any]
) -> None:
    cur = pg2.cursor()

    def blocking() -> None:
        call(cur)

    violation = expect_violation(
        loop_kind, mode, blocking, f"psycopg2.extensions.cursor.{name}", line_of=call
    )
    assert "<file>" in violation.args or name not in ("copy_from", "copy_to", "copy_expert")


def test_psycopg2_commit_and_rollback(loop_kind: str, mode: str, pg2: Any) -> None:
    for name in ("commit", "rollback"):
        # no transaction open: no round trip, not flagged
        expect_clean_on_loop(loop_kind, getattr(pg2, name))
        pg2.cursor().execute("INSERT INTO t VALUES (9)")  # opens a transaction, off the loop

        def blocking() -> None:
            getattr(pg2, name)()  # noqa: B023

        violation = expect_violation(
            loop_kind, mode, blocking, f"psycopg2.extensions.connection.{name}"
        )
        assert violation.call_expr == f"psycopg2.extensions.connection.{name}()"
        assert (pg2.status == psycopg2.extensions.STATUS_BEGIN) is (mode == "raise")
        pg2.rollback()


SERVER_SIDE_FETCHES = [
    ("fetchone", lambda cur: cur.fetchone()),  # <- blocks
    ("fetchmany", lambda cur: cur.fetchmany(2)),  # <- blocks
    ("fetchall", lambda cur: cur.fetchall()),  # <- blocks
    ("scroll", lambda cur: cur.scroll(1)),  # <- blocks
]


@pytest.mark.parametrize(("name", "call"), SERVER_SIDE_FETCHES)
def test_psycopg2_server_side_cursor(
    loop_kind: str, mode: str, pg2: Any, name: str, call: Callable[[Any], Any]
) -> None:
    cur = pg2.cursor(name="named", scrollable=True)
    cur.execute("SELECT x FROM t ORDER BY x")  # DECLARE, off the loop

    def blocking() -> None:
        call(cur)

    expect_violation(loop_kind, mode, blocking, f"psycopg2.extensions.cursor.{name}", line_of=call)
    cur.close()
    pg2.rollback()


def test_psycopg2_client_side_fetches_are_not_flagged(loop_kind: str, pg2: Any) -> None:
    cur = pg2.cursor()
    cur.execute("SELECT x FROM t ORDER BY x")
    expect_clean_on_loop(loop_kind, cur.fetchone)
    expect_clean_on_loop(loop_kind, lambda: cur.fetchmany(1))
    expect_clean_on_loop(loop_kind, cur.fetchall)
    pg2.rollback()


def test_psycopg2_factories(loop_kind: str, mode: str, postgres_server: str) -> None:
    asyncguard.install("raise")
    conns = [
        psycopg2.connect(postgres_server, cursor_factory=psycopg2.extras.DictCursor),
        psycopg2.connect(postgres_server, connection_factory=psycopg2.extras.RealDictConnection),
        psycopg2.connect(postgres_server, connection_factory=psycopg2.extras.LoggingConnection),
    ]
    conns[2].initialize(io.StringIO())
    try:
        for conn in conns:
            cur = conn.cursor()
            rows: list[Any] = []

            def blocking() -> None:
                cur.execute("SELECT 1 AS one")  # noqa: B023  # <- blocks
                rows.extend(cur.fetchall())  # noqa: B023

            expect_violation(loop_kind, mode, blocking, "psycopg2.extensions.cursor.execute")
            if mode == "warn":
                assert rows[0]["one"] == 1 if conn is not conns[2] else rows[0] == (1,)
        assert isinstance(conns[0].cursor(), psycopg2.extras.DictCursor)
        assert isinstance(conns[1], psycopg2.extras.RealDictConnection)
        assert isinstance(conns[1].cursor(), psycopg2.extras.RealDictCursor)
    finally:
        for conn in conns:
            conn.close()


def test_psycopg2_with_connection_commits(loop_kind: str, mode: str, pg2: Any) -> None:
    pg2.cursor().execute("INSERT INTO t VALUES (10)")

    async def main() -> None:
        with pg2:
            pass

    with asyncguard.guarded(mode=mode) as guard:
        if mode == "raise":
            with pytest.raises(asyncguard.BlockingCallError):
                run_on(loop_kind, main)
        else:
            run_on(loop_kind, main)
    assert [v.call for v in guard.violations] == ["psycopg2.extensions.connection.commit"]
    pg2.rollback()


def test_psycopg2_async_connections_are_left_alone(loop_kind: str, postgres_server: str) -> None:
    conns: list[Any] = []
    expect_clean_on_loop(
        loop_kind, lambda: conns.append(psycopg2.connect(postgres_server, async_=True))
    )
    assert type(conns[0]) is psycopg2.extensions.connection
    conns[0].close()


def test_psycopg2_off_the_loop(pg2: Any) -> None:
    def work() -> None:
        cur = pg2.cursor()
        cur.execute("SELECT 1")
        cur.fetchall()
        pg2.commit()

    expect_clean_off_loop(work)


def test_psycopg2_connections_stand_down_when_excluded(loop_kind: str, pg2: Any) -> None:
    cur = pg2.cursor()
    with asyncguard.guarded(mode="raise", exclude=["clients"]) as guard:
        run_on(loop_kind, _async(lambda: cur.execute("SELECT 1")))
    assert guard.violations == []


def _async(call: Callable[[], Any]) -> Callable[[], Any]:
    async def main() -> None:
        call()

    return main


# -- psycopg 3: _hooks/clients/psycopg.py -----------------------------------------------------


@pytest.fixture
def pg3(postgres_server: str) -> Iterator[psycopg.Connection[Any]]:
    conn = psycopg.connect(postgres_server)
    conn.execute("CREATE TEMP TABLE t (x integer)")
    conn.execute("INSERT INTO t VALUES (1), (2), (3)")
    conn.commit()
    try:
        yield conn
    finally:
        conn.close()


def test_psycopg_connect(loop_kind: str, mode: str, postgres_server: str) -> None:
    conns: list[Any] = []

    def blocking() -> None:
        conns.append(psycopg.connect(postgres_server))

    violation = expect_violation(loop_kind, mode, blocking, "psycopg.connect", category="database")
    assert violation.args == repr(postgres_server)
    assert POSTGRES_HINT in violation.message()
    for conn in conns:
        conn.close()


def test_psycopg_connection_connect(loop_kind: str, mode: str, postgres_server: str) -> None:
    class AppConnection(psycopg.Connection[Any]):
        pass

    conns: list[Any] = []

    def blocking() -> None:
        conns.append(AppConnection.connect(postgres_server, password="hunter2"))

    violation = expect_violation(loop_kind, mode, blocking, "psycopg.Connection.connect")
    assert violation.args == f"{postgres_server!r}, …"
    for conn in conns:
        assert type(conn) is AppConnection  # the classmethod still receives its class
        conn.close()


def test_psycopg_connection_execute(loop_kind: str, mode: str, pg3: Any) -> None:
    rows: list[Any] = []

    def blocking() -> None:
        rows.extend(pg3.execute("SELECT x FROM t WHERE x > %s ORDER BY x", (1,)).fetchall())

    violation = expect_violation(loop_kind, mode, blocking, "psycopg.Connection.execute")
    assert violation.args == "'SELECT x FROM t WHERE x > %s ORDER BY x', …"
    assert rows == ([(2,), (3,)] if mode == "warn" else [])


@pytest.mark.parametrize(
    ("key", "call"),
    [
        ("psycopg.Cursor.execute", lambda cur: cur.execute("SELECT 1")),  # <- blocks
        (
            "psycopg.Cursor.executemany",
            lambda cur: cur.executemany("SELECT %s", [(4,)]),  # <- blocks
        ),
        ("psycopg.Cursor.stream", lambda cur: list(cur.stream("SELECT x FROM t"))),  # <- blocks
    ],
)
def test_psycopg_cursor(
    loop_kind: str, mode: str, pg3: Any, key: str, call: Callable[[Any], Any]
) -> None:
    cur = pg3.cursor()

    def blocking() -> None:
        call(cur)

    expect_violation(loop_kind, mode, blocking, key, line_of=call)


def test_psycopg_copy(loop_kind: str, mode: str, pg3: Any) -> None:
    cur = pg3.cursor()

    def blocking() -> None:
        with cur.copy("COPY t FROM STDIN") as copy:  # <- blocks
            copy.write_row((5,))

    violation = expect_violation(loop_kind, mode, blocking, "psycopg.Cursor.copy")
    assert violation.args == "'COPY t FROM STDIN'"


def test_psycopg_commit_rollback_transaction(loop_kind: str, mode: str, pg3: Any) -> None:
    for name in ("commit", "rollback"):
        expect_clean_on_loop(loop_kind, getattr(pg3, name))  # idle: no round trip
        pg3.execute("INSERT INTO t VALUES (9)")

        def blocking() -> None:
            getattr(pg3, name)()  # noqa: B023

        expect_violation(loop_kind, mode, blocking, f"psycopg.Connection.{name}")
        pg3.rollback()

    pg3.autocommit = True

    def transaction() -> None:
        with pg3.transaction():  # <- blocks
            pass

    expect_violation(loop_kind, mode, transaction, "psycopg.Connection.transaction")


@pytest.mark.parametrize(("name", "call"), SERVER_SIDE_FETCHES)
def test_psycopg_server_cursor(
    loop_kind: str, mode: str, pg3: Any, name: str, call: Callable[[Any], Any]
) -> None:
    cur = pg3.cursor(name="named", scrollable=True)
    cur.execute("SELECT x FROM t ORDER BY x")  # DECLARE, off the loop

    def blocking() -> None:
        call(cur)

    expect_violation(loop_kind, mode, blocking, f"psycopg.ServerCursor.{name}", line_of=call)
    cur.close()
    pg3.rollback()


def test_psycopg_server_cursor_execute(loop_kind: str, mode: str, pg3: Any) -> None:
    cur = pg3.cursor(name="named")

    def blocking() -> None:
        cur.execute("SELECT x FROM t WHERE x = %s", (1,))

    violation = expect_violation(loop_kind, mode, blocking, "psycopg.ServerCursor.execute")
    assert violation.args == "'SELECT x FROM t WHERE x = %s', …"
    cur.close()
    pg3.rollback()


def test_psycopg_client_side_fetches_are_not_flagged(loop_kind: str, pg3: Any) -> None:
    cur = pg3.execute("SELECT x FROM t ORDER BY x")
    expect_clean_on_loop(loop_kind, cur.fetchone)
    expect_clean_on_loop(loop_kind, lambda: cur.fetchmany(1))
    expect_clean_on_loop(loop_kind, cur.fetchall)
    expect_clean_on_loop(loop_kind, pg3.cursor)
    pg3.rollback()


def test_psycopg_fetch_in_pipeline_mode(loop_kind: str, mode: str, pg3: Any) -> None:
    """In pipeline mode the results come back at a sync point: a fetch may wait for it."""
    with pg3.pipeline():
        cur = pg3.cursor()
        cur.execute("SELECT x FROM t ORDER BY x")  # queued, off the loop
        rows: list[Any] = []

        def blocking() -> None:
            rows.append(cur.fetchone())

        expect_violation(loop_kind, mode, blocking, "psycopg.Cursor.fetchone")
    assert rows == ([(1,)] if mode == "warn" else [])
    pg3.rollback()


def test_psycopg_async_connection_is_never_flagged(
    loop_kind: str, mode: str, postgres_server: str
) -> None:
    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(postgres_server) as conn:
            await conn.execute("CREATE TEMP TABLE a (x integer)")
            async with conn.cursor() as cur:
                await cur.executemany("INSERT INTO a VALUES (%s)", [(1,), (2,)])
                await cur.execute("SELECT sum(x) FROM a")
                assert await cur.fetchone() == (3,)
            async with conn.cursor(name="server") as named:
                await named.execute("SELECT x FROM a ORDER BY x")
                assert await named.fetchall() == [(1,), (2,)]
            async with conn.transaction():
                await conn.execute("INSERT INTO a VALUES (3)")
            await conn.commit()

    expect_clean_async(loop_kind, main, mode)


def test_psycopg_off_the_loop(postgres_server: str) -> None:
    def work() -> None:
        with psycopg.connect(postgres_server) as conn:
            conn.execute("SELECT 1").fetchall()

    expect_clean_off_loop(work)


# -- pymemcache: _hooks/clients/pymemcache.py -------------------------------------------------


@pytest.fixture(scope="module")
def memcache(memcached_server: tuple[str, int]) -> Iterator[pymemcache.Client]:
    client = pymemcache.Client(memcached_server)
    client.set("counter", "1")  # connected off the loop
    yield client
    client.close()


MEMCACHE_CALLS: list[tuple[str, Callable[[Any], Any], str]] = [
    ("set", lambda c: c.set("session:1", "secret-value"), "'session:1', …"),  # <- blocks
    ("get", lambda c: c.get("counter"), "'counter'"),  # <- blocks
    ("delete", lambda c: c.delete("gone"), "'gone'"),  # <- blocks
    ("incr", lambda c: c.incr("counter", 1), "'counter', …"),  # <- blocks
    ("add", lambda c: c.add("added", "x"), "'added', …"),  # <- blocks
    ("touch", lambda c: c.touch("counter", 60), "'counter', …"),  # <- blocks
    ("get_many", lambda c: c.get_many(["a", "b"]), "<2 keys>"),  # <- blocks
    ("set_many", lambda c: c.set_many({"a": 1, "b": 2}), "<2 keys>"),  # <- blocks
    ("delete_many", lambda c: c.delete_many(["a"]), "<1 key>"),  # <- blocks
    ("version", lambda c: c.version(), ""),  # <- blocks
]


@pytest.mark.parametrize(
    ("name", "call", "args"), MEMCACHE_CALLS, ids=[c[0] for c in MEMCACHE_CALLS]
)
def test_pymemcache(
    loop_kind: str,
    mode: str,
    memcache: pymemcache.Client,
    name: str,
    call: Callable[[Any], Any],
    args: str,
) -> None:
    def blocking() -> None:
        call(memcache)

    violation = expect_violation(
        loop_kind, mode, blocking, f"pymemcache.Client.{name}", line_of=call, category="network"
    )
    assert violation.args == args
    assert MEMCACHED_HINT in violation.message()


def test_pymemcache_pooled_and_hash_clients(
    loop_kind: str, mode: str, memcached_server: tuple[str, int]
) -> None:
    pooled = pymemcache.PooledClient(memcached_server)
    hashed = HashClient([memcached_server])
    try:
        for client in (pooled, hashed):

            def blocking() -> None:
                client.get("counter")  # noqa: B023

            expect_violation(loop_kind, mode, blocking, "pymemcache.Client.get")
    finally:
        pooled.close()
        hashed.close()


def test_pymemcache_nothing_to_do(loop_kind: str, memcache: pymemcache.Client) -> None:
    expect_clean_on_loop(loop_kind, lambda: memcache.get_many([]))
    expect_clean_off_loop(lambda: memcache.get("counter"))


# -- SMTP: _hooks/clients/smtplib.py ----------------------------------------------------------


@pytest.fixture
def smtp(smtp_server: tuple[str, int, list[EmailMessage]]) -> Iterator[smtplib.SMTP]:
    client = smtplib.SMTP(smtp_server[0], smtp_server[1], local_hostname="client")  # off the loop
    try:
        yield client
    finally:
        with contextlib.suppress(smtplib.SMTPServerDisconnected):  # quit() by a test
            client.quit()


def test_smtp_connect_is_the_network_family(
    loop_kind: str, mode: str, smtp_server: tuple[str, int, list[EmailMessage]]
) -> None:
    clients: list[smtplib.SMTP] = []

    def blocking() -> None:
        clients.append(smtplib.SMTP(smtp_server[0], smtp_server[1], local_hostname="client"))

    violation = expect_violation(loop_kind, mode, blocking, "smtplib.SMTP")
    assert violation.call_expr == f"smtplib.SMTP('127.0.0.1', {smtp_server[1]})"
    for client in clients:
        client.quit()


def test_smtp_sendmail(
    loop_kind: str,
    mode: str,
    smtp: smtplib.SMTP,
    smtp_server: tuple[str, int, list[EmailMessage]],
) -> None:
    subject = f"sendmail {loop_kind} {mode}"
    body = f"Subject: {subject}\r\n\r\nsecret body\r\n"

    def blocking() -> None:
        smtp.sendmail("from@example.com", ["to@example.com"], body)

    violation = expect_violation(loop_kind, mode, blocking, "smtplib.SMTP.sendmail")
    assert violation.args == "'from@example.com', ['to@example.com'], <message>"
    assert SMTP_HINT in violation.message()
    delivered = [m for m in smtp_server[2] if m["Subject"] == subject]
    assert len(delivered) == (1 if mode == "warn" else 0)
    if delivered:
        assert delivered[0]["X-RcptTo"] == "to@example.com"


def test_smtp_send_message(
    loop_kind: str,
    mode: str,
    smtp: smtplib.SMTP,
    smtp_server: tuple[str, int, list[EmailMessage]],
) -> None:
    message = EmailMessage()
    message["Subject"] = f"send_message {loop_kind} {mode}"
    message["From"] = "from@example.com"
    message["To"] = "to@example.com"
    message.set_content("hello")

    def blocking() -> None:
        smtp.send_message(message)

    expect_violation(loop_kind, mode, blocking, "smtplib.SMTP.send_message")
    delivered = [m for m in smtp_server[2] if m["Subject"] == message["Subject"]]
    assert len(delivered) == (1 if mode == "warn" else 0)


def test_smtp_login_and_starttls(loop_kind: str, mode: str, smtp: smtplib.SMTP) -> None:
    # the server offers neither AUTH nor TLS: in warn mode the calls run and are refused
    def login() -> None:
        with contextlib.suppress(smtplib.SMTPException):
            smtp.login("user", "hunter2")  # <- blocks

    violation = expect_violation(loop_kind, mode, login, "smtplib.SMTP.login")
    assert violation.args == "'user', '…'"

    def starttls() -> None:
        with contextlib.suppress(smtplib.SMTPException):
            smtp.starttls()  # <- blocks

    expect_violation(loop_kind, mode, starttls, "smtplib.SMTP.starttls")


SMTP_COMMANDS = [
    ("ehlo", lambda smtp: smtp.ehlo(), ""),  # <- blocks
    ("helo", lambda smtp: smtp.helo(), ""),  # <- blocks
    ("noop", lambda smtp: smtp.noop(), ""),  # <- blocks
    ("rset", lambda smtp: smtp.rset(), ""),  # <- blocks
    ("mail", lambda smtp: smtp.mail("from@example.com"), "'from@example.com'"),  # <- blocks
    ("verify", lambda smtp: smtp.verify("to@example.com"), "'to@example.com'"),  # <- blocks
    ("docmd", lambda smtp: smtp.docmd("NOOP"), "'NOOP'"),  # <- blocks
    ("quit", lambda smtp: smtp.quit(), ""),  # <- blocks
]


@pytest.mark.parametrize(("name", "call", "args"), SMTP_COMMANDS, ids=[c[0] for c in SMTP_COMMANDS])
def test_smtp_commands(
    loop_kind: str,
    mode: str,
    smtp: smtplib.SMTP,
    name: str,
    call: Callable[[smtplib.SMTP], Any],
    args: str,
) -> None:
    def blocking() -> None:
        call(smtp)

    violation = expect_violation(loop_kind, mode, blocking, f"smtplib.SMTP.{name}", line_of=call)
    assert violation.args == args
    assert SMTP_HINT in violation.message()


def test_smtp_not_connected_is_not_flagged(loop_kind: str) -> None:
    client = smtplib.SMTP(local_hostname="client")

    def refused() -> None:
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.sendmail("a@example.com", ["b@example.com"], "body")
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.quit()

    expect_clean_on_loop(loop_kind, refused)


def test_smtp_off_the_loop(smtp_server: tuple[str, int, list[EmailMessage]]) -> None:
    def send() -> None:
        with smtplib.SMTP(smtp_server[0], smtp_server[1], local_hostname="client") as client:
            client.sendmail("a@example.com", ["b@example.com"], "Subject: off\r\n\r\nbody")

    expect_clean_off_loop(send)


# -- the family as a whole: _hooks/clients/__init__.py ----------------------------------------


def test_keys_are_known() -> None:
    keys = catalog.known_keys()
    for key in (
        "requests.get",
        "requests.Session.request",
        "urllib3.PoolManager.request",
        "httpx.Client.send",
        "redis.Redis.execute_command",
        "psycopg2.connect",
        "psycopg2.extensions.cursor.execute",
        "psycopg.Cursor.execute",
        "pymemcache.Client.get",
        "smtplib.SMTP.sendmail",
    ):
        assert key in keys, key


def test_asyncguard_never_imports_the_clients() -> None:
    """The hooks wait for the application's own import; uninstall restores the originals."""
    code = textwrap.dedent(
        """
        import sys
        import asyncguard
        CLIENTS = ("requests", "urllib3", "httpx", "redis", "psycopg", "psycopg2", "pymemcache")
        asyncguard.install("raise")
        assert not [m for m in CLIENTS if m in sys.modules], sys.modules.keys()
        import requests, redis, psycopg, psycopg2
        original = requests.get.__wrapped__
        assert requests.get.__asyncguard_hook__.key == "requests.get"
        assert requests.api.get is requests.get
        assert redis.Redis.execute_command.__asyncguard_hook__ is not None
        assert psycopg.Connection.connect.__asyncguard_hook__ is not None
        asyncguard.uninstall()
        assert requests.get is original and requests.api.get is original
        assert not hasattr(redis.Redis.execute_command, "__asyncguard_hook__")
        assert not hasattr(psycopg.Connection.connect, "__asyncguard_hook__")
        asyncguard.install("raise", exclude=["clients"])
        assert not hasattr(requests.get, "__asyncguard_hook__")
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# -- one library excluded (exclude=["clients.<library>"]) -------------------------------------


@pytest.fixture
def one_call_per_library(
    http_url: str,
    pool_manager: urllib3.PoolManager,
    httpx_client: httpx.Client,
    redis_client: redis.Redis,
    pg2: Any,
    pg3: Any,
    memcache: pymemcache.Client,
    smtp: smtplib.SMTP,
) -> dict[str, Callable[[], Any]]:
    """A blocking call of each library on a client made off the loop (psycopg2's connection
    while it was hooked: a guarded subclass), by library name."""

    def pg2_select() -> Any:
        with pg2.cursor() as cur:
            cur.execute("SELECT 42")
            return cur.fetchall()

    return {
        "requests": lambda: requests.get(f"{http_url}/r").text,
        "urllib3": lambda: pool_manager.request("GET", f"{http_url}/u").data,
        "httpx": lambda: httpx_client.get(f"{http_url}/x").text,
        "redis": lambda: redis_client.echo("hi"),
        "psycopg2": pg2_select,
        "psycopg": lambda: pg3.execute("SELECT 42").fetchone(),
        "pymemcache": lambda: memcache.set("excluded", "1"),
        "smtplib": lambda: smtp.noop()[0],
    }


# what each call reports while its library is hooked ...
HOOKED_KEYS = {
    "requests": "requests.get",
    "urllib3": "urllib3.PoolManager.request",
    "httpx": "httpx.Client.send",
    "redis": "redis.Redis.execute_command",
    "psycopg2": "psycopg2.extensions.cursor.execute",
    "psycopg": "psycopg.Connection.execute",
    "pymemcache": "pymemcache.Client.set",
    "smtplib": "smtplib.SMTP.noop",
}
# ... and what it returns when the library is excluded, from the real service (the network and
# files families are excluded too: they would see its sockets, and requests' look for ~/.netrc)
EXCLUDED_RESULTS = {
    "requests": "GET /r",
    "urllib3": b"GET /u",
    "httpx": "GET /x",
    "redis": b"hi",
    "psycopg2": [(42,)],
    "psycopg": (42,),
    "pymemcache": True,
    "smtplib": 250,
}


@pytest.mark.parametrize("library", list(HOOKED_KEYS))
def test_excluding_one_library_leaves_the_others_hooked(
    loop_kind: str, library: str, one_call_per_library: dict[str, Callable[[], Any]], pg2: Any
) -> None:
    assert "__asyncguard_base__" in vars(type(pg2))  # psycopg2 stands down by itself
    results: dict[str, Any] = {}
    raised: list[str] = []

    async def main() -> None:
        for name, call in one_call_per_library.items():
            try:
                results[name] = call()
            except asyncguard.BlockingCallError as exc:
                raised.append(exc.violation.call)

    exclude = [f"clients.{library}", "network", "files"]
    with asyncguard.guarded(mode="raise", exclude=exclude, stall_threshold=None) as guard:
        run_on(loop_kind, main)
    expected = [key for name, key in HOOKED_KEYS.items() if name != library]
    if library == "requests":  # its own hooks are gone; urllib3's, underneath, see the call
        expected.insert(0, "urllib3.HTTPConnectionPool.urlopen")
        assert results == {}
    else:
        assert results == {library: EXCLUDED_RESULTS[library]}
    assert raised == expected
    assert guard.calls == expected


def test_excluding_one_library_unpatches_only_it() -> None:
    asyncguard.install("raise", exclude=["clients.redis"])
    assert not hasattr(redis.Redis.execute_command, "__asyncguard_hook__")
    assert not hasattr(redis.client.Pipeline.execute, "__asyncguard_hook__")
    assert requests.get.__asyncguard_hook__.key == "requests.get"
    assert psycopg.Connection.execute.__asyncguard_hook__ is not None
    asyncguard.install("raise", exclude=[])  # changing exclude re-patches
    assert redis.Redis.execute_command.__asyncguard_hook__.key == "redis.Redis.execute_command"
    asyncguard.install("raise", exclude=["clients"])
    assert not hasattr(requests.get, "__asyncguard_hook__")
    assert not hasattr(redis.Redis.execute_command, "__asyncguard_hook__")


def test_exclude_names_every_library() -> None:
    assert catalog.library_names() == tuple(f"clients.{name}" for name in client_hooks.REGISTERED)
    with pytest.raises(ValueError) as info:
        asyncguard.install("raise", exclude=["redis"])
    message = str(info.value)
    assert message.startswith(
        "exclude = ['redis'] is not valid: unknown hook family 'redis'; choose from 'sleep', "
    )
    assert "'clients', or one library: 'clients.requests', 'clients.urllib3'" in message
    assert "'clients.redis'" in message and "'clients.smtplib'" in message
    assert asyncguard._guard.current() is None
    assert options_from_env({"ASYNC_GUARD_EXCLUDE": "clients.redis, network"}) == {
        "exclude": ("clients.redis", "network")
    }


# -- the libraries' minimum versions ----------------------------------------------------------


def _pretend_installed(monkeypatch: pytest.MonkeyPatch, versions: dict[str, str]) -> list[str]:
    """Make the version lookup of the clients' gate (``_common.installed_version``, which reads
    the package metadata) answer ``versions`` for those libraries; return the names it is
    asked for.  The libraries, their import and their calls stay real."""
    asked: list[str] = []
    real = client_common.installed_version

    def installed_version(library: client_common.Library) -> str | None:
        asked.append(library.name)
        return versions.get(library.name) or real(library)

    monkeypatch.setattr(client_common, "installed_version", installed_version)
    monkeypatch.setattr(client_common, "_logged", set())
    return asked


TOO_OLD = "redis 3.5.3 is older than 4.2.0, the oldest version asyncguard's hooks were written for"


def test_too_old_library_is_not_hooked_and_says_why(
    loop_kind: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    redis_client: redis.Redis,
    http_url: str,
) -> None:
    """redis 3.5.3 is simulated: monkeypatching the version lookup is the only fake here (the
    installed redis is recent); redis, requests and their calls are real.  Its hooks are not
    applied, the fact is logged once (INFO) and listed by ``not_enabled()``; the other
    libraries are hooked as usual."""
    asked = _pretend_installed(monkeypatch, {"redis": "3.5.3"})
    assert client_hooks.not_enabled() == {"redis": TOO_OLD}
    caplog.set_level(logging.INFO, logger="asyncguard")
    values: list[Any] = []

    async def main() -> None:
        values.append(redis_client.echo("not hooked"))  # runs: no redis hook
        with pytest.raises(asyncguard.BlockingCallError):
            requests.get(http_url)

    # the network family would see redis's socket
    with asyncguard.guarded(mode="raise", exclude=["network"], stall_threshold=None) as guard:
        assert not hasattr(redis.Redis.execute_command, "__asyncguard_hook__")
        assert not hasattr(redis.client.Pipeline.execute, "__asyncguard_hook__")
        assert requests.get.__asyncguard_hook__.key == "requests.get"
        run_on(loop_kind, main)
    assert values == [b"not hooked"]
    assert guard.calls == ["requests.get"]
    assert "redis" in asked and "requests" in asked
    logged = [r for r in caplog.records if r.name == "asyncguard" and "redis 3.5.3" in r.message]
    assert [(r.levelno, r.getMessage()) for r in logged] == [
        (logging.INFO, f"{TOO_OLD}: its calls are not hooked")
    ]
    asyncguard.install("raise")  # installed again: still not hooked, not logged again
    assert not hasattr(redis.Redis.execute_command, "__asyncguard_hook__")
    assert len([r for r in caplog.records if "redis 3.5.3" in r.message]) == 1
    assert client_hooks.not_enabled() == {"redis": TOO_OLD}


def test_recent_enough_libraries_are_all_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    """The versions installed here, and a library at exactly its minimum, are hooked."""
    assert client_hooks.not_enabled() == {}
    _pretend_installed(monkeypatch, {"redis": "4.2", "httpx": "0.18.0", "psycopg": "3.0.0"})
    assert client_hooks.not_enabled() == {}
    _pretend_installed(monkeypatch, {"httpx": "0.17.1", "psycopg2": "2.6.2", "pymemcache": "2.0"})
    assert set(client_hooks.not_enabled()) == {"httpx", "psycopg2", "pymemcache"}


def test_versions_are_checked_when_the_library_is_imported() -> None:
    """Never at asyncguard's import or install: only once the application imports a library
    (the post-import hook).  The old version is simulated as above (the version lookup is the
    only fake); the imports and the patching are real."""
    code = textwrap.dedent(
        """
        import logging, sys
        import asyncguard
        from asyncguard._hooks.clients import _common

        asked = []
        real = _common.installed_version

        def installed_version(library):
            asked.append(library.name)
            return "3.5.3" if library.name == "redis" else real(library)

        _common.installed_version = installed_version
        logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s %(message)s")
        asyncguard.install("raise")
        assert asked == [], asked
        import redis
        assert asked == ["redis"], asked
        assert not hasattr(redis.Redis.execute_command, "__asyncguard_hook__")
        import requests  # imports urllib3 first
        assert asked == ["redis", "urllib3", "requests"], asked
        assert requests.get.__asyncguard_hook__.key == "requests.get"
        asyncguard.install("raise", exclude=["clients.httpx"])  # re-patches: asks again
        assert sorted(asked[3:]) == ["redis", "requests", "urllib3"], asked
        assert not hasattr(redis.Redis.execute_command, "__asyncguard_hook__")
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("asyncguard active in process ")  # the INFO line at install
    assert lines[1:] == [
        f"asyncguard {TOO_OLD}: its calls are not hooked",
        "ok",
    ]


def test_minimum_versions() -> None:
    minimums = {library.name: library.minimum for library in client_hooks.LIBRARIES}
    assert minimums == {
        "requests": "1.0.0",
        "urllib3": "1.0",
        "httpx": "0.18.0",
        "redis": "4.2.0",
        "psycopg2": "2.7",
        "psycopg": "3.0",
        "pymemcache": "2.1.0",
        "smtplib": None,  # the standard library's
    }
    assert client_common.release("4.2.0rc1") == client_common.release("4.2") == (4, 2)
    assert client_common.release("2.9.9 (dt dec pq3 ext lo64)") == (2, 9, 9)
    assert client_common.release("unknown") is None


# -- the keys ---------------------------------------------------------------------------------

CLIENT_KEYS = {
    "requests": [
        "requests.request",
        *(f"requests.{verb}" for verb in VERBS),
        "requests.Session.request",
        "requests.Session.send",
    ],
    "urllib3": [
        "urllib3.request",
        "urllib3.PoolManager.request",
        "urllib3.PoolManager.urlopen",
        "urllib3.HTTPConnectionPool.request",
        "urllib3.HTTPConnectionPool.urlopen",
    ],
    "httpx": [
        "httpx.Client.send",
        "httpx.Response.read",
        "httpx.request",
        *(f"httpx.{verb}" for verb in VERBS),
    ],
    "redis": [
        "redis.Redis.execute_command",
        "redis.client.Pipeline.execute",
        "redis.client.Pipeline.immediate_execute_command",
        "redis.client.Pipeline.reset",
        "redis.client.PubSub.execute_command",
        "redis.client.PubSub.get_message",
    ],
    "psycopg2": [
        "psycopg2.connect",
        "psycopg2.extensions.connection.commit",
        "psycopg2.extensions.connection.rollback",
        *(
            f"psycopg2.extensions.cursor.{name}"
            for name in [
                "execute",
                "executemany",
                "callproc",
                "copy_from",
                "copy_to",
                "copy_expert",
                "fetchone",
                "fetchmany",
                "fetchall",
                "scroll",
            ]
        ),
    ],
    "psycopg": [
        "psycopg.connect",
        "psycopg.Connection.connect",
        "psycopg.Connection.execute",
        "psycopg.Connection.commit",
        "psycopg.Connection.rollback",
        "psycopg.Connection.transaction",
        *(
            f"psycopg.Cursor.{name}"
            for name in [
                "execute",
                "executemany",
                "copy",
                "stream",
                "fetchone",
                "fetchmany",
                "fetchall",
            ]
        ),
        *(
            f"psycopg.ServerCursor.{name}"
            for name in ["execute", "fetchone", "fetchmany", "fetchall", "scroll"]
        ),
    ],
    "pymemcache": [
        f"pymemcache.Client.{name}"
        for name in [
            "set",
            "add",
            "replace",
            "append",
            "prepend",
            "cas",
            "get",
            "gets",
            "delete",
            "incr",
            "decr",
            "touch",
            "set_many",
            "set_multi",
            "get_many",
            "get_multi",
            "gets_many",
            "delete_many",
            "delete_multi",
            "stats",
            "version",
            "flush_all",
            "cache_memlimit",
            "raw_command",
            "quit",
            "shutdown",
        ]
    ],
    "smtplib": [
        f"smtplib.SMTP.{name}"
        for name in [
            "sendmail",
            "send_message",
            "login",
            "starttls",
            "ehlo",
            "helo",
            "noop",
            "rset",
            "quit",
            "mail",
            "rcpt",
            "data",
            "verify",
            "docmd",
        ]
    ],
}


def test_known_calls_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every key of each library's module, as before the family became a package; a library
    excluded or too old keeps its keys (allow rules naming them stay valid)."""
    by_library = {
        library.name: [hook.key for hook in library.hooks] + [key for key, _, _ in library.extra]
        for library in client_hooks.LIBRARIES
    }
    assert by_library == CLIENT_KEYS
    known = asyncguard.known_calls()
    assert {key for keys in CLIENT_KEYS.values() for key in keys} <= set(known)
    _pretend_installed(monkeypatch, {"redis": "3.5.3"})
    asyncguard.install("raise", exclude=["clients.psycopg", "clients.requests"])
    assert asyncguard.known_calls() == known
    # rules may name them
    asyncguard.install("raise", allow=["redis.Redis.execute_command", "psycopg.connect"])
