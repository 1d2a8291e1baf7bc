"""Synchronisation primitives that really wait: locks, conditions, events, semaphores, barriers,
``Thread.join``, ``queue.Queue`` and ``concurrent.futures`` waits.

Only a call that would wait is judged: a free lock, a set event, a queue with an item (or a free
slot), a finished thread or future, a timeout of 0 are let through unreported.  Where a
non-blocking attempt exists it is made first (lock, semaphore, queue), so the answer is exact.

asyncio's own machinery (``to_thread``, ``run_in_executor``, executor shutdown in
``asyncio.run``) and the standard library's short internal waits (``threading``,
``concurrent.futures``, ``logging``, ``queue``) and asgiref's executors are exempt by caller.

Not covered: ``queue.SimpleQueue`` (a C type) and ``multiprocessing`` primitives; locks created
before install, by ``_thread.allocate_lock()`` or through a factory captured before install
(``field(default_factory=threading.Lock)``): they are C locks and ``with lock:`` runs in C;
``ThreadPoolExecutor.shutdown(wait=True)`` (its ``Thread.join`` calls are internal).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any

from .. import _judge, _report, _wording
from .._format import short
from .._loop import get_running_loop
from .._spec import Family, Hook, copy_metadata
from ._locks import CATEGORY, LOCK_HOOK, RLOCK_HOOK, decide, judge, waits

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)
__asyncguard_work__ = True  # the guard judging or reporting a call (_frames)

FUTURE = (
    "await it instead: `await asyncio.wrap_future(future)` (or submit with "
    "`loop.run_in_executor`), " + _wording.THREAD
)
QUEUE = (
    "use an `asyncio.Queue` between tasks (hand items from threads with "
    "`loop.call_soon_threadsafe`), " + _wording.THREAD
)

_running_loop = get_running_loop

Args = tuple[Any, ...]
Kwargs = dict[str, Any]


def _arg(args: Args, kwargs: Kwargs, index: int, name: str, default: Any = None) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _fmt_timeout(index: int) -> Callable[[Args, Kwargs], str]:
    """Show only the timeout, when one was given (items and predicates are not shown)."""

    def fmt(args: Args, kwargs: Kwargs) -> str:
        timeout = _arg(args, kwargs, index, "timeout")
        return "" if timeout is None else f"timeout={short(timeout)}"

    return fmt


# ``concurrent.futures.Future._state`` once it is done (``done()`` would take the future's
# lock to read it: asyncio's ``wrap_future`` asks a done future for its result ~30 times in a
# Django request); a done future never becomes pending again
_DONE_STATES = frozenset({"FINISHED", "CANCELLED", "CANCELLED_AND_NOTIFIED"})


# -- wrappers -----------------------------------------------------------------------------------


def _method(hook: Hook, original: Callable[..., Any]) -> Callable[..., Any]:
    """The generic shape; the slow path is ``_locks.judge`` (transparent frames, exemptions)."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = __traceback_hide__ = True
        if _running_loop() is None:
            return original(*args, **kwargs)
        return judge(hook, original, args, kwargs)

    copy_metadata(wrapper, original, hook)
    return wrapper


def _future_method(hook: Hook, original: Callable[..., Any]) -> Callable[..., Any]:
    """``Future.result`` / ``Future.exception``: a done future answers at once, checked first
    (asyncio's ``wrap_future`` asks a done future ~30 times in a Django request)."""
    done = _DONE_STATES

    def wrapper(self: Any, timeout: float | None = None) -> Any:
        __tracebackhide__ = __traceback_hide__ = True
        if getattr(self, "_state", None) in done or _running_loop() is None:
            return original(self, timeout)
        return judge(hook, original, (self, timeout), {})

    copy_metadata(wrapper, original, hook)
    return wrapper


def _semaphore_acquire(hook: Hook, original: Callable[..., Any]) -> Callable[..., Any]:
    def acquire(self: Any, blocking: bool = True, timeout: float | None = None) -> Any:
        __tracebackhide__ = __traceback_hide__ = True
        if _running_loop() is None or not blocking or not waits(timeout):
            return original(self, blocking, timeout)
        if original(self, False):
            return True
        return judge(hook, original, (self, blocking, timeout), {})

    copy_metadata(acquire, original, hook)
    return acquire


def _queue_get(hook: Hook, original: Callable[..., Any]) -> Callable[..., Any]:
    from queue import Empty

    def get(self: Any, block: bool = True, timeout: float | None = None) -> Any:
        __tracebackhide__ = __traceback_hide__ = True
        if _running_loop() is None or not block or not waits(timeout):
            return original(self, block, timeout)
        try:
            return original(self, False)
        except Empty:
            pass
        return judge(hook, original, (self, block, timeout), {})

    copy_metadata(get, original, hook)
    return get


def _queue_put(hook: Hook, original: Callable[..., Any]) -> Callable[..., Any]:
    from queue import Full

    def put(self: Any, item: Any, block: bool = True, timeout: float | None = None) -> Any:
        __tracebackhide__ = __traceback_hide__ = True
        if _running_loop() is None or not block or not waits(timeout):
            return original(self, item, block, timeout)
        try:
            return original(self, item, False)
        except Full:
            pass
        return judge(hook, original, (self, item, block, timeout), {})

    copy_metadata(put, original, hook)
    return put


def _condition_wait_for(hook: Hook, original: Callable[..., Any]) -> Callable[..., Any]:
    def wait_for(self: Any, predicate: Callable[[], Any], timeout: float | None = None) -> Any:
        __tracebackhide__ = __traceback_hide__ = True
        if _running_loop() is None or not waits(timeout):
            return original(self, predicate, timeout)
        result = predicate()  # wait_for evaluates it first too: true already, it never waits
        if result:
            return result
        return judge(hook, original, (self, predicate, timeout), {})

    copy_metadata(wait_for, original, hook)
    return wait_for


def _finished_states() -> tuple[str, ...]:
    from concurrent.futures import _base

    return (_base.FINISHED, _base.CANCELLED_AND_NOTIFIED)


def _futures_wait(hook: Hook, original: Callable[..., Any]) -> Callable[..., Any]:
    from concurrent.futures import ALL_COMPLETED

    def wait(
        fs: Iterable[Any], timeout: float | None = None, return_when: str = ALL_COMPLETED
    ) -> Any:
        __tracebackhide__ = __traceback_hide__ = True
        if _running_loop() is None:
            return original(fs, timeout, return_when)
        return judge(hook, original, (set(fs), timeout, return_when), {})

    copy_metadata(wait, original, hook)
    return wait


def _wait_would_block(args: Args, kwargs: Kwargs) -> bool:
    from concurrent.futures import FIRST_COMPLETED, FIRST_EXCEPTION

    fs, timeout, return_when = args
    if not waits(timeout):
        return False
    finished = _finished_states()
    done = [f for f in fs if getattr(f, "_state", None) in finished]
    if return_when == FIRST_COMPLETED and done:
        return False
    if return_when == FIRST_EXCEPTION and any(
        not f.cancelled() and f.exception() is not None for f in done
    ):
        return False
    return len(done) < len(fs)


def _as_completed(hook: Hook, original: Callable[..., Any]) -> Callable[..., Any]:
    """``as_completed`` is a generator: judged when called (raise mode raises right there),
    and in warn mode the time spent waiting inside the iteration is reported at its end."""

    def as_completed(fs: Iterable[Any], timeout: float | None = None) -> Any:
        __tracebackhide__ = __traceback_hide__ = True
        if _running_loop() is None:
            return original(fs, timeout)
        futures = set(fs)

        try:
            finished = _finished_states()
            if not waits(timeout) or all(getattr(f, "_state", None) in finished for f in futures):
                return original(futures, timeout)
            decision = decide(hook, (futures, timeout), {}, sys._getframe(1))
        except Exception as exc:
            _report.internal_error(f"hook {hook.key}", exc)
            decision = None
        if decision is None:
            return original(futures, timeout)
        guard, violation = decision
        if guard.mode != "warn":
            return _judge.act(guard, violation, hook, original, (futures, timeout), {})
        return _judge.timed_iteration(original(futures, timeout), guard, violation)

    copy_metadata(as_completed, original, hook)
    return as_completed


# -- would_block predicates ---------------------------------------------------------------------


def _timeout_waits(index: int) -> Callable[[Args, Kwargs], bool]:
    def would_block(args: Args, kwargs: Kwargs) -> bool:
        return waits(_arg(args, kwargs, index, "timeout"))

    return would_block


def _event_waits(args: Args, kwargs: Kwargs) -> bool:
    return not args[0].is_set() and waits(_arg(args, kwargs, 1, "timeout"))


def _barrier_waits(args: Args, kwargs: Kwargs) -> bool:
    barrier = args[0]
    timeout = _arg(args, kwargs, 1, "timeout")
    if timeout is None:
        timeout = getattr(barrier, "_timeout", None)
    if not waits(timeout) or barrier.broken:
        return False
    # the last party to arrive releases the others and does not wait
    return bool(barrier.n_waiting + 1 < barrier.parties)


def _join_waits(args: Args, kwargs: Kwargs) -> bool:
    return bool(args[0].is_alive()) and waits(_arg(args, kwargs, 1, "timeout"))


def _future_waits(args: Args, kwargs: Kwargs) -> bool:
    future = args[0]
    if getattr(future, "_state", None) in _DONE_STATES:
        return False
    return not future.done() and waits(_arg(args, kwargs, 1, "timeout"))


def _queue_join_waits(args: Args, kwargs: Kwargs) -> bool:
    return bool(args[0].unfinished_tasks > 0)


def _hook(
    module: str,
    attr: str,
    hint: str,
    factory: Callable[[Hook, Any], Callable[..., Any]] = _method,
    would_block: Callable[[Args, Kwargs], bool] | None = None,
    fmt: Callable[[Args, Kwargs], str] | None = None,
    key: str | None = None,
    method: bool = True,
) -> Hook:
    return Hook(
        module,
        attr,
        key or f"{module}.{attr}",
        CATEGORY,
        hint,
        would_block=would_block,
        fmt=fmt or _fmt_timeout(1),
        method=method,
        factory=factory,
    )


FAMILY = Family(
    name="sync",
    # an RLock belongs to the thread that acquires it; Condition.wait() must be called by the
    # lock's owner: both stay on the loop thread in offload mode (reported as in warn mode)
    routes=(("threading.RLock.*", "inline"), ("threading.Condition.*", "inline")),
    description=(
        "threading locks and waits (Lock, RLock, Condition, Event, Semaphore, Barrier, "
        "Thread.join), queue.Queue, concurrent.futures waits"
    ),
    hooks=(
        LOCK_HOOK,
        RLOCK_HOOK,
        _hook("threading", "Condition.wait", _wording.WAIT, would_block=_timeout_waits(1)),
        _hook(
            "threading",
            "Condition.wait_for",
            _wording.WAIT,
            _condition_wait_for,
            fmt=_fmt_timeout(2),
        ),
        _hook("threading", "Event.wait", _wording.WAIT, would_block=_event_waits),
        _hook(
            "threading", "Semaphore.acquire", _wording.WAIT, _semaphore_acquire, fmt=_fmt_timeout(2)
        ),
        _hook(
            "threading",
            "Semaphore.__enter__",
            _wording.WAIT,
            _semaphore_acquire,
            fmt=_fmt_timeout(2),
            key="threading.Semaphore.acquire",
        ),
        _hook("threading", "Barrier.wait", _wording.WAIT, would_block=_barrier_waits),
        _hook("threading", "Thread.join", _wording.JOIN, would_block=_join_waits),
        _hook("queue", "Queue.get", QUEUE, _queue_get, fmt=_fmt_timeout(2)),
        _hook("queue", "Queue.put", QUEUE, _queue_put, fmt=_fmt_timeout(3)),
        _hook("queue", "Queue.join", QUEUE, would_block=_queue_join_waits),
        _hook(
            "concurrent.futures",
            "Future.result",
            FUTURE,
            _future_method,
            would_block=_future_waits,
        ),
        _hook(
            "concurrent.futures",
            "Future.exception",
            FUTURE,
            _future_method,
            would_block=_future_waits,
        ),
        _hook(
            "concurrent.futures",
            "wait",
            FUTURE,
            _futures_wait,
            would_block=_wait_would_block,
            fmt=_fmt_timeout(1),
            method=False,
        ),
        _hook(
            "concurrent.futures",
            "as_completed",
            FUTURE,
            _as_completed,
            fmt=_fmt_timeout(1),
            method=False,
        ),
    ),
)
