"""The django family, through Django's real request handling: async views of ``djangotest``
served by ``AsyncClient`` (and by ``ASGIHandler`` called directly) on a main-thread loop, a
loop on a worker thread and uvloop, in raise and warn mode.  Each violation must point at the
view's own line; the same calls in sync views (run by Django in a thread) and Django's async
APIs are never flagged.

Django's settings are process-wide: the ``django_project`` fixture configures them once for
the whole test process (``djangotest.configure``), with a SQLite database and file cache,
media and session directories under a temporary directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

import asyncguard
from conftest import (
    call_line,
    expect_clean_off_loop,
    expect_clean_on_loop,
    expect_violation,
    run_on,
)
from djangotest.fixtures import django_project  # noqa: F401 - the fixture, used below

django = pytest.importorskip("django")

DJANGO = django.VERSION[:2]
UNSAFE = "DJANGO_ALLOW_ASYNC_UNSAFE"
SESSIONS = "django.contrib.sessions.backends."


# -- the project ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _project(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> Iterator[None]:
    """Every test starts with cold template caches, seeded files and cache keys, no open
    database connection, and ``DJANGO_ALLOW_ASYNC_UNSAFE`` set (tests of Django's own
    refusal unset it)."""
    request.getfixturevalue("django_project")
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage
    from django.template import autoreload

    autoreload.reset_loaders()
    for name in ("seed.txt", "doomed.txt"):
        if not default_storage.exists(name):
            default_storage.save(name, ContentFile(b"seed"))
    seed_cache("file")
    monkeypatch.setenv(UNSAFE, "true")
    with caplog.at_level(logging.ERROR, logger="asyncguard"):
        yield
    release_resources()
    errors = [r.getMessage() for r in caplog.records if r.name == "asyncguard"]
    assert not [e for e in errors if "internal error" in e], errors


def seed_cache(alias: str) -> None:
    from django.core.cache import caches

    cache = caches[alias]
    cache.set("color", "blue")
    cache.set("counter", 1)
    release_resources()


@contextlib.contextmanager
def async_unsafe_allowed() -> Iterator[None]:
    previous = os.environ.get(UNSAFE)
    os.environ[UNSAFE] = "true"
    try:
        yield
    finally:
        if previous is None:
            del os.environ[UNSAFE]
        else:
            os.environ[UNSAFE] = previous


def release_resources() -> None:
    """Close what this thread (database connections) and context (cache clients) opened:
    unclosed sockets and SQLite connections are ResourceWarnings, errors here."""
    from django.core.cache import caches
    from django.db import connections

    with asyncguard.allow_blocking(), async_unsafe_allowed():
        for cache in caches.all(initialized_only=True):
            client = cache.__dict__.get("_cache")
            for pool in getattr(client, "_pools", {}).values():  # RedisCache
                pool.disconnect()
            cache.close()
        connections.close_all()


# -- requests ------------------------------------------------------------------------------------


@dataclass
class Outcome:
    violations: list[asyncguard.Violation] = field(default_factory=list)
    response: Any = None
    error: BaseException | None = None


def serve(
    loop_kind: str,
    mode: str,
    path: str,
    *,
    cookies: dict[str, str] | None = None,
    asgi: bool = False,
) -> Outcome:
    """GET ``path`` on a loop of ``loop_kind`` under ``guarded(mode)``, through
    ``AsyncClient`` (or ``ASGIHandler`` with ``asgi=True``)."""
    from django.test import AsyncClient

    client = AsyncClient()
    for name, value in (cookies or {}).items():
        client.cookies[name] = value

    async def main() -> Any:
        try:
            if asgi:
                return await asgi_get(path)
            return await client.get(path)
        finally:
            release_resources()

    outcome = Outcome()
    # the hooks are what these tests check: a loop late on a loaded machine is the watchdog's
    # business (tests/test_watchdog.py), not a finding here
    with asyncguard.guarded(mode=mode, stall_threshold=None) as guard:
        try:
            outcome.response = run_on(loop_kind, main)
        except Exception as exc:
            outcome.error = exc
    outcome.violations = list(guard.violations)
    return outcome


async def asgi_get(path: str, app: Any = None) -> tuple[int, bytes]:
    """One GET through ``django.core.handlers.asgi.ASGIHandler`` (or ``app`` wrapping one), as
    a server would do it."""
    from django.core.handlers.asgi import ASGIHandler

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    requested = False
    finished = asyncio.Event()
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await finished.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            finished.set()

    await (app or ASGIHandler())(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body


def check(
    outcome: Outcome,
    loop_kind: str,
    mode: str,
    view: Callable[..., Any],
    key: str,
    *,
    error: type[BaseException] | None = None,
    count: int = 1,
    ran: bool = True,
) -> asyncguard.Violation:
    """``count`` violations ``key`` at the view's ``# <- blocks`` line; in raise mode the
    request raised our error, in warn mode it ran (or raised ``error``) and the call was timed
    (unless it never ran: ``ran=False``)."""
    messages = [v.message() for v in outcome.violations]
    assert [v.call for v in outcome.violations] == [key] * count, messages
    violation = outcome.violations[0]
    for each in outcome.violations:
        assert each.location == (view.__code__.co_filename, call_line(view), view.__name__), (
            each.message()
        )
        assert each.category == "django"
        assert each.thread == ("loop-worker" if loop_kind == "thread" else "MainThread")
        assert each.task is not None
    if mode == "raise":
        assert isinstance(outcome.error, asyncguard.BlockingCallError), outcome.error
        assert outcome.error.violation is violation
        assert str(outcome.error) == raised_text(violation, error)
        if error is not None:  # where Django refuses the call, its exception class too
            assert isinstance(outcome.error, error), type(outcome.error).__mro__
        assert violation.duration is None
    else:
        if error is not None:
            assert isinstance(outcome.error, error), outcome.error
        else:
            assert outcome.error is None, outcome.error
            assert outcome.response.status_code == 200
        if ran:
            assert violation.duration is not None and violation.duration >= 0
        else:
            assert violation.duration is None
    return violation


DJANGO_SENTENCE = "You cannot call this from an async context - use a thread or sync_to_async."


def raised_text(violation: asyncguard.Violation, error: type[BaseException] | None) -> str:
    """Our message; where Django refuses the call (``SynchronousOnlyOperation``), Django's
    sentence first (code matching Django's message keeps working)."""
    if error is None or error.__name__ != "SynchronousOnlyOperation":
        return violation.message()
    return f"{DJANGO_SENTENCE} {violation.message()}"


def clean(outcome: Outcome) -> Any:
    assert outcome.violations == [], [v.message() for v in outcome.violations]
    assert outcome.error is None, outcome.error
    assert outcome.response.status_code == 200, outcome.response.content
    return outcome.response


def views() -> Any:
    from djangotest import views

    return views


# -- ORM -----------------------------------------------------------------------------------------

ORM_VIEWS = [
    ("orm_get", "SELECT djangotest.Item"),
    ("orm_list", "SELECT djangotest.Item"),
    ("orm_count", "SELECT djangotest.Item"),
    ("orm_exists", "SELECT djangotest.Item"),
    ("orm_iterator", "SELECT djangotest.Item"),
    ("orm_update", "UPDATE djangotest.Item"),
    ("orm_create", "INSERT djangotest.Item"),
    ("orm_related", "SELECT djangotest.Category"),
    ("raw_cursor", "\"UPDATE djangotest_item SET quantity = 1 WHERE name = '…'\""),
    ("connect", "connect"),
]


@pytest.mark.parametrize(("name", "args"), ORM_VIEWS)
def test_orm(loop_kind: str, mode: str, name: str, args: str) -> None:
    view = getattr(views(), name)
    violation = check(serve(loop_kind, mode, f"/{name}/"), loop_kind, mode, view, "django.db.query")
    assert violation.call_expr == f"django.db.query({args})"
    assert "await Model.objects.aget(...)" in violation.hint
    assert "async for obj in queryset" in violation.hint


def test_orm_message(mode: str) -> None:
    violation = check(
        serve("main", mode, "/orm_get/"), "main", mode, views().orm_get, "django.db.query"
    )
    message = violation.message()
    assert message.startswith("django.db.query(SELECT djangotest.Item) ")
    assert "tests/djangotest/views.py:" in message or "djangotest/views.py:" in message
    assert "(orm_get)" in message
    assert "'apple'" not in message  # the query's values are never shown


def test_transaction_atomic(loop_kind: str, mode: str) -> None:
    """BEGIN, then (warn mode: the block ran) COMMIT, both at the ``with`` line."""
    outcome = serve(loop_kind, mode, "/atomic/")
    violation = check(
        outcome,
        loop_kind,
        mode,
        views().atomic,
        "django.db.query",
        count=1 if mode == "raise" else 2,
    )
    assert [v.args for v in outcome.violations] == ["BEGIN"] + (
        ["COMMIT"] if mode == "warn" else []
    )
    assert violation.call_expr == "django.db.query(BEGIN)"


def test_orm_without_unsafe_env(loop_kind: str, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without DJANGO_ALLOW_ASYNC_UNSAFE the query is still named (once) before Django
    refuses it; in warn mode Django's own SynchronousOnlyOperation goes on, and the message
    says Django refused it (it did not run, so nothing was timed)."""
    from django.core.exceptions import SynchronousOnlyOperation

    monkeypatch.delenv(UNSAFE)
    outcome = serve(loop_kind, mode, "/orm_get/")
    violation = check(
        outcome,
        loop_kind,
        mode,
        views().orm_get,
        "django.db.query",
        error=SynchronousOnlyOperation,
        ran=False,
    )
    if mode == "warn":  # it never ran: said so, and nothing timed
        assert violation.refused_by == "Django" and violation.duration is None
        assert "was refused by Django on the event loop (it did not run) in " in str(violation)
        assert "blocked the event loop for" not in str(violation)


def test_orm_with_unsafe_env_runs_and_is_timed(loop_kind: str) -> None:
    """With DJANGO_ALLOW_ASYNC_UNSAFE Django lets the query run: warn mode times it."""
    outcome = serve(loop_kind, "warn", "/orm_get/")
    (violation,) = [v for v in outcome.violations if v.call == "django.db.query"][:1]
    assert violation.refused_by is None and violation.duration is not None
    assert "blocked the event loop for" in str(violation)


def test_orm_none_is_not_a_query(loop_kind: str) -> None:
    clean(serve(loop_kind, "raise", "/orm_none/"))


def test_sync_view_orm_not_flagged(loop_kind: str) -> None:
    clean(serve(loop_kind, "raise", "/sync_orm/"))


def test_async_orm_not_flagged(loop_kind: str) -> None:
    clean(serve(loop_kind, "raise", "/good_orm/"))


def test_orm_off_loop(mode: str) -> None:
    from djangotest.models import Item

    with asyncguard.guarded(mode=mode) as guard:
        assert Item.objects.get(name="apple").name == "apple"
        assert Item.objects.count() == 3
    assert guard.violations == []


# -- Django's own SynchronousOnlyOperation ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "refused"),
    [("synchronous_only", "legacy_sync_api"), ("connection_close", "DatabaseWrapper.close")],
)
def test_synchronous_only_operation(
    loop_kind: str, mode: str, name: str, refused: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.core.exceptions import SynchronousOnlyOperation

    monkeypatch.delenv(UNSAFE)
    outcome = serve(loop_kind, mode, f"/{name}/")
    violation = check(
        outcome,
        loop_kind,
        mode,
        getattr(views(), name),
        "django.utils.asyncio.async_unsafe",
        error=SynchronousOnlyOperation,
        ran=False,
    )
    assert violation.call_expr == f"django.utils.asyncio.async_unsafe({refused})"
    assert "SynchronousOnlyOperation" in violation.hint
    # one format for users, and still Django's exception type for code that catches it
    assert isinstance(outcome.error, SynchronousOnlyOperation)
    if mode == "raise":
        assert str(outcome.error) == raised_text(violation, SynchronousOnlyOperation)
    else:
        assert "async context" in str(outcome.error)  # Django's own message, unchanged


def test_synchronous_only_operation_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Allowed (a rule, ``allow_blocking``): not reported; Django still refuses the call."""
    from django.core.exceptions import SynchronousOnlyOperation

    monkeypatch.delenv(UNSAFE)
    from djangotest.views import legacy_sync_api

    async def main() -> None:
        with asyncguard.allow_blocking("django.utils.asyncio.async_unsafe"):
            with pytest.raises(SynchronousOnlyOperation) as info:
                legacy_sync_api()
        assert not isinstance(info.value, asyncguard.BlockingCallError)

    with asyncguard.guarded(mode="raise") as guard:
        run_on("main", main)
    assert guard.violations == []


def test_synchronous_only_operation_raised_by_user_code() -> None:
    """Only Django's ``async_unsafe`` refusal is reported, not the exception class used
    elsewhere."""
    from django.core.exceptions import SynchronousOnlyOperation

    async def main() -> None:
        with pytest.raises(SynchronousOnlyOperation):
            raise SynchronousOnlyOperation("mine")

    with asyncguard.guarded(mode="raise") as guard:
        run_on("main", main)
    assert guard.violations == []


def test_synchronous_only_error_pickles(monkeypatch: pytest.MonkeyPatch) -> None:
    import pickle

    from django.core.exceptions import SynchronousOnlyOperation

    monkeypatch.delenv(UNSAFE)
    outcome = serve("main", "raise", "/synchronous_only/")
    error = pickle.loads(pickle.dumps(outcome.error))
    assert isinstance(error, SynchronousOnlyOperation)
    assert isinstance(error, asyncguard.BlockingCallError)
    assert str(error) == str(outcome.error)


# -- cache ---------------------------------------------------------------------------------------


@pytest.fixture
def redis_cache(redis_server: tuple[str, int]) -> Iterator[str]:
    host, port = redis_server
    yield from _extra_cache(
        "redis",
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://{host}:{port}/0",
        },
    )


@pytest.fixture
def memcached_cache(memcached_server: tuple[str, int]) -> Iterator[str]:
    host, port = memcached_server
    yield from _extra_cache(
        "memcached",
        {
            "BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
            "LOCATION": f"{host}:{port}",
        },
    )


def _extra_cache(alias: str, config: dict[str, Any]) -> Iterator[str]:
    from django.conf import settings
    from django.test import override_settings

    with override_settings(CACHES={**settings.CACHES, alias: config}):
        seed_cache(alias)
        yield alias


@pytest.fixture(params=["file", "db", "redis", "memcached"])
def blocking_cache(request: pytest.FixtureRequest) -> str:
    alias = str(request.param)
    if alias in ("redis", "memcached"):
        request.getfixturevalue(f"{alias}_cache")
    else:
        seed_cache(alias)
    return alias


@pytest.mark.parametrize("method", ["get", "set", "get_many", "incr"])
def test_cache(loop_kind: str, mode: str, blocking_cache: str, method: str) -> None:
    outcome = serve(loop_kind, mode, f"/cache_call/{blocking_cache}/{method}/")
    key = f"django.core.cache.cache.{method}"
    violation = check(outcome, loop_kind, mode, views().cache_call, key)
    assert f"await cache.a{method}(...)" in violation.hint
    if method in ("get", "set", "incr"):
        first = {"get": "'color'", "set": "'color', …", "incr": "'counter'"}[method]
        assert violation.call_expr == f"{key}({first})"
        assert "'blue'" not in violation.message()  # values are never shown


CACHE_METHODS = [
    "get", "set", "add", "delete", "touch", "has_key", "get_many", "set_many", "delete_many",
    "get_or_set", "incr", "decr", "incr_version", "clear",
]  # fmt: skip


@pytest.mark.parametrize("method", CACHE_METHODS)
def test_cache_methods(mode: str, blocking_cache: str, method: str) -> None:
    outcome = serve("main", mode, f"/cache_call/{blocking_cache}/{method}/")
    check(outcome, "main", mode, views().cache_call, f"django.core.cache.cache.{method}")


def test_cache_contains(loop_kind: str, mode: str) -> None:
    outcome = serve(loop_kind, mode, "/cache_contains/file/")
    check(outcome, loop_kind, mode, views().cache_contains, "django.core.cache.cache.has_key")


@pytest.mark.parametrize("method", ["get", "set", "get_many", "incr", "get_or_set", "clear"])
def test_locmem_cache_not_flagged(loop_kind: str, method: str) -> None:
    seed_cache("locmem")
    clean(serve(loop_kind, "raise", f"/cache_call/locmem/{method}/"))


def test_sync_view_cache_not_flagged(loop_kind: str, blocking_cache: str) -> None:
    clean(serve(loop_kind, "raise", f"/sync_cache_call/{blocking_cache}/get/"))


def test_async_cache_api_not_flagged(loop_kind: str, blocking_cache: str) -> None:
    clean(serve(loop_kind, "raise", f"/good_cache/{blocking_cache}/"))


# -- storage -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "shown"),
    [
        ("save", "'uploads/new.txt', …"),
        ("exists", "'seed.txt'"),
        ("delete", "'doomed.txt'"),
        ("listdir", "''"),
        ("size", "'seed.txt'"),
        ("get_modified_time", "'seed.txt'"),
        ("get_accessed_time", "'seed.txt'"),
        ("get_created_time", "'seed.txt'"),
    ],
)
def test_storage(loop_kind: str, mode: str, method: str, shown: str) -> None:
    if method == "get_created_time":
        from django.core.files.storage import default_storage

        try:
            default_storage.get_created_time("seed.txt")
        except (NotImplementedError, OSError) as exc:  # no birth time on this filesystem
            pytest.skip(f"get_created_time is not supported here: {exc}")
    key = f"django.core.files.storage.default_storage.{method}"
    outcome = serve(loop_kind, mode, f"/storage_call/{method}/")
    violation = check(outcome, loop_kind, mode, views().storage_call, key)
    assert violation.call_expr == f"{key}({shown})"
    assert f"sync_to_async(default_storage.{method})" in violation.hint


def test_storage_open(loop_kind: str, mode: str) -> None:
    outcome = serve(loop_kind, mode, "/storage_open/")
    violation = check(
        outcome,
        loop_kind,
        mode,
        views().storage_open,
        "django.core.files.storage.default_storage.open",
    )
    assert violation.call_expr.endswith(".open('seed.txt')")


def test_in_memory_storage_not_flagged(loop_kind: str) -> None:
    from django.core.files.base import ContentFile
    from django.core.files.storage import InMemoryStorage

    storage = InMemoryStorage()

    async def main() -> None:
        storage.save("a.txt", ContentFile(b"a"))
        storage.open("a.txt").close()

    with asyncguard.guarded(mode="raise") as guard:
        run_on(loop_kind, main)
    assert guard.violations == []


def test_sync_view_storage_not_flagged(loop_kind: str) -> None:
    clean(serve(loop_kind, "raise", "/sync_storage/"))


def test_storage_in_thread_not_flagged(loop_kind: str) -> None:
    clean(serve(loop_kind, "raise", "/good_storage/"))


# -- templates -----------------------------------------------------------------------------------

TEMPLATE_VIEWS = [
    ("template_render", "django.shortcuts.render", "request, 'djangotest/page.html'"),
    (
        "template_render_to_string",
        "django.template.loader.render_to_string",
        "'djangotest/page.html'",
    ),
    ("template_get", "django.template.loader.get_template", "'djangotest/page.html'"),
    (
        "template_select",
        "django.template.loader.select_template",
        "['djangotest/missing.html', 'djangotest/page.html']",
    ),
]


@pytest.mark.parametrize(("name", "key", "shown"), TEMPLATE_VIEWS)
def test_template_read_from_disk(
    loop_kind: str, mode: str, name: str, key: str, shown: str
) -> None:
    """A template the cached loader has not loaded yet is read from disk: reported once under
    the call the view made (never again as ``open``)."""
    outcome = serve(loop_kind, mode, f"/{name}/")
    violation = check(outcome, loop_kind, mode, getattr(views(), name), key)
    assert violation.call_expr == f"{key}({shown})"
    assert "TemplateResponse" in violation.hint
    if mode == "warn":
        assert b"Hello" in outcome.response.content


@pytest.mark.parametrize("name", [name for name, _, _ in TEMPLATE_VIEWS])
def test_cached_template_not_flagged(loop_kind: str, name: str) -> None:
    """Once the cached loader has the template, rendering it reads nothing."""
    from django.template.loader import get_template

    get_template("djangotest/page.html")
    with contextlib.suppress(Exception):
        get_template("djangotest/missing.html")  # caches "does not exist" too
    clean(serve(loop_kind, "raise", f"/{name}/"))


def test_template_engines_set_up_on_the_loop(loop_kind: str, mode: str) -> None:
    """The first request sets the template engines up on the loop (the app_directories loader
    looks for template directories): that is not reported, the template read is."""
    from django.conf import settings
    from django.test import override_settings

    templates = [
        {
            **settings.TEMPLATES[0],
            "APP_DIRS": False,
            "OPTIONS": {
                "loaders": [
                    "django.template.loaders.filesystem.Loader",
                    "django.template.loaders.app_directories.Loader",
                ]
            },
        }
    ]
    with override_settings(TEMPLATES=templates):  # engines are made again on first use
        outcome = serve(loop_kind, mode, "/template_render/")
    check(outcome, loop_kind, mode, views().template_render, "django.shortcuts.render")


def test_include_read_while_rendering(loop_kind: str, mode: str) -> None:
    """The outer template is cached; the ``{% include %}`` it renders is read from disk."""
    from django.template.loader import get_template

    get_template("djangotest/outer.html")
    outcome = serve(loop_kind, mode, "/template_include/")
    violation = check(
        outcome, loop_kind, mode, views().template_include, "django.template.loader.get_template"
    )
    assert violation.args == "'djangotest/included.html'"


def test_lazy_queryset_rendered(loop_kind: str, mode: str) -> None:
    """A cached template rendering a lazy queryset runs the query on the loop."""
    from django.template.loader import get_template

    get_template("djangotest/items.html")
    outcome = serve(loop_kind, mode, "/template_queryset/")
    violation = check(outcome, loop_kind, mode, views().template_queryset, "django.db.query")
    assert violation.args == "SELECT djangotest.Item"


def test_template_response_not_flagged(loop_kind: str) -> None:
    response = clean(serve(loop_kind, "raise", "/good_template/"))
    assert b"included response" in response.content


def test_sync_view_template_not_flagged(loop_kind: str) -> None:
    response = clean(serve(loop_kind, "raise", "/sync_template/"))
    assert b"included sync" in response.content


# -- sessions ------------------------------------------------------------------------------------

BLOCKING_SESSIONS = ["db", "cached_db", "file", "cache"]


@contextlib.contextmanager
def session_engine(backend: str, cache_alias: str = "file") -> Iterator[dict[str, str]]:
    """Settings for ``backend`` and a cookie for a stored session holding ``color``."""
    from importlib import import_module

    from django.conf import settings
    from django.test import override_settings

    with override_settings(SESSION_ENGINE=SESSIONS + backend, SESSION_CACHE_ALIAS=cache_alias):
        store = import_module(settings.SESSION_ENGINE).SessionStore()
        store["color"] = "green"
        store.save()
        release_resources()
        yield {settings.SESSION_COOKIE_NAME: store.session_key}


@pytest.mark.parametrize("backend", BLOCKING_SESSIONS)
@pytest.mark.parametrize(("name", "method"), [("session_get", "load"), ("session_set", "load")])
def test_session_access(loop_kind: str, mode: str, backend: str, name: str, method: str) -> None:
    with session_engine(backend) as cookies:
        outcome = serve(loop_kind, mode, f"/{name}/", cookies=cookies)
    key = f"{SESSIONS}{backend}.SessionStore.{method}"
    violation = check(outcome, loop_kind, mode, getattr(views(), name), key)
    assert violation.call_expr == f"{key}()"  # never the session key
    if backend == "file":
        assert "file session backend" in violation.hint
    else:
        assert "await request.session.aget(key)" in violation.hint
        assert "5.1" in violation.hint


@pytest.mark.parametrize("backend", BLOCKING_SESSIONS)
def test_session_save(loop_kind: str, mode: str, backend: str) -> None:
    with session_engine(backend) as cookies:
        outcome = serve(loop_kind, mode, "/session_save/", cookies=cookies)
    check(outcome, loop_kind, mode, views().session_save, f"{SESSIONS}{backend}.SessionStore.save")


@pytest.mark.parametrize("backend", BLOCKING_SESSIONS)
def test_session_cycle_key(mode: str, backend: str) -> None:
    with session_engine(backend) as cookies:
        outcome = serve("main", mode, "/session_cycle_key/", cookies=cookies)
    check(outcome, "main", mode, views().session_cycle_key, f"{SESSIONS}base.SessionBase.cycle_key")


def test_session_on_redis_cache(loop_kind: str, mode: str, redis_cache: str) -> None:
    with session_engine("cache", cache_alias=redis_cache) as cookies:
        outcome = serve(loop_kind, mode, "/session_get/", cookies=cookies)
    check(outcome, loop_kind, mode, views().session_get, f"{SESSIONS}cache.SessionStore.load")


@pytest.mark.parametrize(
    ("backend", "alias"), [("signed_cookies", "file"), ("cache", "locmem"), ("db", "file")]
)
@pytest.mark.parametrize("name", ["session_get", "session_set"])
def test_session_not_blocking(loop_kind: str, backend: str, alias: str, name: str) -> None:
    """Signed-cookie sessions and sessions in a local-memory cache do no I/O; a request
    without a session cookie has nothing to load."""
    with session_engine(backend, cache_alias=alias) as cookies:
        if backend == "db":
            cookies = {}
        clean(serve(loop_kind, "raise", f"/{name}/", cookies=cookies))


@pytest.mark.skipif(DJANGO < (5, 1), reason="async session methods are new in Django 5.1")
@pytest.mark.parametrize("backend", ["db", "cached_db", "cache"])
def test_async_session_api_not_flagged(loop_kind: str, backend: str) -> None:
    with session_engine(backend) as cookies:
        response = clean(serve(loop_kind, "raise", "/session_aget/", cookies=cookies))
    assert b"green" in response.content


@pytest.mark.skipif(DJANGO < (5, 1), reason="async session methods are new in Django 5.1")
def test_file_session_async_api_still_blocks(loop_kind: str, mode: str) -> None:
    """The file backend's async methods call the sync ones on the loop."""
    with session_engine("file") as cookies:
        outcome = serve(loop_kind, mode, "/session_aget/", cookies=cookies)
    violation = check(
        outcome, loop_kind, mode, views().session_aget, f"{SESSIONS}file.SessionStore.load"
    )
    assert "even in its async methods" in violation.hint


@pytest.mark.parametrize("backend", BLOCKING_SESSIONS)
def test_sync_view_session_not_flagged(loop_kind: str, backend: str) -> None:
    with session_engine(backend) as cookies:
        clean(serve(loop_kind, "raise", "/sync_session/", cookies=cookies))


# -- mail ----------------------------------------------------------------------------------------


@pytest.fixture
def smtp(smtp_server: tuple[str, int, list[Any]]) -> Iterator[list[Any]]:
    from django.test import override_settings

    host, port, messages = smtp_server
    backend = "django.core.mail.backends.smtp.EmailBackend"
    if DJANGO >= (6, 1):  # MAILERS replaced EMAIL_BACKEND and EMAIL_*
        options = {"host": host, "port": port, "timeout": 10}
        mail_settings: dict[str, Any] = {
            "MAILERS": {"default": {"BACKEND": backend, "OPTIONS": options}}
        }
    else:
        mail_settings = {
            "EMAIL_BACKEND": backend,
            "EMAIL_HOST": host,
            "EMAIL_PORT": port,
            "EMAIL_TIMEOUT": 10,
        }
    with override_settings(**mail_settings):
        yield messages


def default_mailer() -> Any:
    if DJANGO >= (6, 1):
        from django.core.mail import mailers  # type: ignore[attr-defined]

        return mailers.default
    from django.core.mail import get_connection

    return get_connection()


@pytest.mark.parametrize(
    ("name", "key", "shown", "to"),
    [
        ("mail_send_mail", "django.core.mail.send_mail", "'Hello', …", "alice@example.com"),
        ("mail_message_send", "django.core.mail.EmailMessage.send", "", "bob@example.com"),
    ],
)
def test_send_mail_over_smtp(
    loop_kind: str, mode: str, smtp: list[Any], name: str, key: str, shown: str, to: str
) -> None:
    before = len(smtp)
    outcome = serve(loop_kind, mode, f"/{name}/")
    violation = check(outcome, loop_kind, mode, getattr(views(), name), key)
    assert violation.call_expr == f"{key}({shown})"
    assert "sync_to_async(send_mail)" in violation.hint
    if mode == "warn":  # really sent
        assert [m["To"] for m in smtp[before:]] == [to]
    else:
        assert len(smtp) == before


def test_smtp_backend_used_directly(loop_kind: str, mode: str, smtp: list[Any]) -> None:
    from django.core.mail import EmailMessage

    def main() -> None:
        connection = default_mailer()
        message = EmailMessage("Direct", "Body", "shop@example.com", ["erin@example.com"])
        connection.send_messages([message])  # <- blocks

    raised: list[BaseException] = []

    async def run() -> None:
        try:
            main()
        except asyncguard.BlockingCallError as exc:
            raised.append(exc)

    with asyncguard.guarded(mode=mode) as guard:
        run_on(loop_kind, run)
    key = "django.core.mail.backends.smtp.EmailBackend.send_messages"
    assert guard.calls == [key]
    violation = guard.violations[0]
    assert violation.call_expr == f"{key}([1 message])"
    assert violation.location[1] == call_line(main)
    assert bool(raised) == (mode == "raise")


def test_locmem_mail_not_flagged(loop_kind: str) -> None:
    from django.core import mail
    from django.core.mail.utils import DNS_NAME

    # The first message of a process asks the resolver for this host's name (Message-ID):
    # a real blocking call (test_first_message_resolves_the_host_name), not the backend's.
    DNS_NAME.get_fqdn()
    clean(serve(loop_kind, "raise", "/mail_send_mail/"))
    assert any(m.subject == "Hello" for m in getattr(mail, "outbox", []))


def test_first_message_resolves_the_host_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """Django's first e-mail in a process calls ``socket.getfqdn()`` for its Message-ID (a
    DNS lookup: seconds where the resolver is slow) — on the loop when sent from async code."""
    from django.core.mail.utils import DNS_NAME

    monkeypatch.delattr(DNS_NAME, "_fqdn", raising=False)
    outcome = serve("main", "warn", "/mail_send_mail/")
    assert [v.call for v in outcome.violations] == ["socket.getfqdn"], outcome.violations
    assert outcome.violations[0].location[2] == "mail_send_mail"


def test_sync_view_mail_not_flagged(loop_kind: str, smtp: list[Any]) -> None:
    before = len(smtp)
    clean(serve(loop_kind, "raise", "/sync_mail/"))
    assert len(smtp) == before + 1


def test_mail_in_thread_not_flagged(loop_kind: str, smtp: list[Any]) -> None:
    before = len(smtp)
    clean(serve(loop_kind, "raise", "/good_mail/"))
    assert len(smtp) == before + 1


# -- auth ----------------------------------------------------------------------------------------


@pytest.fixture
def logged_in() -> dict[str, str]:
    """The session cookie of alice, logged in (as ``client.force_login`` does it)."""
    from django.conf import settings
    from django.contrib.auth import get_user_model, login
    from django.contrib.sessions.backends.db import SessionStore
    from django.http import HttpRequest

    request = HttpRequest()
    request.session = SessionStore()
    user = get_user_model().objects.get(username="alice")
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    request.session.save()
    release_resources()
    return {settings.SESSION_COOKIE_NAME: str(request.session.session_key)}


def test_request_user(loop_kind: str, mode: str, logged_in: dict[str, str]) -> None:
    outcome = serve(loop_kind, mode, "/user_is_authenticated/", cookies=logged_in)
    violation = check(
        outcome, loop_kind, mode, views().user_is_authenticated, "django.contrib.auth.get_user"
    )
    assert violation.call_expr == "django.contrib.auth.get_user(request)"
    assert "await request.auser()" in violation.hint
    assert "5.0" in violation.hint
    if mode == "warn":
        assert outcome.response.json() == {"result": "True"}


def test_anonymous_request_user_not_flagged(loop_kind: str) -> None:
    """No session cookie: nothing to load, the user is anonymous."""
    response = clean(serve(loop_kind, "raise", "/user_is_authenticated/"))
    assert response.json() == {"result": "False"}


@pytest.mark.skipif(DJANGO < (5, 0), reason="request.auser() is new in Django 5.0")
def test_request_auser_not_flagged(loop_kind: str, logged_in: dict[str, str]) -> None:
    response = clean(serve(loop_kind, "raise", "/good_user/", cookies=logged_in))
    assert response.json() == {"result": "True"}


def test_sync_view_auth_not_flagged(loop_kind: str, logged_in: dict[str, str]) -> None:
    response = clean(serve(loop_kind, "raise", "/sync_auth/", cookies=logged_in))
    assert response.json() == {"result": "(True, True)"}


AUTH_VIEWS = [
    ("user_check_password", "django.contrib.auth.base_user.AbstractBaseUser.check_password"),
    ("hashers_check_password", "django.contrib.auth.hashers.check_password"),
    ("hashers_make_password", "django.contrib.auth.hashers.make_password"),
    ("auth_authenticate", "django.contrib.auth.authenticate"),
    ("auth_login", "django.contrib.auth.login"),
]


@pytest.mark.parametrize(("name", "key"), AUTH_VIEWS)
def test_auth(loop_kind: str, mode: str, name: str, key: str) -> None:
    outcome = serve(loop_kind, mode, f"/{name}/")
    violation = check(outcome, loop_kind, mode, getattr(views(), name), key)
    assert views().PASSWORD not in violation.message()
    if "password" in name:
        assert "sync_to_async" in violation.hint
        assert "CPU" in violation.hint
    if "check_password" in name:
        assert "acheck_password(raw)` runs it in a thread on Django 6.0+" in violation.hint


def test_password_check_takes_real_time() -> None:
    """PBKDF2 (the default hasher) really is CPU time on the loop."""
    outcome = serve("main", "warn", "/user_check_password/")
    violation = check(
        outcome,
        "main",
        "warn",
        views().user_check_password,
        "django.contrib.auth.base_user.AbstractBaseUser.check_password",
    )
    assert outcome.response.json() == {"result": "True"}
    assert violation.duration is not None and violation.duration > 0.01


@pytest.mark.skipif(not (5, 0) <= DJANGO < (6, 0), reason="Django 5.x's acheck_password")
def test_acheck_password_hashes_on_the_loop(loop_kind: str, mode: str) -> None:
    """Django 5.x's ``acheck_password`` runs the hasher on the event loop itself."""
    outcome = serve(loop_kind, mode, "/user_acheck_password/")
    violation = check(
        outcome,
        loop_kind,
        mode,
        views().user_acheck_password,
        "django.contrib.auth.hashers.verify_password",
    )
    assert "5.x's `acheck_password`" in violation.hint


@pytest.mark.skipif(DJANGO < (6, 0), reason="acheck_password hashes in a thread from Django 6.0")
def test_acheck_password_not_flagged(loop_kind: str) -> None:
    response = clean(serve(loop_kind, "raise", "/user_acheck_password/"))
    assert response.json() == {"result": "True"}


def test_password_in_thread_not_flagged(loop_kind: str) -> None:
    response = clean(serve(loop_kind, "raise", "/good_password/"))
    assert response.json() == {"result": "True"}


def test_unusable_password_still_hashes(loop_kind: str, mode: str) -> None:
    """Django runs the hasher even for an unusable password (so that timing does not tell
    which users exist): still CPU work on the loop."""
    from django.contrib.auth import hashers

    def blocking() -> None:
        hashers.check_password("x", "!unusable")

    expect_violation(
        loop_kind, mode, blocking, "django.contrib.auth.hashers.check_password", category="django"
    )


def test_make_unusable_password_not_flagged(loop_kind: str) -> None:
    from django.contrib.auth import hashers

    expect_clean_on_loop(loop_kind, lambda: hashers.make_password(None))


def test_password_off_loop() -> None:
    from django.contrib.auth.hashers import check_password, make_password

    expect_clean_off_loop(lambda: check_password("x", make_password("x")))


# -- through ASGIHandler, as a server runs Django -------------------------------------------------


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("orm_get", "django.db.query"),
        ("template_render", "django.shortcuts.render"),
        ("storage_open", "django.core.files.storage.default_storage.open"),
    ],
)
def test_asgi_handler(loop_kind: str, mode: str, name: str, key: str) -> None:
    """Raise mode: Django's exception handling turns our error into a 500; warn mode: the
    response is unchanged."""
    outcome = serve(loop_kind, mode, f"/{name}/", asgi=True)
    assert outcome.error is None, outcome.error
    assert [v.call for v in outcome.violations] == [key]
    violation = outcome.violations[0]
    view = getattr(views(), name)
    assert violation.location == (view.__code__.co_filename, call_line(view), name)
    status, _ = outcome.response
    assert status == (500 if mode == "raise" else 200)


def test_asgi_handler_sync_view_not_flagged(loop_kind: str) -> None:
    outcome = serve(loop_kind, "raise", "/sync_orm/", asgi=True)
    assert outcome.violations == []
    assert outcome.response[0] == 200


# -- allow rules -----------------------------------------------------------------------------------


def test_allow_rule_for_a_django_key(loop_kind: str) -> None:
    from django.test import AsyncClient

    async def main() -> Any:
        try:
            return await AsyncClient().get("/orm_get/")
        finally:
            release_resources()

    with asyncguard.guarded(mode="raise", allow=["django.db.query in djangotest.views"]) as guard:
        response = run_on(loop_kind, main)
    assert guard.violations == []
    assert response.status_code == 200


def test_keys_are_known() -> None:
    known = set(asyncguard.known_calls())
    for key in [
        "django.db.query",
        "django.utils.asyncio.async_unsafe",
        "django.core.cache.cache.get",
        "django.core.files.storage.default_storage.save",
        "django.shortcuts.render",
        "django.template.loader.get_template",
        f"{SESSIONS}db.SessionStore.load",
        "django.contrib.auth.get_user",
        "django.contrib.auth.hashers.check_password",
        "django.core.mail.send_mail",
    ]:
        assert key in known, key


def test_patches_removed_on_uninstall() -> None:
    from django.core.cache.backends.filebased import FileBasedCache
    from django.core.exceptions import SynchronousOnlyOperation
    from django.db.models.sql.compiler import SQLCompiler

    before = (
        vars(FileBasedCache)["get"],
        vars(SQLCompiler)["execute_sql"],
        "__init__" in vars(SynchronousOnlyOperation),
    )
    asyncguard.install()
    assert vars(FileBasedCache)["get"] is not before[0]
    assert "__init__" in vars(SynchronousOnlyOperation)
    asyncguard.uninstall()
    after = (
        vars(FileBasedCache)["get"],
        vars(SQLCompiler)["execute_sql"],
        "__init__" in vars(SynchronousOnlyOperation),
    )
    assert after == before


def test_every_hook_resolves_on_this_django() -> None:
    """Every hook names an attribute this Django version has (``optional`` ones may be
    missing: ``verify_password`` before 5.0)."""
    import importlib

    from asyncguard._hooks import djangohooks

    for hook in djangohooks.FAMILY.hooks:
        owner: Any = importlib.import_module(hook.module)
        for part in hook.attr.split("."):
            owner = getattr(owner, part, None)
            if owner is None:
                assert hook.optional, f"{hook.module}.{hook.attr} is missing"
                break


OFFLOADED_ORM = [
    "orm_get",
    "orm_list",
    "orm_count",
    "orm_exists",
    "orm_iterator",
    "orm_update",
    "orm_create",
    "orm_related",
]
INLINE_ORM = ["raw_cursor", "connect", "atomic"]


def test_middleware_offloads_in_the_view_task() -> None:
    """Through AsyncGuardMiddleware(ASGIHandler()), as a server runs it: Django 5.x runs the
    view in a task of its own, and only that task is driven; Django 4.2 and 6.0+ run it in the
    handler's coroutine, which is then driven."""
    pytest.importorskip("greenlet")
    import django
    from django.core.handlers.asgi import ASGIHandler

    from asyncguard import _offload

    async def get() -> tuple[tuple[int, bytes], list[asyncguard.Violation], Any]:
        with asyncguard.guarded(mode="offload", stall_threshold=None) as guard:
            app = asyncguard.AsyncGuardMiddleware(
                ASGIHandler(), mode="offload", stall_threshold=None, log=False
            )
            try:
                response = await asgi_get("/orm_get/", app)
            finally:
                release_resources()
        return response, list(guard.violations), app

    (status, _), violations, app = run_on("main", get)
    assert status == 200
    in_request = [(v.call, v.offloaded) for v in violations if v.request == "GET /orm_get/"]
    assert in_request == [("django.db.query", True)]
    tasks_only = (5, 0) <= django.VERSION < (6, 0)
    assert app._drive is (_offload.driving_tasks if tasks_only else _offload.offloading)


@pytest.mark.parametrize("name", OFFLOADED_ORM + INLINE_ORM)
def test_orm_in_offload_mode(name: str) -> None:
    """Offload mode: an ORM query runs in the thread-sensitive executor on that thread's own
    connection, and answers as inline; raw cursors, connecting and transactions of the loop
    thread's connection stay inline."""
    pytest.importorskip("greenlet")
    from django.test import AsyncClient

    async def get(mode: str) -> tuple[Any, list[asyncguard.Violation]]:
        with asyncguard.guarded(mode=mode, stall_threshold=None) as guard:
            try:
                response = await asyncguard.offloading(AsyncClient().get(f"/{name}/"))
            finally:
                release_resources()
        return response, list(guard.violations)

    warn, _ = run_on("main", lambda: get("warn"))
    offload, violations = run_on("main", lambda: get("offload"))
    assert offload.status_code == warn.status_code == 200
    assert offload.content == warn.content
    assert violations and {v.call for v in violations} == {"django.db.query"}
    expected = name in OFFLOADED_ORM
    assert [v.offloaded for v in violations] == [expected] * len(violations)
