"""Sync primitives that really wait on a loop thread: locks, conditions, events, semaphores,
barriers, Thread.join, queue.Queue and concurrent.futures waits.

Every waiting case uses a real second thread (holding the lock, setting the future later, ...)
or a real timeout; every non-waiting use is checked not to be flagged.
"""

from __future__ import annotations

import _thread
import asyncio
import concurrent.futures as cf
import contextlib
import copy
import io
import logging
import pickle
import queue
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async

import asyncguard
from asyncguard import _judge, _patch
from asyncguard._hooks._locks import GuardedLock, GuardedRLock
from conftest import (
    PY313,
    expect_clean_off_loop,
    expect_clean_on_loop,
    expect_violation,
    run_on,
)

HOLD = 0.05  # how long another thread holds a lock / delays a result
CATEGORY = "sync-primitive"


def _waits_in_guard(ident: int) -> bool:
    """Thread ``ident`` is inside the guard's timed run of a blocking call (warn mode)."""
    frame = sys._current_frames().get(ident)
    while frame is not None:
        if frame.f_code in _GUARD_WAIT_CODES:
            return True
        frame = frame.f_back
    return False


_GUARD_WAIT_CODES = {_judge.act.__code__, _judge.timed_iteration.__code__}


class Background:
    """Real helper threads for a test; all let go and joined at teardown (off the loop).

    Unless given fixed ``seconds``, a helper keeps its lock (or delays its action) until the
    thread that set it up is seen waiting inside the guard (warn mode: the call really waits),
    then ``HOLD`` longer -- or until :meth:`finish` (raise mode: the call raised instead).  So
    a violation never depends on scheduling, and a warn duration is at least ``HOLD``.
    """

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []
        self._finish = _thread.allocate_lock()  # raw C locks: never guarded
        self._finish.acquire()

    def finish(self) -> None:
        if self._finish.locked():
            self._finish.release()

    def _until_waited(self, ident: int, seconds: float | None) -> None:
        if seconds is not None:
            time.sleep(seconds)
            return
        while self._finish.locked():
            if _waits_in_guard(ident):
                time.sleep(HOLD)
                return
            time.sleep(0.001)

    def _start(self, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name="helper", daemon=True)
        thread.start()
        self.threads.append(thread)

    def hold(self, cm: Any, seconds: float | None = None) -> None:
        """Enter ``cm`` (a lock, a condition...) on another thread and keep it; return once
        that thread holds it."""
        ident = threading.get_ident()
        ready = _thread.allocate_lock()
        ready.acquire()

        def run() -> None:
            with cm:
                ready.release()
                self._until_waited(ident, seconds)

        self._start(run)
        ready.acquire()

    def later(self, func: Callable[..., Any], *args: Any, seconds: float | None = None) -> None:
        """Call ``func(*args)`` on another thread, later."""
        ident = threading.get_ident()

        def run() -> None:
            self._until_waited(ident, seconds)
            func(*args)

        self._start(run)

    def sleeper(self) -> Callable[..., None]:
        """A function that returns only when the calling thread waits in the guard (+HOLD)."""
        ident = threading.get_ident()
        return lambda *args: self._until_waited(ident, None)

    def join(self) -> None:
        self.finish()
        for thread in self.threads:
            thread.join(5)


@pytest.fixture
def bg() -> Iterator[Background]:
    background = Background()
    yield background
    background.join()


def assert_clean(
    loop_kind: str, main: Callable[[], Coroutine[Any, Any, Any]], **options: Any
) -> Any:
    with asyncguard.guarded(mode="raise", **options) as guard:
        result = run_on(loop_kind, main)
    assert guard.violations == [], "\n".join(v.message() for v in guard.violations)
    return result


def waited(violation: asyncguard.Violation, mode: str) -> None:
    if mode == "warn":
        assert violation.duration is not None
        # the helper saw the call waiting, then let it go HOLD later (small margin for the
        # moment between entering the guard's timed run and its clock start)
        assert violation.duration >= HOLD * 0.8, violation.duration


# -- threading.Lock / threading.RLock ---------------------------------------------------------


@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_with_lock_contended(loop_kind: str, mode: str, bg: Background, kind: str) -> None:
    def blocking() -> None:
        lock = getattr(threading, kind)()
        bg.hold(lock)
        with lock:  # <- blocks
            pass

    violation = expect_violation(
        loop_kind, mode, blocking, f"threading.{kind}.acquire", category=CATEGORY
    )
    assert violation.call_expr == f"threading.{kind}.acquire()"
    assert "use `asyncio.Lock` between tasks" in violation.message()
    waited(violation, mode)


@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_lock_acquire_contended(loop_kind: str, mode: str, bg: Background, kind: str) -> None:
    def blocking() -> None:
        lock = getattr(threading, kind)()
        bg.hold(lock)
        assert lock.acquire()  # <- blocks
        lock.release()

    violation = expect_violation(loop_kind, mode, blocking, f"threading.{kind}.acquire")
    assert violation.call_expr == f"threading.{kind}.acquire()"
    waited(violation, mode)


@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_lock_acquire_with_timeout(loop_kind: str, mode: str, bg: Background, kind: str) -> None:
    def blocking() -> None:
        lock = getattr(threading, kind)()
        bg.hold(lock)
        assert lock.acquire(timeout=5)  # <- blocks
        lock.release()

    violation = expect_violation(loop_kind, mode, blocking, f"threading.{kind}.acquire")
    assert violation.call_expr == f"threading.{kind}.acquire(timeout=5)"


def test_raise_mode_raises_before_waiting(loop_kind: str, bg: Background) -> None:
    let_go = _thread.allocate_lock()  # raw C locks: never guarded
    let_go.acquire()
    holder_state: list[str] = []

    def blocking() -> None:
        lock = threading.Lock()
        ready = _thread.allocate_lock()
        ready.acquire()

        def hold_until_let_go() -> None:
            with lock:
                ready.release()
                let_go.acquire(timeout=5)
                holder_state.append("released")

        holder = threading.Thread(target=hold_until_let_go)
        bg.threads.append(holder)
        holder.start()
        ready.acquire()
        try:
            lock.acquire()  # <- blocks
        finally:
            # raised while the holder still held the lock: no waiting happened
            assert holder_state == []
            let_go.release()

    expect_violation(loop_kind, "raise", blocking, "threading.Lock.acquire")


def test_with_condition_contended(loop_kind: str, mode: str, bg: Background) -> None:
    def blocking() -> None:
        cond = threading.Condition()  # an RLock inside
        bg.hold(cond)
        with cond:  # <- blocks
            pass

    waited(expect_violation(loop_kind, mode, blocking, "threading.RLock.acquire"), mode)


def test_condition_acquire_contended(loop_kind: str, mode: str, bg: Background) -> None:
    def blocking() -> None:
        cond = threading.Condition(threading.Lock())
        bg.hold(cond)
        cond.acquire()  # <- blocks
        cond.release()

    expect_violation(loop_kind, mode, blocking, "threading.Lock.acquire")


@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_free_or_non_blocking_lock_not_flagged(loop_kind: str, bg: Background, kind: str) -> None:
    def not_waiting() -> None:
        lock = getattr(threading, kind)()
        with lock:
            pass
        assert lock.acquire()
        lock.release()
        assert lock.acquire(timeout=5)  # free: taken at once
        lock.release()
        bg.hold(lock)
        assert lock.acquire(False) is False
        assert lock.acquire(blocking=False) is False
        assert lock.acquire(timeout=0) is False

    expect_clean_on_loop(loop_kind, not_waiting)


def test_rlock_reentry_not_flagged(loop_kind: str) -> None:
    def reentrant() -> None:
        rlock = threading.RLock()
        with rlock, rlock:
            assert rlock.acquire()
            rlock.release()

    expect_clean_on_loop(loop_kind, reentrant)


@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_lock_contended_off_loop(bg: Background, kind: str) -> None:
    def contended() -> None:
        lock = getattr(threading, kind)()
        bg.hold(lock, seconds=0.01)
        with lock:
            pass

    expect_clean_off_loop(contended)


def test_lock_created_before_install_is_a_raw_c_lock(loop_kind: str, bg: Background) -> None:
    # documented gap: ``with lock:`` on a C ``_thread.lock`` runs in C and cannot be hooked
    lock = threading.Lock()

    def contended() -> None:
        bg.hold(lock, seconds=0.01)
        with lock:
            pass

    expect_clean_on_loop(loop_kind, contended)
    assert type(lock) is _thread.LockType


def test_allow_blocking_lets_a_lock_wait(loop_kind: str, bg: Background) -> None:
    def allowed() -> None:
        lock = threading.Lock()
        bg.hold(lock, seconds=0.01)
        with asyncguard.allow_blocking("threading.Lock.acquire"), lock:
            pass

    expect_clean_on_loop(loop_kind, allowed)


def test_guarded_lock_behaves_like_the_real_one() -> None:
    asyncguard.install()
    lock = threading.Lock()
    raw = _thread.allocate_lock()
    assert type(lock) is GuardedLock
    assert isinstance(lock, threading.Lock)
    assert isinstance(raw, threading.Lock)  # a lock made before install is still a Lock
    assert issubclass(_thread.LockType, threading.Lock)
    assert not isinstance(object(), threading.Lock)
    assert repr(lock).startswith("<unlocked GuardedLock object at 0x")
    assert lock.__enter__() is True
    assert lock.locked()
    assert repr(lock).startswith("<locked GuardedLock")
    assert lock.__exit__(None, None, None) is None
    assert not lock.locked()
    assert lock.acquire_lock() and lock.locked_lock()
    lock.release_lock()
    with pytest.raises(RuntimeError) as guarded_error:
        lock.release()
    with pytest.raises(RuntimeError) as raw_error:
        raw.release()
    assert str(guarded_error.value) == str(raw_error.value)
    for args, kwargs in [((False, 1), {}), ((True, -5), {}), ((), {"timeout": "x"})]:
        with pytest.raises((ValueError, TypeError)) as raw_info:
            raw.acquire(*args, **kwargs)
        with pytest.raises(raw_info.type):
            lock.acquire(*args, **kwargs)
    lock.acquire()
    lock._at_fork_reinit()
    assert not lock.locked()
    assert weakref.ref(lock)() is lock
    with pytest.raises(TypeError, match="cannot pickle"):
        pickle.dumps(lock)
    with pytest.raises(TypeError, match="cannot pickle"):
        copy.copy(lock)
    with pytest.raises(AttributeError):
        lock._release_save  # noqa: B018 - Condition must see a plain lock
    with pytest.raises(TypeError):
        threading.Lock(1)  # type: ignore[call-arg]


def test_guarded_rlock_behaves_like_the_real_one() -> None:
    asyncguard.install()
    rlock = threading.RLock()
    assert isinstance(rlock, GuardedRLock) and isinstance(rlock, _thread.RLock)
    assert "unlocked GuardedRLock object owner=0 count=0" in repr(rlock)
    with rlock, rlock:
        assert rlock._is_owned()
        if hasattr(rlock, "_recursion_count"):
            assert rlock._recursion_count() == 2
        state = rlock._release_save()
        assert not rlock._is_owned()
        rlock._acquire_restore(state)
    assert not rlock._is_owned()
    with pytest.raises(RuntimeError):
        rlock.release()
    assert weakref.ref(rlock)() is rlock
    with pytest.raises(TypeError, match="cannot pickle"):
        pickle.dumps(rlock)
    if PY313:
        with pytest.warns(DeprecationWarning, match="Passing arguments to RLock"):
            threading.RLock(1)


@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_condition_on_guarded_locks_off_loop(kind: str) -> None:
    asyncguard.install()
    cond = threading.Condition(getattr(threading, kind)())
    ready: list[int] = []

    def producer() -> None:
        time.sleep(0.01)
        with cond:
            ready.append(1)
            cond.notify_all()

    thread = threading.Thread(target=producer)
    thread.start()
    with cond:
        assert cond.wait_for(lambda: ready, timeout=5)
    thread.join()
    event = threading.Event()
    threading.Timer(0.01, event.set).start()
    assert event.wait(5)


def test_install_excluding_sync_leaves_locks_alone() -> None:
    before = threading.Lock
    asyncguard.install(exclude=["sync"])
    assert threading.Lock is before
    assert type(threading.RLock()) is _thread.RLock


def _patched_targets() -> list[tuple[Any, str]]:
    from concurrent.futures import _base

    targets: list[tuple[Any, str]] = [
        (threading, "Lock"),
        (threading, "RLock"),
        (threading, "_allocate_lock"),
        (tempfile, "_allocate_lock"),
        (threading.Condition, "wait"),
        (threading.Condition, "wait_for"),
        (threading.Event, "wait"),
        (threading.Semaphore, "acquire"),
        (threading.Semaphore, "__enter__"),
        (threading.Barrier, "wait"),
        (threading.Thread, "join"),
        (queue.Queue, "get"),
        (queue.Queue, "put"),
        (queue.Queue, "join"),
        (cf.Future, "result"),
        (cf.Future, "exception"),
        (cf, "wait"),
        (cf, "as_completed"),
        (_base, "wait"),
        (_base, "as_completed"),
    ]
    if hasattr(threading, "_LockType"):
        targets.append((threading, "_LockType"))
    return targets


def test_uninstall_restores_everything_identically(loop_kind: str, bg: Background) -> None:
    targets = _patched_targets()
    before = [vars(owner)[name] for owner, name in targets]
    asyncguard.install()
    assert threading.Lock is GuardedLock
    assert threading.RLock is not before[1]
    assert threading.Condition.wait is not before[4]
    lock, rlock = threading.Lock(), threading.RLock()
    cond, event, work = threading.Condition(), threading.Event(), queue.Queue[int]()
    asyncguard.uninstall()
    for (owner, name), original in zip(targets, before, strict=True):
        assert vars(owner)[name] is original, f"{owner}.{name}"
    assert _patch.patched() == []

    # locks made while installed keep working, contended too, on a loop with no guard
    async def main() -> None:
        for each in (lock, rlock, cond):
            bg.hold(each, seconds=0.01)
            with each:
                pass
        bg.later(event.set, seconds=0.01)
        assert event.wait(5)
        bg.later(work.put, 1, seconds=0.01)
        assert work.get(timeout=5) == 1

    run_on(loop_kind, main)


# -- Condition / Event / Semaphore / Barrier / Thread.join --------------------------------------


def test_condition_wait(loop_kind: str, mode: str) -> None:
    def blocking() -> None:
        cond = threading.Condition()
        with cond:
            assert cond.wait(HOLD) is False  # <- blocks

    violation = expect_violation(loop_kind, mode, blocking, "threading.Condition.wait")
    assert violation.call_expr == "threading.Condition.wait(timeout=0.05)"
    waited(violation, mode)


def test_condition_wait_for(loop_kind: str, mode: str) -> None:
    def blocking() -> None:
        cond = threading.Condition()
        with cond:
            assert not cond.wait_for(lambda: False, timeout=HOLD)  # <- blocks

    violation = expect_violation(loop_kind, mode, blocking, "threading.Condition.wait_for")
    assert violation.call_expr == "threading.Condition.wait_for(timeout=0.05)"
    waited(violation, mode)


def test_condition_not_waiting(loop_kind: str) -> None:
    def not_waiting() -> None:
        cond = threading.Condition()
        with cond:
            assert cond.wait(0) is False
            assert cond.wait(-1) is False
            assert cond.wait_for(lambda: 42) == 42  # true already: never waits
            assert cond.wait_for(lambda: 0, timeout=0) == 0
            cond.notify_all()

    expect_clean_on_loop(loop_kind, not_waiting)


def test_condition_wait_off_loop() -> None:
    def wait() -> None:
        cond = threading.Condition()
        with cond:
            cond.wait(0.001)
            cond.wait_for(lambda: False, timeout=0.001)

    expect_clean_off_loop(wait)


def test_event_wait(loop_kind: str, mode: str, bg: Background) -> None:
    def blocking() -> None:
        event = threading.Event()
        bg.later(event.set)
        assert event.wait()  # <- blocks

    violation = expect_violation(loop_kind, mode, blocking, "threading.Event.wait")
    assert violation.call_expr == "threading.Event.wait()"
    assert "asyncio.Event" in violation.message()
    waited(violation, mode)


def test_event_not_waiting(loop_kind: str) -> None:
    def not_waiting() -> None:
        event = threading.Event()
        assert event.wait(0) is False
        event.set()
        assert event.wait() is True
        assert event.wait(5) is True

    expect_clean_on_loop(loop_kind, not_waiting)


def test_event_wait_off_loop(bg: Background) -> None:
    def wait() -> None:
        event = threading.Event()
        bg.later(event.set, seconds=0.01)
        assert event.wait(5)

    expect_clean_off_loop(wait)


@pytest.mark.parametrize("kind", ["Semaphore", "BoundedSemaphore"])
def test_semaphore_acquire(loop_kind: str, mode: str, bg: Background, kind: str) -> None:
    def blocking() -> None:
        sem = getattr(threading, kind)(1)
        assert sem.acquire()
        bg.later(sem.release)
        assert sem.acquire()  # <- blocks

    violation = expect_violation(loop_kind, mode, blocking, "threading.Semaphore.acquire")
    assert violation.call_expr == "threading.Semaphore.acquire()"
    waited(violation, mode)


@pytest.mark.parametrize("kind", ["Semaphore", "BoundedSemaphore"])
def test_with_semaphore(loop_kind: str, mode: str, bg: Background, kind: str) -> None:
    def blocking() -> None:
        sem = getattr(threading, kind)(1)
        bg.hold(sem)
        with sem:  # <- blocks
            pass

    waited(expect_violation(loop_kind, mode, blocking, "threading.Semaphore.acquire"), mode)


def test_semaphore_acquire_timeout(loop_kind: str, mode: str) -> None:
    def blocking() -> None:
        sem = threading.Semaphore(0)
        assert sem.acquire(timeout=HOLD) is False  # <- blocks

    violation = expect_violation(loop_kind, mode, blocking, "threading.Semaphore.acquire")
    assert violation.call_expr == "threading.Semaphore.acquire(timeout=0.05)"
    waited(violation, mode)


def test_semaphore_not_waiting(loop_kind: str) -> None:
    def not_waiting() -> None:
        sem = threading.BoundedSemaphore(2)
        with sem:
            assert sem.acquire()
            assert sem.acquire(False) is False
            assert sem.acquire(timeout=0) is False
            sem.release()

    expect_clean_on_loop(loop_kind, not_waiting)


def test_semaphore_off_loop(bg: Background) -> None:
    def wait() -> None:
        sem = threading.Semaphore(0)
        bg.later(sem.release, seconds=0.01)
        assert sem.acquire(timeout=5)

    expect_clean_off_loop(wait)


def test_barrier_wait(loop_kind: str, mode: str) -> None:
    def blocking() -> None:
        barrier = threading.Barrier(2)
        with contextlib.suppress(threading.BrokenBarrierError):  # warn: nobody else came
            barrier.wait(HOLD)  # <- blocks

    violation = expect_violation(loop_kind, mode, blocking, "threading.Barrier.wait")
    assert violation.call_expr == "threading.Barrier.wait(timeout=0.05)"
    waited(violation, mode)


def test_barrier_not_waiting(loop_kind: str) -> None:
    single = threading.Barrier(1)
    pair = threading.Barrier(2)
    first = threading.Thread(target=pair.wait, args=(5,))
    first.start()
    while pair.n_waiting != 1:
        time.sleep(0.001)

    def not_waiting() -> None:
        single.wait()
        pair.wait()  # the last party to arrive releases the other one
        broken = threading.Barrier(2)
        broken.abort()
        with pytest.raises(threading.BrokenBarrierError):
            broken.wait()

    expect_clean_on_loop(loop_kind, not_waiting)
    first.join()


def test_barrier_off_loop() -> None:
    def wait() -> None:
        barrier = threading.Barrier(2)
        other = threading.Thread(target=barrier.wait, args=(5,))
        other.start()
        barrier.wait(5)
        other.join()

    expect_clean_off_loop(wait)


def test_thread_join(loop_kind: str, mode: str, bg: Background) -> None:
    def blocking() -> None:
        worker = threading.Thread(target=bg.sleeper(), name="sleeper")
        bg.threads.append(worker)
        worker.start()
        worker.join()  # <- blocks

    violation = expect_violation(loop_kind, mode, blocking, "threading.Thread.join")
    assert violation.call_expr == "threading.Thread.join()"
    assert "await the work instead" in violation.message()
    waited(violation, mode)


def test_thread_join_not_waiting(loop_kind: str, bg: Background) -> None:
    finished = threading.Thread(target=lambda: None)
    finished.start()
    finished.join()

    def not_waiting() -> None:
        finished.join()
        worker = threading.Thread(target=time.sleep, args=(HOLD,))
        bg.threads.append(worker)
        worker.start()
        worker.join(0)
        worker.join(timeout=0)

    expect_clean_on_loop(loop_kind, not_waiting)


def test_thread_join_off_loop() -> None:
    def join() -> None:
        worker = threading.Thread(target=time.sleep, args=(0.01,))
        worker.start()
        worker.join()

    expect_clean_off_loop(join)


# -- queue.Queue --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["Queue", "LifoQueue", "PriorityQueue"])
def test_queue_get(loop_kind: str, mode: str, bg: Background, kind: str) -> None:
    def blocking() -> None:
        work = getattr(queue, kind)()
        bg.later(work.put, 1)
        assert work.get() == 1  # <- blocks

    violation = expect_violation(loop_kind, mode, blocking, "queue.Queue.get")
    assert violation.call_expr == "queue.Queue.get()"
    assert "asyncio.Queue" in violation.message()
    waited(violation, mode)


def test_queue_get_timeout(loop_kind: str, mode: str) -> None:
    def blocking() -> None:
        with pytest.raises(queue.Empty):
            queue.Queue().get(timeout=HOLD)  # <- blocks

    violation = expect_violation(loop_kind, mode, blocking, "queue.Queue.get")
    assert violation.call_expr == "queue.Queue.get(timeout=0.05)"
    waited(violation, mode)


def test_queue_put_full(loop_kind: str, mode: str, bg: Background) -> None:
    def blocking() -> None:
        work: queue.Queue[int] = queue.Queue(maxsize=1)
        work.put(1)
        bg.later(work.get)
        work.put(2)  # <- blocks

    violation = expect_violation(loop_kind, mode, blocking, "queue.Queue.put")
    assert violation.call_expr == "queue.Queue.put()"  # the item is never shown
    waited(violation, mode)


def test_queue_join(loop_kind: str, mode: str, bg: Background) -> None:
    def blocking() -> None:
        work: queue.Queue[int] = queue.Queue()
        work.put(1)
        bg.later(work.task_done)
        work.join()  # <- blocks

    waited(expect_violation(loop_kind, mode, blocking, "queue.Queue.join"), mode)


def test_queue_not_waiting(loop_kind: str) -> None:
    def not_waiting() -> None:
        work: queue.Queue[int] = queue.Queue(maxsize=1)
        work.put(1)  # a free slot
        assert work.full()
        with pytest.raises(queue.Full):
            work.put_nowait(2)
        with pytest.raises(queue.Full):
            work.put(2, timeout=0)
        with pytest.raises(queue.Full):
            work.put(2, block=False)
        assert work.get() == 1  # an item is there
        with pytest.raises(queue.Empty):
            work.get_nowait()
        with pytest.raises(queue.Empty):
            work.get(timeout=0)
        with pytest.raises(queue.Empty):
            work.get(False)
        work.put_nowait(3)
        assert work.get_nowait() == 3
        work.task_done()
        work.task_done()
        work.join()  # no unfinished task
        lifo: queue.LifoQueue[int] = queue.LifoQueue()
        lifo.put(1)
        lifo.put(2)
        assert lifo.get() == 2

    expect_clean_on_loop(loop_kind, not_waiting)


def test_queue_off_loop(bg: Background) -> None:
    def wait() -> None:
        work: queue.Queue[int] = queue.Queue(maxsize=1)
        bg.later(work.put, 1, seconds=0.01)
        assert work.get(timeout=5) == 1
        work.put(2)
        bg.later(work.get, seconds=0.01)
        work.put(3, timeout=5)

    expect_clean_off_loop(wait)


# -- concurrent.futures -------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["result", "exception"])
def test_future_result(loop_kind: str, mode: str, bg: Background, method: str) -> None:
    def blocking() -> None:
        future: cf.Future[int] = cf.Future()
        bg.later(future.set_result, 1)
        getattr(future, method)()  # <- blocks

    violation = expect_violation(loop_kind, mode, blocking, f"concurrent.futures.Future.{method}")
    assert violation.call_expr == f"concurrent.futures.Future.{method}()"
    assert "await asyncio.wrap_future(future)" in violation.message()
    waited(violation, mode)


def test_future_result_timeout(loop_kind: str, mode: str) -> None:
    def blocking() -> None:
        future: cf.Future[int] = cf.Future()
        with pytest.raises(cf.TimeoutError):
            future.result(timeout=HOLD)  # <- blocks

    violation = expect_violation(loop_kind, mode, blocking, "concurrent.futures.Future.result")
    assert violation.call_expr == "concurrent.futures.Future.result(timeout=0.05)"


def test_executor_map_iteration(loop_kind: str, mode: str, bg: Background) -> None:
    pool = cf.ThreadPoolExecutor(1)

    def blocking() -> None:
        assert list(pool.map(bg.sleeper(), [1])) == [None]  # <- blocks

    try:
        violation = expect_violation(loop_kind, mode, blocking, "concurrent.futures.Future.result")
        waited(violation, mode)
    finally:
        bg.finish()
        pool.shutdown()


def test_run_coroutine_threadsafe_result(loop_kind: str, mode: str, bg: Background) -> None:
    other = asyncio.new_event_loop()
    runner = threading.Thread(target=other.run_forever, name="other-loop")
    runner.start()

    futures: list[cf.Future[int]] = []

    def blocking() -> None:
        future = asyncio.run_coroutine_threadsafe(asyncio.to_thread(bg.sleeper()), other)
        futures.append(future)
        assert future.result() is None  # <- blocks

    try:
        violation = expect_violation(loop_kind, mode, blocking, "concurrent.futures.Future.result")
        waited(violation, mode)
    finally:
        bg.finish()
        for future in futures:
            future.result(5)  # off the loop: let the other loop finish its task
        other.call_soon_threadsafe(other.stop)
        runner.join()
        other.close()


def test_futures_wait(loop_kind: str, mode: str, bg: Background) -> None:
    def blocking() -> None:
        done: cf.Future[int] = cf.Future()
        done.set_result(0)
        future: cf.Future[int] = cf.Future()
        bg.later(future.set_result, 1)
        finished, pending = cf.wait(f for f in (done, future))  # <- blocks
        assert finished == {done, future} and not pending

    violation = expect_violation(loop_kind, mode, blocking, "concurrent.futures.wait")
    assert violation.call_expr == "concurrent.futures.wait()"
    waited(violation, mode)


def test_futures_wait_not_waiting(loop_kind: str) -> None:
    def not_waiting() -> None:
        done: cf.Future[int] = cf.Future()
        done.set_result(0)
        failed: cf.Future[int] = cf.Future()
        failed.set_exception(ValueError("x"))
        pending: cf.Future[int] = cf.Future()
        assert cf.wait([done, failed]).done == {done, failed}
        assert cf.wait(iter([done, pending]), return_when=cf.FIRST_COMPLETED).done == {done}
        result = cf.wait([failed, pending], return_when=cf.FIRST_EXCEPTION)
        assert result.done == {failed} and result.not_done == {pending}
        assert cf.wait([pending], timeout=0).not_done == {pending}

    expect_clean_on_loop(loop_kind, not_waiting)


def test_as_completed(loop_kind: str, mode: str, bg: Background) -> None:
    def blocking() -> None:
        future: cf.Future[int] = cf.Future()
        bg.later(future.set_result, 1)
        completed = cf.as_completed([future])  # <- blocks
        assert [f.result() for f in completed] == [1]

    # raise mode raises at the call itself (a generator would only run at the first next())
    violation = expect_violation(loop_kind, mode, blocking, "concurrent.futures.as_completed")
    assert violation.call_expr == "concurrent.futures.as_completed()"
    waited(violation, mode)


def test_as_completed_not_waiting(loop_kind: str) -> None:
    def not_waiting() -> None:
        futures: list[cf.Future[int]] = [cf.Future() for _ in range(3)]
        for i, future in enumerate(futures):
            future.set_result(i)
        assert sorted(f.result() for f in cf.as_completed(iter(futures))) == [0, 1, 2]
        with pytest.raises(cf.TimeoutError):
            list(cf.as_completed([cf.Future()], timeout=0))

    expect_clean_on_loop(loop_kind, not_waiting)


def test_futures_off_loop(bg: Background) -> None:
    def wait() -> None:
        future: cf.Future[int] = cf.Future()
        bg.later(future.set_result, 1, seconds=0.01)
        assert future.result(5) == 1
        other: cf.Future[int] = cf.Future()
        bg.later(other.set_result, 2, seconds=0.01)
        assert cf.wait([other], timeout=5).done == {other}
        last: cf.Future[int] = cf.Future()
        bg.later(last.set_result, 3, seconds=0.01)
        assert [f.result() for f in cf.as_completed([last], timeout=5)] == [3]

    expect_clean_off_loop(wait)


# -- asyncio's own machinery and the standard library's internal waits: never flagged ---------


def _lock_heavy(n: int) -> int:
    lock, cond, work = threading.Lock(), threading.Condition(), queue.Queue[int]()
    for i in range(200):
        with lock, cond:
            work.put(i)
        work.get()
    return n


def test_to_thread_and_run_in_executor(loop_kind: str) -> None:
    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        results = await asyncio.gather(*(asyncio.to_thread(_lock_heavy, i) for i in range(20)))
        results += await asyncio.gather(
            *(loop.run_in_executor(None, _lock_heavy, i) for i in range(20))
        )
        return results

    assert assert_clean(loop_kind, main) == list(range(20)) * 2


def test_executor_submit_from_the_loop(loop_kind: str) -> None:
    async def main() -> list[int]:
        pool = cf.ThreadPoolExecutor(4)
        futures = [pool.submit(_lock_heavy, i) for i in range(20)]
        results = [await asyncio.wrap_future(f) for f in futures]
        results.append(await asyncio.get_running_loop().run_in_executor(pool, _lock_heavy, 20))
        pool.shutdown(wait=False)
        return results

    assert assert_clean(loop_kind, main) == list(range(21))


@pytest.mark.parametrize("thread_sensitive", [True, False])
def test_sync_to_async(loop_kind: str, thread_sensitive: bool) -> None:
    async def main() -> list[int]:
        call = sync_to_async(_lock_heavy, thread_sensitive=thread_sensitive)
        return list(await asyncio.gather(*(call(i) for i in range(10))))

    assert assert_clean(loop_kind, main) == list(range(10))


def test_async_to_sync_from_a_worker_thread(loop_kind: str) -> None:
    async def inner(i: int) -> int:
        await asyncio.sleep(0.001)
        return await sync_to_async(_lock_heavy)(i)

    def sync_view(i: int) -> int:
        return async_to_sync(inner)(i)

    async def main() -> list[int]:
        return [await sync_to_async(sync_view)(i) for i in range(3)]

    assert assert_clean(loop_kind, main) == [0, 1, 2]


def test_asyncio_run_shutdown_joins_the_executor(loop_kind: str) -> None:
    # asyncio.run()/uvloop.run() end by joining the default executor's threads on the loop
    async def main() -> None:
        await asyncio.to_thread(time.sleep, 0.01)
        asyncio.get_running_loop().run_in_executor(None, time.sleep, 0.05)  # still running

    assert_clean(loop_kind, main)


def test_thread_start_on_the_loop(loop_kind: str) -> None:
    async def main() -> None:
        thread = threading.Thread(target=time.sleep, args=(0.01,))
        thread.start()  # waits for the thread to start: internal to threading
        while thread.is_alive():
            await asyncio.sleep(0.005)

    assert_clean(loop_kind, main)


def test_stdlib_internal_lock_waits_are_exempt(loop_kind: str, bg: Background) -> None:
    stream = io.StringIO()
    logger = logging.getLogger(f"asyncguard.test.sync.{loop_kind}")
    logger.propagate = False

    async def main() -> None:
        handler = logging.StreamHandler(stream)  # its lock is a guarded RLock
        logger.addHandler(handler)
        try:
            bg.hold(handler.lock, seconds=HOLD)
            logger.warning("logged while another thread held the handler lock")
        finally:
            logger.removeHandler(handler)
        pool = cf.ThreadPoolExecutor(1)
        bg.hold(pool._shutdown_lock, seconds=HOLD)  # type: ignore[attr-defined]
        await asyncio.wrap_future(pool.submit(int, "3"))
        pool.shutdown(wait=False)
        work: queue.Queue[int] = queue.Queue()
        bg.hold(work.mutex, seconds=HOLD)
        work.put_nowait(1)
        bg.hold(work.mutex, seconds=HOLD)
        assert work.qsize() == 1
        event = threading.Event()
        bg.hold(event._cond, seconds=HOLD)  # type: ignore[attr-defined]
        event.set()
        future: cf.Future[int] = cf.Future()
        bg.hold(future._condition, seconds=HOLD)  # type: ignore[attr-defined]
        future.set_result(1)

    # No hook flags these waits (the private locks are C locks; the others are judged and
    # exempt).  The holds are artificial -- stdlib holds these locks for microseconds -- and
    # 6 x HOLD of the loop really blocked is a stall the watchdog would rightly report.
    assert_clean(loop_kind, main, stall_threshold=None)
    assert "logged while" in stream.getvalue()


def test_sync_keys_are_known_calls() -> None:
    keys = set(asyncguard.known_calls())
    assert {
        "threading.Lock.acquire",
        "threading.RLock.acquire",
        "threading.Condition.wait",
        "threading.Condition.wait_for",
        "threading.Event.wait",
        "threading.Semaphore.acquire",
        "threading.Barrier.wait",
        "threading.Thread.join",
        "queue.Queue.get",
        "queue.Queue.put",
        "queue.Queue.join",
        "concurrent.futures.Future.result",
        "concurrent.futures.Future.exception",
        "concurrent.futures.wait",
        "concurrent.futures.as_completed",
    } <= keys
    assert sys.modules["threading"].Lock is not GuardedLock  # not installed here
