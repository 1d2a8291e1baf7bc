"""AsyncGuardMiddleware as a pure ASGI3 app (no Django): request attribution, the debug
header, pass-through scopes, nesting, raise/warn behaviour."""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any

import pytest

import asyncguard
from asyncguard import AsyncGuardMiddleware
from conftest import LOOP_KINDS, run_on

Message = dict[str, Any]


async def blocking_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        message = await receive()
        assert message["type"] == "lifespan.startup"
        await send({"type": "lifespan.startup.complete"})
        return
    if scope["type"] == "websocket":
        await receive()
        time.sleep(0.01)
        await send({"type": "websocket.accept"})
        return
    if scope.get("path") == "/block":
        time.sleep(0.01)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-app", b"1")]})
    await send({"type": "http.response.body", "body": b"ok"})


def http_scope(path: str, query: bytes = b"") -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "headers": [(b"authorization", b"Bearer SECRET")],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
    }


def call(app: Any, scope: dict[str, Any], incoming: list[Message] | None = None) -> list[Message]:
    sent: list[Message] = []
    queue = list(incoming or [{"type": "http.request", "body": b"", "more_body": False}])

    async def receive() -> Message:
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    async def main() -> None:
        await app(scope, receive, send)

    run_on("main", main)
    return sent


def test_is_asgi3() -> None:
    app = AsyncGuardMiddleware(blocking_app, mode="warn")
    assert inspect.iscoroutinefunction(app.__call__)
    assert asyncguard._guard.current() is app.guard


@pytest.mark.parametrize("loop_kind", LOOP_KINDS)
def test_warn_mode_attributes_the_request_and_never_changes_the_response(loop_kind: str) -> None:
    app = AsyncGuardMiddleware(blocking_app, mode="warn")
    sent: list[Message] = []

    async def main() -> None:
        async def receive() -> Message:
            return {"type": "http.request", "body": b""}

        async def send(message: Message) -> None:
            sent.append(message)

        await app(http_scope("/block", b"token=SECRET"), receive, send)

    with asyncguard.guarded(mode="warn") as guard:
        run_on(loop_kind, main)
    (violation,) = guard.violations
    assert violation.request == "GET /block"
    assert "request 'GET /block'" in violation.message()
    assert "SECRET" not in violation.message()
    assert sent[0]["headers"] == [(b"x-app", b"1")]  # unchanged: no debug header by default
    assert sent[1]["body"] == b"ok"


def test_raise_mode_raises_at_the_call_site() -> None:
    app = AsyncGuardMiddleware(blocking_app, mode="raise")
    with asyncguard.guarded() as guard, pytest.raises(asyncguard.BlockingCallError) as info:
        call(app, http_scope("/block"))
    assert info.value.violation.request == "GET /block"
    assert guard.violations[0].location[2] == "blocking_app"


def test_debug_header_reports_the_requests_blocking_budget() -> None:
    app = AsyncGuardMiddleware(blocking_app, mode="warn", debug_header=True)
    sent = call(app, http_scope("/block"))
    headers = dict(sent[0]["headers"])
    calls, ms = headers[b"x-asyncguard-blocking"].decode().split(", ")
    assert calls == "1 calls"
    assert float(ms.removesuffix(" ms")) >= 10.0
    clean = dict(call(app, http_scope("/"))[0]["headers"])
    assert clean[b"x-asyncguard-blocking"] == b"0 calls, 0.0 ms"


def test_websocket_scope_is_guarded() -> None:
    app = AsyncGuardMiddleware(blocking_app, mode="warn")
    scope = {"type": "websocket", "path": "/ws/chat", "headers": [], "query_string": b""}
    with asyncguard.guarded(mode="warn") as guard:
        sent = call(app, scope, [{"type": "websocket.connect"}])
    assert sent == [{"type": "websocket.accept"}]
    assert guard.violations[0].request == "WEBSOCKET /ws/chat"


def test_lifespan_and_unknown_scopes_pass_straight_through() -> None:
    app = AsyncGuardMiddleware(blocking_app, mode="raise")
    lifespan = {"type": "lifespan", "asgi": {"version": "3.0"}}
    sent = call(app, lifespan, [{"type": "lifespan.startup"}])
    assert sent == [{"type": "lifespan.startup.complete"}]

    async def custom(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "custom.done", "seen": scope["type"]})

    assert call(AsyncGuardMiddleware(custom), {"type": "custom"}) == [
        {"type": "custom.done", "seen": "custom"}
    ]


def test_scope_without_path_never_crashes() -> None:
    async def app_(scope: Any, receive: Any, send: Any) -> None:
        time.sleep(0.001)
        await send({"type": "http.response.start", "status": 204, "headers": []})

    app = AsyncGuardMiddleware(app_, mode="warn", debug_header=True)
    with asyncguard.guarded(mode="warn") as guard:
        sent = call(app, {"type": "http"})
    assert sent[0]["status"] == 204
    assert guard.violations[0].request == ""


def test_nested_middleware_reports_each_violation_once() -> None:
    app = AsyncGuardMiddleware(AsyncGuardMiddleware(blocking_app, mode="warn"), mode="warn")
    with asyncguard.guarded(mode="warn") as guard:
        sent = call(app, http_scope("/block"))
    assert [v.call for v in guard.violations] == ["time.sleep"]
    assert sent[-1]["body"] == b"ok"


def test_concurrent_requests_are_attributed_separately() -> None:
    app = AsyncGuardMiddleware(blocking_app, mode="warn")

    async def main() -> None:
        async def one(path: str) -> None:
            async def receive() -> Message:
                await asyncio.sleep(0.001)
                return {"type": "http.request", "body": b""}

            async def send(message: Message) -> None:
                await asyncio.sleep(0)

            await receive()
            await app(http_scope(path), receive, send)

        await asyncio.gather(one("/block"), one("/other"), one("/block"))

    with asyncguard.guarded(mode="warn") as guard:
        run_on("main", main)
    assert sorted(v.request or "" for v in guard.violations) == ["GET /block", "GET /block"]


def test_bad_options_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="mode = 'loud' is not valid"):
        AsyncGuardMiddleware(blocking_app, mode="loud")
    monkeypatch.setenv("ASYNC_GUARD_MODE", "lould")
    # ValueError, or Django's ImproperlyConfigured once Django is set up in this process
    with pytest.raises(Exception, match=r"ASYNC_GUARD_MODE = 'lould' is not valid"):
        AsyncGuardMiddleware(blocking_app)


def test_env_mode_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASYNC_GUARD_MODE", "warn")
    assert AsyncGuardMiddleware(blocking_app).guard.mode == "warn"


def _lifespan(app: Any) -> list[dict[str, Any]]:
    """Run the lifespan protocol against ``app`` as a server would; the messages it sent."""
    sent: list[dict[str, Any]] = []
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send))
    return sent


def test_lifespan_is_answered_for_an_app_that_refuses_it() -> None:
    """Django raises for the lifespan scope; the middleware answers it, so the server tells
    it when it shuts down (the final summary goes there)."""

    async def django_like(scope: Any, receive: Any, send: Any) -> None:
        raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")

    sent = _lifespan(AsyncGuardMiddleware(django_like, mode="warn"))
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]


def test_lifespan_of_an_app_that_speaks_it_is_untouched() -> None:
    events: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            events.append(message["type"])
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.failed", "message": "no database"})
                return

    sent = _lifespan(AsyncGuardMiddleware(app, mode="warn"))
    assert sent == [{"type": "lifespan.startup.failed", "message": "no database"}]
    assert events == ["lifespan.startup"]


def test_an_error_after_the_app_listened_is_not_swallowed() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        raise RuntimeError("startup crashed")

    with pytest.raises(RuntimeError, match="startup crashed"):
        _lifespan(AsyncGuardMiddleware(app, mode="warn"))
