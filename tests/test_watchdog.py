"""The stall watchdog: a loop blocked by what no hook sees (CPU work, a C extension's I/O, a C lock
made before install) is reported as a ``"stall"`` naming the statement that blocked it, on
main-thread, worker-thread and uvloop loops; healthy loops, short bursts, allowed code and calls a
hook already reported are not; loops are found without help; uninstall stops the thread.

Stalls are 5x the 0.05 s threshold and only lower bounds are asserted, so a loaded machine
(xdist on two cores) does not make these flaky.
"""

from __future__ import annotations

import _thread
import asyncio
import hashlib
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

import asyncguard
from asyncguard import AsyncGuardMiddleware, Collector, _guard, _watchdog
from conftest import call_line, run_on, skip_service

THRESHOLD = 0.05
STALL = 0.25  # seconds each stall lasts: 5x the threshold
MIN_DURATION = 0.15  # what we assert: 3x the threshold
MESSAGE_START = "stall: the event loop was blocked for"


def _calibrate(target: float = STALL) -> int:
    """pbkdf2 rounds that take ``target`` seconds of this thread's CPU time (the best of three
    runs): a busy machine (xdist workers importing at once) cannot shrink the stall, whose wall
    time is at least its CPU time."""
    rounds = 20_000
    best = min(
        _cpu_time(lambda: hashlib.pbkdf2_hmac("sha256", b"pw", b"salt", rounds)) for _ in "123"
    )
    return max(rounds, int(rounds * target / max(best, 1e-6)))


def _cpu_time(func: Callable[[], object]) -> float:
    start = time.thread_time()
    func()
    return time.thread_time() - start


ROUNDS = _calibrate()


def stalls_of(guard: Collector) -> list[asyncguard.Violation]:
    return [v for v in guard.violations if v.call == "stall"]


def wait_for_stalls(guard: Collector, count: int = 1, timeout: float = 2.0) -> None:
    """The watchdog reports from its own thread, when the heartbeat comes back (or at once when
    ``run_forever`` returns): flush, then poll the collector for a bounded time."""
    deadline = time.monotonic() + timeout
    while len(stalls_of(guard)) < count and time.monotonic() < deadline:
        watchdog = _watchdog.current()
        if watchdog is not None:
            watchdog.flush()
        time.sleep(0.01)


def settle() -> None:
    """For the not-flagged tests: give a report in flight on the watchdog thread (taken out of
    its state under the lock, not yet handed to the collector) time to arrive."""
    watchdog = _watchdog.current()
    if watchdog is not None:
        watchdog.flush()
    time.sleep(0.05)


def expect_stall(
    guard: Collector, loop_kind: str, where: Callable[..., Any], *, source: str = ""
) -> asyncguard.Violation:
    """Exactly one stall, located at ``where``'s ``# <- blocks`` line, measured, explained."""
    wait_for_stalls(guard)
    stalls = stalls_of(guard)
    assert [v.call for v in guard.violations] == ["stall"], [v.message() for v in guard.violations]
    violation = stalls[0]
    message = violation.message()
    assert violation.category == "stall"
    assert violation.location[0] == __file__, message
    assert violation.location[1] == call_line(where), message
    assert violation.location[2].endswith(where.__name__), message
    assert violation.duration is not None and violation.duration >= MIN_DURATION, message
    assert violation.ongoing is False
    assert message.startswith(MESSAGE_START), message
    assert source in violation.args, violation.args
    assert violation.thread == ("loop-worker" if loop_kind == "thread" else "MainThread")
    assert violation.task is not None
    # the samples: the blamed line is the most hit, and the sampled stack runs through it
    assert violation.sample_count >= 1
    assert violation.samples[0][0] == violation.where
    assert violation.samples[0][1] >= 1
    assert (__file__, call_line(where)) in [(f.filename, f.lineno) for f in violation.stack]
    assert violation.hint in message
    return violation


# -- 1. CPU: a C call releasing the GIL, and pure Python ---------------------------------------


def test_cpu_stall_pbkdf2(loop_kind: str, mode: str) -> None:
    async def hash_password() -> None:
        hashlib.pbkdf2_hmac("sha256", b"pw", b"salt", ROUNDS)  # <- blocks

    with asyncguard.guarded(mode=mode, stall_threshold=THRESHOLD) as guard:
        run_on(loop_kind, hash_password)
        violation = expect_stall(guard, loop_kind, hash_password, source="pbkdf2_hmac")
    assert violation.args.startswith('hashlib.pbkdf2_hmac("sha256"')
    assert f"at `{violation.args}`" in violation.message()
    assert violation.request is None and violation.view is None


def test_cpu_stall_pure_python(loop_kind: str, mode: str) -> None:
    async def spin() -> None:
        deadline = time.perf_counter() + STALL
        while time.perf_counter() < deadline:  # <- blocks
            pass

    with asyncguard.guarded(mode=mode, stall_threshold=THRESHOLD) as guard:
        run_on(loop_kind, spin)
        expect_stall(guard, loop_kind, spin, source="while time.perf_counter() < deadline")


def test_samples_distribution_names_the_dominant_line() -> None:
    """One stall spent in two lines: the one with most samples is blamed, the other is listed."""

    async def two_parts() -> None:
        hashlib.pbkdf2_hmac("sha256", b"pw", b"salt", ROUNDS)  # <- blocks
        deadline = time.perf_counter() + STALL / 3
        while time.perf_counter() < deadline:  # <- spins
            pass

    with asyncguard.guarded(mode="warn", stall_threshold=THRESHOLD) as guard:
        run_on("main", two_parts)
        violation = expect_stall(guard, "main", two_parts, source="pbkdf2_hmac")
    spin_line = call_line(two_parts) + 2
    spin_where = asyncguard.Violation.describe((__file__, spin_line, violation.location[2]))
    places = [where for where, _ in violation.samples]
    assert places[0] == violation.where
    if violation.sample_count < _watchdog.MAX_SAMPLES:  # else (a starved machine, pbkdf2 > 1 s
        assert spin_where in places[1:], violation.samples  # wall) only its start was sampled
    hits = [n for _, n in violation.samples]
    assert hits == sorted(hits, reverse=True)
    assert sum(hits) <= violation.sample_count
    assert "samples;" in violation.message()


def test_ongoing_stall_is_reported_once_while_it_lasts() -> None:
    """A stall longer than ``ongoing_after`` is reported while it lasts (not again at its end)."""

    async def endless() -> None:
        hashlib.pbkdf2_hmac("sha256", b"pw", b"salt", ROUNDS * 2)  # <- blocks

    with asyncguard.guarded(mode="warn", stall_threshold=THRESHOLD) as guard:
        watchdog = _watchdog.current()
        assert watchdog is not None
        watchdog.ongoing_after = 0.2
        run_on("main", endless)
        wait_for_stalls(guard)
        settle()
    assert [v.call for v in guard.violations] == ["stall"]
    violation = guard.violations[0]
    assert violation.ongoing is True
    assert violation.location[1] == call_line(endless)
    assert violation.duration is not None and violation.duration >= 0.2
    assert "the event loop has been blocked for" in violation.message()
    assert "so far" in violation.message()


# -- 2. a C extension's own I/O: libpq connecting to a server that never answers ----------------


@contextmanager
def silent_server(hold: float) -> Iterator[int]:
    """A real TCP server on 127.0.0.1 that accepts each connection, says nothing for ``hold``
    seconds, then closes it.  Yields its port."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.02)
    port = listener.getsockname()[1]
    stop = _thread.allocate_lock()
    stop.acquire()

    def serve() -> None:
        while stop.locked():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                time.sleep(hold)

    thread = threading.Thread(target=serve, name="silent-server", daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stop.release()
        thread.join(timeout=5)
        listener.close()


def test_psycopg2_connect_to_a_slow_server(loop_kind: str, mode: str) -> None:
    try:
        import psycopg2
    except ImportError:
        skip_service("psycopg2 is not installed (pip install psycopg2-binary)")

    with silent_server(hold=STALL) as port:
        dsn = {"host": "127.0.0.1", "port": port, "dbname": "x", "user": "x", "sslmode": "disable"}

        async def connect() -> None:
            with pytest.raises(psycopg2.OperationalError):
                psycopg2.connect(connect_timeout=5, **dsn)  # <- blocks

        # the clients family hooks psycopg2.connect itself; without it only the watchdog can
        # see libpq's C-level socket I/O (no Python socket, no audit event)
        with asyncguard.guarded(mode=mode, stall_threshold=THRESHOLD, exclude=["clients"]) as g:
            run_on(loop_kind, connect)
            violation = expect_stall(g, loop_kind, connect, source="psycopg2.connect(")
    # the blamed frame is the test's line, not psycopg2's own connect() in site-packages
    assert "psycopg2" not in violation.location[0]


def test_psycopg2_connect_reported_by_its_hook_is_not_a_stall_too() -> None:
    """With the clients family the hook times the connect (warn): no second report."""
    try:
        import psycopg2
    except ImportError:
        skip_service("psycopg2 is not installed (pip install psycopg2-binary)")

    with silent_server(hold=STALL) as port:
        dsn = {"host": "127.0.0.1", "port": port, "dbname": "x", "user": "x", "sslmode": "disable"}

        async def connect() -> None:
            with pytest.raises(psycopg2.OperationalError):
                psycopg2.connect(connect_timeout=5, **dsn)

        guard = expect_no_stall("main", connect)
    assert [v.call for v in guard.violations] == ["psycopg2.connect"]
    duration = guard.violations[0].duration
    assert duration is not None and duration >= STALL


# -- 3. a C lock (made before install, so not our guarded Lock) held by another thread ---------


def test_contended_lock_made_before_install(loop_kind: str, mode: str) -> None:
    lock = threading.Lock()  # before install: a plain C lock, invisible to the sync family
    assert type(lock) is _thread.LockType
    go = _thread.allocate_lock()
    lock.acquire()
    go.acquire()

    def holder() -> None:
        go.acquire(timeout=10)  # the coroutine is about to wait
        time.sleep(STALL)
        lock.release()

    thread = threading.Thread(target=holder, name="lock-holder", daemon=True)
    thread.start()

    async def take_lock() -> None:
        go.release()
        lock.acquire()  # <- blocks
        lock.release()

    try:
        with asyncguard.guarded(mode=mode, stall_threshold=THRESHOLD) as guard:
            run_on(loop_kind, take_lock)
            expect_stall(guard, loop_kind, take_lock, source="lock.acquire()")
    finally:
        thread.join(timeout=5)


# -- 4. not flagged ------------------------------------------------------------------------------


def expect_no_stall(loop_kind: str, main: Callable[[], Any], **options: Any) -> Collector:
    options.setdefault("mode", "warn")
    options.setdefault("stall_threshold", THRESHOLD)
    with asyncguard.guarded(**options) as guard:
        run_on(loop_kind, main)
        settle()
    assert stalls_of(guard) == [], [v.message() for v in guard.violations]
    return guard


def test_healthy_loop_is_not_flagged(loop_kind: str) -> None:
    async def healthy() -> None:
        for _ in range(25):
            await asyncio.sleep(0.02)

    guard = expect_no_stall(loop_kind, healthy)
    assert guard.violations == []


def test_short_cpu_bursts_are_not_flagged(loop_kind: str) -> None:
    # 20 ms bursts against a 100 ms threshold: 5x margin for a loaded machine
    async def bursts() -> None:
        for _ in range(12):
            deadline = time.perf_counter() + 0.02
            while time.perf_counter() < deadline:
                pass
            await asyncio.sleep(0)

    expect_no_stall(loop_kind, bursts, stall_threshold=0.1)


def test_stall_inside_allow_blocking_block(loop_kind: str) -> None:
    async def allowed() -> None:
        with asyncguard.allow_blocking(reason="a one-off migration"):
            hashlib.pbkdf2_hmac("sha256", b"pw", b"salt", ROUNDS)

    expect_no_stall(loop_kind, allowed)


def test_stall_inside_allow_blocking_stall_key() -> None:
    async def allowed() -> None:
        with asyncguard.allow_blocking("stall"):
            hashlib.pbkdf2_hmac("sha256", b"pw", b"salt", ROUNDS)

    expect_no_stall("main", allowed)


def test_allow_blocking_other_keys_does_not_hide_a_stall() -> None:
    async def other_key() -> None:
        with asyncguard.allow_blocking("time.sleep"):
            hashlib.pbkdf2_hmac("sha256", b"pw", b"salt", ROUNDS)  # <- blocks

    with asyncguard.guarded(mode="warn", stall_threshold=THRESHOLD) as guard:
        run_on("main", other_key)
        expect_stall(guard, "main", other_key, source="pbkdf2_hmac")


@asyncguard.allow_blocking()
def crunch() -> bytes:
    return hashlib.pbkdf2_hmac("sha256", b"pw", b"salt", ROUNDS)


def test_stall_under_allow_blocking_decorated_function() -> None:
    async def calls_crunch() -> None:
        crunch()

    expect_no_stall("main", calls_crunch)


def test_allow_rule_for_stalls_in_this_module() -> None:
    async def ruled() -> None:
        hashlib.pbkdf2_hmac("sha256", b"pw", b"salt", ROUNDS)

    expect_no_stall("main", ruled, allow=[f"stall in {__name__}"])


def test_allow_rule_for_another_module_does_not_hide_a_stall() -> None:
    async def ruled_elsewhere() -> None:
        hashlib.pbkdf2_hmac("sha256", b"pw", b"salt", ROUNDS)  # <- blocks

    options = {"allow": ["stall in somewhere_else"], "stall_threshold": THRESHOLD}
    with asyncguard.guarded(mode="warn", **options) as guard:
        run_on("main", ruled_elsewhere)
        expect_stall(guard, "main", ruled_elsewhere, source="pbkdf2_hmac")


def test_call_reported_by_a_hook_is_not_reported_again(loop_kind: str) -> None:
    async def sleeps() -> None:
        time.sleep(STALL)

    guard = expect_no_stall(loop_kind, sleeps, mode="warn")
    assert [v.call for v in guard.violations] == ["time.sleep"]
    duration = guard.violations[0].duration
    assert duration is not None and duration >= STALL


# -- 5. request attribution through the middleware ---------------------------------------------


def test_stall_names_the_request(loop_kind: str) -> None:
    sent: list[dict[str, Any]] = []

    async def slow_app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        hashlib.pbkdf2_hmac("sha256", b"pw", b"salt", ROUNDS)  # <- blocks
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})

    app = AsyncGuardMiddleware(slow_app, mode="warn", stall_threshold=THRESHOLD)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/slow",
        "raw_path": b"/slow",
        "query_string": b"token=SECRET",
        "headers": [],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
    }

    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    async def serve() -> None:
        await app(scope, receive, send)

    with asyncguard.guarded() as guard:  # installed by the middleware: just collect
        run_on(loop_kind, serve)
        violation = expect_stall(guard, loop_kind, slow_app, source="pbkdf2_hmac")
    assert violation.request == "GET /slow"
    assert "request 'GET /slow'" in violation.message()
    assert "SECRET" not in violation.message()
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]


# -- 6. loop discovery and uninstall ------------------------------------------------------------


def test_loop_created_on_a_thread_after_install_is_watched() -> None:
    box: dict[str, Any] = {}

    async def late_loop() -> None:
        watchdog = _watchdog.current()
        box["watched"] = watchdog is not None and asyncio.get_running_loop() in watchdog.watching()
        hashlib.pbkdf2_hmac("sha256", b"pw", b"salt", ROUNDS)  # <- blocks

    def target() -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(late_loop())
        except BaseException as exc:
            box["error"] = exc
        finally:
            loop.close()

    with asyncguard.guarded(mode="warn", stall_threshold=THRESHOLD) as guard:
        thread = threading.Thread(target=target, name="late-loop")
        thread.start()
        thread.join()
        assert "error" not in box, box
        wait_for_stalls(guard)
    assert box["watched"] is True
    assert [v.call for v in guard.violations] == ["stall"]
    violation = guard.violations[0]
    assert violation.thread == "late-loop"
    assert violation.location[1] == call_line(late_loop)
    assert violation.duration is not None and violation.duration >= MIN_DURATION


def test_loop_already_running_at_install_is_watched(loop_kind: str) -> None:
    async def install_inside() -> tuple[bool, list[asyncguard.Violation]]:
        assert _guard.current() is None
        with asyncguard.guarded(mode="warn", stall_threshold=THRESHOLD) as guard:
            watchdog = _watchdog.current()
            watched = watchdog is not None and asyncio.get_running_loop() in watchdog.watching()
            hashlib.pbkdf2_hmac("sha256", b"pw", b"salt", ROUNDS)  # <- blocks
            deadline = time.monotonic() + 2.0
            while not stalls_of(guard) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)  # the heartbeat comes back, the watchdog reports
        return watched, list(guard.violations)

    watched, violations = run_on(loop_kind, install_inside)
    assert watched is True
    assert [v.call for v in violations] == ["stall"], violations
    violation = violations[0]
    assert violation.location[1] == call_line(install_inside)
    assert violation.location[2].endswith("install_inside")
    assert violation.duration is not None and violation.duration >= MIN_DURATION
    assert violation.thread == ("loop-worker" if loop_kind == "thread" else "MainThread")


@pytest.mark.parametrize(
    "how",
    [
        "asyncio-installed-inside",
        "uvloop-installed-before",
        "uvloop-installed-inside",
    ],
)
def test_idle_loop_is_not_blamed(how: str) -> None:
    """A sample of an idle loop (its heartbeat late for the GIL or the CPU, not blocked) is
    exempt, also for a loop that was already running when the guard was installed."""
    runner: Any = asyncio.run
    if how.startswith("uvloop"):
        try:
            import uvloop
        except ImportError:
            skip_service("uvloop is not installed (pip install uvloop)")
        runner = uvloop.run
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def idle() -> None:
        with asyncguard.guarded(mode="warn", stall_threshold=THRESHOLD):
            release = asyncio.Event()
            box.update(loop=asyncio.get_running_loop(), ident=threading.get_ident())
            box["release"] = release.set
            ready.set()
            await release.wait()  # idle: nothing to run until the test thread releases it

    def target() -> None:
        try:
            runner(idle())
        except BaseException as exc:
            box["error"] = exc
            ready.set()

    if how.endswith("-before"):
        asyncguard.install(mode="warn", stall_threshold=THRESHOLD)
    thread = threading.Thread(target=target, name="idle-loop", daemon=True)
    thread.start()
    try:
        assert ready.wait(timeout=5) and "error" not in box, box
        loop = box["loop"]
        time.sleep(0.05)  # the loop is back in its selector (or in uvloop's C loop)
        watchdog = _watchdog.current()
        assert watchdog is not None
        probe = watchdog._watched[id(loop)]  # the watchdog's own record of this loop
        probe.end_stall()
        watchdog._sample(probe, loop, sys._current_frames()[box["ident"]])
        assert probe.samples and probe.samples[0].exempt, probe.samples
    finally:
        if "release" in box:
            box["loop"].call_soon_threadsafe(box["release"])
        thread.join(timeout=5)
    assert "error" not in box, box


def _watchdog_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "asyncguard-watchdog" and t.is_alive()]


def test_uninstall_stops_the_watchdog_and_restores_run_forever() -> None:
    base = asyncio.base_events.BaseEventLoop
    original = base.__dict__["run_forever"]
    assert asyncio.BaseEventLoop.run_forever is original
    uvloop: Any
    try:
        import uvloop
    except ImportError:
        uvloop = None
    uv_original = uvloop.Loop.__dict__.get("run_forever") if uvloop is not None else None

    asyncguard.install(mode="warn", stall_threshold=THRESHOLD)
    wrapped = base.__dict__["run_forever"]
    assert wrapped is not original
    assert wrapped.__wrapped__ is original
    assert wrapped.__name__ == "run_forever"
    asyncio.run(asyncio.sleep(0))
    assert _watchdog.current() is not None
    assert len(_watchdog_threads()) == 1

    asyncguard.uninstall()
    deadline = time.monotonic() + 2.0
    while _watchdog_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _watchdog_threads() == []
    assert _watchdog.current() is None
    assert base.__dict__["run_forever"] is original
    assert asyncio.BaseEventLoop.run_forever is original
    if uvloop is not None:
        assert uvloop.Loop.__dict__.get("run_forever") is uv_original

    asyncio.run(asyncio.sleep(0))  # a loop after uninstall starts no watchdog
    assert _watchdog_threads() == []


def test_reinstall_with_another_threshold_replaces_the_thread() -> None:
    asyncguard.install(mode="warn", stall_threshold=THRESHOLD)
    first = _watchdog.current()
    asyncguard.install(mode="warn", stall_threshold=THRESHOLD)
    assert _watchdog.current() is first  # same options: same watchdog
    asyncguard.install(mode="warn", stall_threshold=0.2)
    second = _watchdog.current()
    assert second is not first and second is not None and second.threshold == 0.2
    deadline = time.monotonic() + 2.0
    while len(_watchdog_threads()) > 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(_watchdog_threads()) == 1


# -- 7. no watchdog, bad values ---------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [{"stall_threshold": None}, {"stall_threshold": 0}, {"mode": "off"}],
    ids=["none", "zero", "mode-off"],
)
def test_no_stall_reported_without_a_threshold(options: dict[str, Any]) -> None:
    async def hash_password() -> None:
        hashlib.pbkdf2_hmac("sha256", b"pw", b"salt", ROUNDS)

    options = {"mode": "warn", "stall_threshold": THRESHOLD, **options}
    with asyncguard.guarded(**options) as guard:
        watchdog = _watchdog.current()  # none, or one that only runs the periodic summary
        assert watchdog is None or not watchdog.watch_loops
        run_on("main", hash_password)
        settle()
    assert guard.violations == []


@pytest.mark.parametrize("bad", [-1, "fast", True, [0.1]])
def test_bad_stall_threshold(bad: object) -> None:
    with pytest.raises(ValueError, match=rf"stall_threshold .*{re.escape(repr(bad))}"):
        asyncguard.install(mode="warn", stall_threshold=bad)
    assert _guard.current() is None
    assert _watchdog.current() is None
