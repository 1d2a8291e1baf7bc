"""Offload mode: a blocking call in a driven coroutine runs in a worker thread while the loop
serves others, and the call site sees its result, its exception, its context — and
cancellation.  Real threads, real sleeps, real files; timings only as generous bounds."""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import os
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import pytest

import asyncguard
from asyncguard import AsyncGuardMiddleware, offloaded, offloading
from conftest import LOOP_KINDS, run_on, skip_service

pytest.importorskip("greenlet", reason="offload mode needs greenlet (asyncguard[offload])")

var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")


@pytest.fixture(autouse=True)
def _offload_mode() -> Any:
    with asyncguard.guarded(mode="offload", stall_threshold=None, log=False) as collector:
        yield collector


async def _ticker(ticks: list[float]) -> None:
    while True:
        await asyncio.sleep(0.01)
        ticks.append(time.perf_counter())


@pytest.mark.parametrize("kind", LOOP_KINDS)
def test_blocking_calls_run_in_threads_while_the_loop_serves(kind: str, _offload_mode: Any) -> None:
    """20 coroutines each calling time.sleep(0.5): done in well under the 10 s it takes
    inline, and a ticker task kept ticking all along.  (Half a second each: a loop blocked by
    one of them would miss its ticks for 0.5 s, so gaps of a few hundred ms that a busy
    machine can cause while 20 threads start and finish do not look like one.)"""

    async def handler(i: int) -> tuple[int, str]:
        time.sleep(0.5)  # <- offloaded
        return i, threading.current_thread().name

    async def main() -> tuple[float, list[Any], list[float]]:
        ticks: list[float] = []
        ticker = asyncio.create_task(_ticker(ticks))
        start = time.perf_counter()
        results = await asyncio.gather(*(offloading(handler(i)) for i in range(20)))
        elapsed = time.perf_counter() - start
        ticker.cancel()
        return elapsed, results, ticks

    elapsed, results, ticks = run_on(kind, main)
    assert elapsed < 2.5  # 0.5 s each, all at once (inline: 10 s)
    assert [i for i, _ in results] == list(range(20))
    loop_thread = {name for _, name in results}
    assert len(loop_thread) == 1  # the coroutine itself stays on the loop's thread
    assert len(ticks) >= 10  # the loop kept serving
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert max(gaps) < 0.45, gaps  # never blocked for a sleep's length
    violations = _offload_mode.violations
    assert len(violations) == 20 and {v.call for v in violations} == {"time.sleep"}
    assert all(v.offloaded and v.duration is not None and v.duration >= 0.49 for v in violations)
    message = violations[0].message()
    assert message.startswith("time.sleep(0.5) ran in a worker thread for ")
    assert "(offload mode) instead of blocking the event loop in tests/test_offload.py:" in message
    assert message.endswith("use `await asyncio.sleep(0.5)` instead")


def test_contextvars_flow_both_ways(tmp_path: Path) -> None:
    """A variable set before the call is visible in it (open()'s opener runs in the worker
    thread); one the call sets is visible after it."""
    seen: dict[str, Any] = {}

    def opener(path: str, flags: int) -> int:
        seen["inside"] = var.get()
        seen["thread"] = threading.current_thread().name
        var.set("set by the call")
        return os.open(path, flags)

    async def handler() -> str:
        var.set("set before")
        with open(tmp_path / "f.txt", "w", opener=opener) as f:  # <- offloaded
            f.write("x")
        return var.get()

    after = asyncio.run(offloading(handler()))
    assert seen["inside"] == "set before"
    assert seen["thread"] != "MainThread"
    assert after == "set by the call"


def test_an_exception_surfaces_at_the_call_site() -> None:
    async def handler() -> None:
        open("/nonexistent/dir/file")  # noqa: SIM115 - raises in the worker thread

    with pytest.raises(FileNotFoundError) as info:
        asyncio.run(offloading(handler()))
    frames = [(f.name, f.line) for f in traceback.extract_tb(info.tb)]
    assert (
        "handler",
        'open("/nonexistent/dir/file")  # noqa: SIM115 - raises in the worker thread',
    ) in frames


def test_cancelling_while_offloaded_raises_at_the_call_site() -> None:
    events: list[str] = []

    async def handler() -> None:
        try:
            time.sleep(1.0)  # <- offloaded, cancelled meanwhile
        except asyncio.CancelledError:
            events.append("cancelled at the call site")
            raise
        events.append("not reached")

    async def main() -> float:
        task = asyncio.create_task(offloading(handler()))
        await asyncio.sleep(0.1)
        start = time.perf_counter()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.perf_counter() - start

    waited = asyncio.run(main())
    assert events == ["cancelled at the call site"]
    assert waited < 0.5  # the task did not wait for the thread to finish its sleep


def test_cancelling_while_awaiting_normally() -> None:
    async def handler() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return "handled"
        return "not reached"

    async def main() -> str:
        task = asyncio.create_task(offloading(handler()))
        await asyncio.sleep(0.05)
        task.cancel()
        return await task

    assert asyncio.run(main()) == "handled"


def test_return_values_and_awaits_pass_through() -> None:
    async def inner() -> int:
        await asyncio.sleep(0.01)
        return 41

    @offloaded
    async def handler(x: int) -> int:
        time.sleep(0.01)
        return await inner() + x

    assert asyncio.run(handler(1)) == 42


def test_outside_a_driven_coroutine_it_runs_inline_and_is_reported(_offload_mode: Any) -> None:
    """A bare callback and a task the driver did not create have nothing to suspend: the call
    runs inline, timed, as in warn mode — never a deadlock."""
    done: list[str] = []

    def callback() -> None:
        time.sleep(0.02)  # <- inline
        done.append(threading.current_thread().name)

    async def main() -> None:
        asyncio.get_running_loop().call_soon(callback)
        await asyncio.sleep(0.05)
        time.sleep(0.02)  # <- inline too: this task is not driven

    asyncio.run(main())
    assert done == ["MainThread"]
    violations = _offload_mode.violations
    assert [v.offloaded for v in violations] == [False, False]
    assert all(v.duration is not None and v.duration >= 0.02 for v in violations)


def test_tasks_created_inside_a_driven_coroutine_are_driven_too(_offload_mode: Any) -> None:
    """Django's handler runs each view in a task of its own: a task created from a driven
    coroutine is driven (a task factory on the loop); the loop's own factory is kept and given
    back at uninstall."""
    created: list[str] = []

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
        created.append(getattr(coro, "__qualname__", "?"))
        return asyncio.Task(coro, loop=loop, **kwargs)

    async def child() -> str:
        time.sleep(0.01)
        return threading.current_thread().name

    async def handler() -> str:
        return await asyncio.create_task(child())

    async def main() -> tuple[str, Any]:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(factory)
        name = await offloading(handler())
        await asyncio.create_task(asyncio.sleep(0))  # not from a driven coroutine
        asyncguard.uninstall()
        return name, loop.get_task_factory()

    name, factory_after = asyncio.run(main())
    assert name == "MainThread"
    assert [v.offloaded for v in _offload_mode.violations] == [True]
    assert created[:2] == ["_drive_task", "sleep"]  # the child went through the loop's own factory
    assert factory_after is factory


def test_driving_tasks_drives_the_tasks_not_the_awaited_coroutine(_offload_mode: Any) -> None:
    """driving_tasks() (what the middleware uses for Django 5.x, whose handler runs the view in
    a task of its own): a blocking call in a task created meanwhile is offloaded, one in the
    awaited coroutine itself runs inline and is reported as in warn mode."""
    from asyncguard import _offload

    async def view() -> str:
        time.sleep(0.01)  # <- offloaded: the view's task is driven
        return threading.current_thread().name

    async def handler() -> str:
        time.sleep(0.01)  # <- inline: the handler's coroutine is not driven
        return await asyncio.create_task(view())

    name = asyncio.run(_offload.driving_tasks(handler()))
    assert name == "MainThread"
    assert [v.offloaded for v in _offload_mode.violations] == [False, True]


def test_child_greenlets_are_reused_and_let_go_of_the_context() -> None:
    """A new greenlet costs a frame-stack mapping (~8 us); a finished coroutine's greenlet
    drives the next one, and does not keep the finished one's contextvars alive."""
    import greenlet

    async def which() -> Any:
        var.set("set inside")
        return greenlet.getcurrent()

    async def main() -> tuple[Any, Any, str]:
        first = await offloading(which())
        second = await offloading(which())
        return first, second, var.get()

    first, second, value = asyncio.run(main())
    assert first is second and not first.dead
    assert first.gr_context is None
    assert value == "set inside"  # the context is the task's, shared both ways


def test_an_idle_child_keeps_nothing_of_its_last_coroutine_alive() -> None:
    """What a driven coroutine returned or raised is not kept by the idle greenlet."""
    import gc
    import weakref

    class Result:
        pass

    refs: list[weakref.ref[Any]] = []

    async def returns() -> Result:
        result = Result()
        refs.append(weakref.ref(result))
        return result

    class KeptError(ValueError):
        pass

    async def raises() -> None:
        error = KeptError("kept?")
        refs.append(weakref.ref(error))
        raise error

    async def main() -> None:
        await offloading(returns())
        with pytest.raises(ValueError):
            await offloading(raises())

    asyncio.run(main())
    gc.collect()
    assert [ref() for ref in refs] == [None, None]


def test_a_greenlet_never_becomes_the_parent_of_its_own_parent() -> None:
    """A greenlet started inside a driven coroutine can outlive it; when it drives a coroutine
    itself, the idle child it descends from is not taken (that would be a cycle)."""
    import greenlet

    from asyncguard import _offload

    taken: list[Any] = []

    async def spawn() -> Any:
        child = greenlet.getcurrent()
        orphan = greenlet.greenlet(lambda: taken.append(_offload._take_child(orphan)))
        return child, orphan

    child, orphan = asyncio.run(offloading(spawn()))
    assert orphan.parent is child  # the driven coroutine's greenlet, now idle
    orphan.switch()
    assert taken and taken[0] is not child and taken[0].parent is orphan


def test_an_orphan_greenlet_finishing_later_does_not_wake_an_idle_child() -> None:
    """When such a greenlet finishes after the coroutine, its value goes on up, as it would
    past a finished greenlet, and the idle child it came from is not reused."""
    import greenlet

    async def spawn() -> Any:
        child = greenlet.getcurrent()
        orphan = greenlet.greenlet(lambda: "the orphan's value")
        return child, orphan

    async def which() -> Any:
        return greenlet.getcurrent()

    child, orphan = asyncio.run(offloading(spawn()))
    assert orphan.switch() == "the orphan's value"
    assert child.dead
    assert asyncio.run(offloading(which())) is not child


def test_thread_bound_calls_stay_inline(_offload_mode: Any) -> None:
    """An RLock belongs to the thread that acquires it: never offloaded (the default route)."""
    lock = threading.RLock()
    holder_ready = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with lock:
            holder_ready.set()
            release.wait(5)

    thread = threading.Thread(target=holder)
    thread.start()
    holder_ready.wait(5)

    async def handler() -> None:
        threading.Timer(0.05, release.set).start()
        lock.acquire()  # <- contended, inline
        lock.release()  # the same thread: works

    try:
        asyncio.run(offloading(handler()))
    finally:
        release.set()
        thread.join(5)
    (violation,) = _offload_mode.violations
    assert violation.call == "threading.RLock.acquire" and not violation.offloaded


def test_routes_send_calls_to_the_thread_sensitive_executor() -> None:
    asyncguard.install(mode="offload", offload_routes={"time.sleep": "thread_sensitive"})
    names: list[str] = []

    def opener(path: str, flags: int) -> int:
        names.append(threading.current_thread().name)
        return os.open(path, flags)

    async def handler() -> None:
        time.sleep(0.01)
        with open(os.devnull, opener=opener):
            pass

    asyncio.run(offloading(handler()))
    assert names and names[0].startswith("asyncguard-offload")
    guard = asyncguard._guard.current()
    assert guard is not None
    assert guard.route("time.sleep") == "thread_sensitive"
    assert guard.route("open") == "pool"
    assert guard.route("threading.RLock.acquire") == "inline"


def test_sqlalchemy_async_engine_keeps_working(tmp_path: Path, _offload_mode: Any) -> None:
    """SQLAlchemy's asyncio layer drives its own greenlets inside ours."""
    try:
        from sqlalchemy import text
        from sqlalchemy.ext.asyncio import create_async_engine
    except ImportError:
        skip_service("sqlalchemy[asyncio] is not installed (pip install sqlalchemy aiosqlite)")
    pytest.importorskip("aiosqlite")

    async def handler() -> list[int]:
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}")
        async with engine.begin() as conn:
            await conn.execute(text("create table t (x integer)"))
            await conn.execute(text("insert into t values (1), (2)"))
            time.sleep(0.01)  # <- offloaded, between two awaits of SQLAlchemy's greenlets
            rows = (await conn.execute(text("select x from t order by x"))).all()
        await engine.dispose()
        return [row[0] for row in rows]

    assert asyncio.run(offloading(handler())) == [1, 2]
    assert [v.call for v in _offload_mode.violations if v.offloaded] == ["time.sleep"]


def test_middleware_drives_each_request(_offload_mode: Any) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        time.sleep(0.2)  # <- offloaded
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    application = AsyncGuardMiddleware(app, mode="offload", stall_threshold=None, log=False)

    async def get(path: str) -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "GET", "path": path}
        await application(scope, receive, send)
        return sent

    async def main() -> float:
        start = time.perf_counter()
        replies = await asyncio.gather(*(get(f"/slow/{i}") for i in range(20)))
        assert all(r[-1]["body"] == b"ok" for r in replies)
        return time.perf_counter() - start

    assert asyncio.run(main()) < 1.5
    requests = {v.request for v in _offload_mode.violations}
    assert len(requests) == 20 and "GET /slow/7" in requests


def test_mode_offload_without_greenlet_is_a_clear_error(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['greenlet'] = None\n"
        "import asyncguard\n"
        "try:\n"
        "    asyncguard.install(mode='offload')\n"
        "except ValueError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.stdout.strip() == (
        "mode 'offload' needs the greenlet package: pip install greenlet (or asyncguard's "
        "'offload' extra)"
    ), result.stderr


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"offload_threads": 0}, "offload_threads = 0 is not valid: a whole number >= 1"),
        (
            {"offload_routes": {"time.sleep": "elsewhere"}},
            "offload_routes = {'time.sleep': 'elsewhere'} is not valid: the route for "
            "'time.sleep' is 'elsewhere'; choose one of 'thread_sensitive', 'pool', 'inline'",
        ),
        (
            {"offload_routes": {"time.slep": "pool"}},
            "offload_routes = {'time.slep': 'pool'} is not valid: unknown call key in "
            "offload_routes 'time.slep'; did you mean 'time.sleep'?",
        ),
    ],
)
def test_bad_offload_options(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as info:
        asyncguard.install(mode="offload", **options)
    assert str(info.value).startswith(message)


def test_offloading_takes_awaitables_only() -> None:
    with pytest.raises(TypeError, match="offloading\\(\\) takes a coroutine or awaitable"):
        offloading(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="@offloaded decorates async functions"):
        offloaded(print)  # type: ignore[arg-type]
