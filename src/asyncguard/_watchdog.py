"""The stall watchdog: catches what no hook knows — CPU-bound code, C extensions doing I/O (libpq,
zlib, bcrypt), locks created before install — by watching each loop's responsiveness.

Each watched loop runs a heartbeat: a timer it schedules for itself every ``threshold / 5``
seconds, which records how late it ran.  One daemon thread (``asyncguard-watchdog``) looks at
every loop each ``threshold / 2`` seconds; while a beat is overdue it samples the loop thread's
stack with ``sys._current_frames()`` every ``threshold / 10``.  When the beat finally runs (or
the loop stops) at least ``threshold`` late, the stall is reported as a ``Violation`` with call
key ``"stall"``: the dominant user frame among the samples, the measured lateness (a lower
bound, short by at most one beat period), the samples' distribution, and the task and request
that were running.  A timer the loop runs itself wakes nothing and costs the loop one cheap
callback per period; the thread wakes 20 times a second at the default threshold.

Loops are found without any help from the user: ``run_forever`` of asyncio's ``BaseEventLoop``
and of ``uvloop.Loop`` are wrapped (every ``asyncio.run``, ``run_until_complete`` and asgiref
``async_to_sync`` goes through them), and a loop already running at install, or seen by the
middleware or a hook, is added then.  The heartbeat callback only stores numbers; all the
work (sampling, building the report, logging) happens on the watchdog thread.
"""

from __future__ import annotations

import _thread
import asyncio
import contextlib
import inspect
import linecache
import os
import signal
import sys
import threading
import time
import traceback
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from types import CodeType, FrameType
from typing import Any

from . import _frames, _request, _wording
from ._redact import redact
from ._report import internal_error
from ._request import RequestInfo
from ._spec import Hook, copy_metadata
from ._violation import Violation

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)

DEFAULT_THRESHOLD = 0.1  # seconds; the pytest plugin uses 0.05
MAX_SAMPLES = 200
MIN_SAMPLES = 2  # a stall is blamed on code seen there at least twice
STALL_KEY = "stall"

_perf_counter = time.perf_counter
Report = Callable[[Violation], None]


@dataclass
class _Sample:
    location: tuple[str, int, str]
    stack: list[tuple[str, int, str]]  # innermost first: (filename, lineno, function)
    exempt: bool
    request: RequestInfo | None
    task: str | None


class _Watched:
    """One loop and its heartbeat: a timer the loop itself runs every ``interval`` seconds.

    The beat runs on the loop thread and only stores numbers (the watchdog thread reads them):
    when it comes due (``due``) and how late it ran last (``late``, ``beats`` counts them).  A
    loop-driven timer costs the loop nothing extra to wake for and measures its own lateness;
    the watchdog thread only looks, every half threshold, and samples while a beat is overdue.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        self.loop_ref = weakref.ref(loop)
        self.thread_id = _thread.get_ident()
        self.native_id = threading.get_native_id()
        self.thread_name = threading.current_thread().name
        self.interval = interval
        self.due = 0.0
        self.late = 0.0
        self.beats = 0
        self.handle: asyncio.TimerHandle | None = None
        # the watchdog thread's side
        self.seen_beats = 0
        self.samples: list[_Sample] = []
        self.stride = 1  # a long stall keeps every stride-th sample (MAX_SAMPLES at most)
        self.skipped = 0
        # (when, (cpu ns, run-queue wait ns) then) at the first sample
        self.queued_since: tuple[float, tuple[int, int]] | None = None
        self.reported = False  # an ongoing stall was already reported
        # for a loop found already running (uvloop under uvicorn): the Python frame below the
        # loop's C code — the innermost frame of its thread while the loop idles
        self.root: FrameType | None = None

    def end_stall(self) -> None:
        """Forget the samples (and the ongoing report) of the stretch that just ended."""
        self.reported = False
        self.samples = []
        self.stride = 1
        self.skipped = 0
        self.queued_since = None

    def starved(self, threshold: float) -> bool:
        """The loop thread spent most of the sampled stretch *runnable but not running*, and
        itself ran for less than a quarter of the threshold: the machine had no CPU for it
        (an overloaded host or CI runner); its code did not block.  (CPU-bound code on a busy
        machine runs for a good part of the stall even when it waits as long; code blocked
        in I/O or on a lock neither runs nor waits.)"""
        if self.queued_since is None:
            return False
        since, (ran, waited) = self.queued_since
        now = _schedstat(self.native_id)
        if now is None:
            return False
        span = _perf_counter() - since
        ran, waited = now[0] - ran, now[1] - waited
        return span > 0 and waited / 1e9 > span / 2 and ran / 1e9 < threshold / 4

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Schedule the first beat (on the loop's thread, before or while it runs)."""
        self.stop()
        self.due = _perf_counter() + self.interval
        self.handle = loop.call_later(self.interval, self.beat)

    def stop(self) -> None:
        handle, self.handle = self.handle, None
        if handle is not None:
            handle.cancel()

    def beat(self) -> None:  # on the loop thread: numbers only
        now = _perf_counter()
        self.late = now - self.due
        self.beats += 1
        loop = self.loop_ref()
        if loop is not None and self.handle is not None:
            self.due = now + self.interval
            self.handle = loop.call_later(self.interval, self.beat)


# Frames running under ``allow_blocking()`` (the caller of each active block or decorated
# call): a sample with one of them on its stack is not blamed.
_allow_frames: dict[FrameType, int] = {}


def allow_frame_enter(frame: FrameType | None) -> None:
    if frame is not None:
        _allow_frames[frame] = _allow_frames.get(frame, 0) + 1


def allow_frame_exit(frame: FrameType | None) -> None:
    if frame is None:
        return
    left = _allow_frames.get(frame, 0) - 1
    if left > 0:
        _allow_frames[frame] = left
    else:
        _allow_frames.pop(frame, None)


class Watchdog:
    """The watchdog thread and its loops.  ``report`` is called with each stall found."""

    def __init__(self, threshold: float, report: Report, is_allowed: Callable[[FrameType], bool]):
        self.threshold = threshold
        # the beat's period bounds the error of a measured stall (it is a lower bound)
        self.interval = min(max(threshold / 5, 0.002), 0.1)
        self.check = min(max(threshold / 2, 0.005), 0.5)  # the thread's pace while all is well
        self.sample_every = min(max(threshold / 10, 0.002), 0.05)  # while a beat is overdue
        self.ongoing_after = max(5.0, 20 * threshold)
        self.report = report
        self.is_allowed = is_allowed  # allow rules for "stall", checked per sample
        self.periodic: Callable[[], None] | None = None  # the summary, every periodic_interval
        self.periodic_interval = 0.0
        self.watch_loops = True  # False: the thread only runs the periodic summary
        self._watched: dict[int, _Watched] = {}  # id(loop) -> state
        self._lock = _thread.allocate_lock()
        self._stop = _thread.allocate_lock()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self.last_loop: asyncio.AbstractEventLoop | None = None

    # -- loops (called on the loop's thread) ---------------------------------------------------

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Watch ``loop``, which runs (or is about to run) on the calling thread."""
        self.last_loop = loop
        if not self.watch_loops:
            return
        ident = _thread.get_ident()
        with self._lock:
            state = self._watched.get(id(loop))
            if state is None or state.loop_ref() is not loop or state.thread_id != ident:
                if state is not None:
                    state.stop()
                state = self._watched[id(loop)] = _Watched(loop, self.interval)
            if state.root is None and loop.is_running():
                state.root = _loop_root(sys._getframe(1))
            if state.handle is None:
                state.start(loop)
        self._ensure_thread()

    def loop_stopped(self, loop: asyncio.AbstractEventLoop) -> None:
        """``run_forever`` returned: stop the beat (a stopped loop is not late); a beat that
        was overdue ends its stall now."""
        with self._lock:
            state = self._watched.get(id(loop))
            if state is None:
                return
            state.stop()
            found = self._collect(state)
            overdue = _perf_counter() - state.due
            if found is None and overdue >= self.threshold and state.samples:
                found = self._stall(state, overdue, ongoing=False)
            state.end_stall()
        if found is not None:
            self.report(found)

    def watching(self) -> list[asyncio.AbstractEventLoop]:
        with self._lock:
            loops = [state.loop_ref() for state in self._watched.values()]
        return [loop for loop in loops if loop is not None]

    # -- the thread -------------------------------------------------------------------------

    def _ensure_thread(self) -> None:
        if self._pid != os.getpid():  # forked (gunicorn workers): the thread stayed behind
            self._pid = os.getpid()
            self._thread = None
            self._stop = _thread.allocate_lock()
        thread = self._thread
        if thread is not None and thread.is_alive():
            return
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            if not self._stop.locked():
                self._stop.acquire()
            self._thread = threading.Thread(
                target=self._run, name="asyncguard-watchdog", daemon=True
            )
            self._thread.start()

    def start(self) -> None:
        self._ensure_thread()

    def stop(self) -> None:
        thread = self._thread
        self._thread = None
        if self._stop.locked():
            self._stop.release()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1.0)

    def _run(self) -> None:
        stop = self._stop
        idle = self.check if self.watch_loops else min(self.periodic_interval or 1.0, 1.0)
        pace = idle
        next_periodic = _perf_counter() + self.periodic_interval if self.periodic_interval else 0
        while not stop.acquire(timeout=pace):
            try:
                pace = idle if self.poll() else self.sample_every
                if next_periodic and _perf_counter() >= next_periodic and self.periodic:
                    next_periodic = _perf_counter() + self.periodic_interval
                    self.periodic()
            except Exception as exc:  # never die: report once, keep watching
                internal_error("the stall watchdog", exc)
        stop.release()

    def poll(self) -> bool:
        """One look at every loop: report stalls that ended, sample loops whose beat is
        overdue.  ``True`` when all are well (the thread may sleep longer)."""
        if not self.watch_loops:
            return True
        found: list[Violation] = []
        healthy = True
        with self._lock:
            frames: dict[int, FrameType] | None = None
            now = _perf_counter()
            for key, state in list(self._watched.items()):
                loop = state.loop_ref()
                if loop is None or loop.is_closed():
                    state.stop()
                    del self._watched[key]
                    continue
                stall = self._collect(state)
                if stall is not None:
                    found.append(stall)
                if state.handle is None or not loop.is_running():
                    continue
                overdue = now - state.due
                if overdue < state.interval:
                    continue
                healthy = False
                state.skipped += 1
                if state.skipped >= state.stride:
                    state.skipped = 0
                    if frames is None:
                        frames = sys._current_frames()
                    self._sample(state, loop, frames.get(state.thread_id))
                    if len(state.samples) >= MAX_SAMPLES:  # keep the whole stall in view
                        del state.samples[1::2]
                        state.stride *= 2
                if overdue >= self.ongoing_after and not state.reported:
                    state.reported = True
                    stall = self._stall(state, overdue, ongoing=True)
                    if stall is not None:
                        found.append(stall)
            del frames
        for stall in found:
            self.report(stall)
        return healthy

    def _collect(self, state: _Watched) -> Violation | None:
        """If the loop beat since the last look: the stall that beat ended, if it was one."""
        beats = state.beats
        if beats == state.seen_beats:
            return None
        state.seen_beats = beats
        found = None
        if state.late >= self.threshold and not state.reported:
            found = self._stall(state, state.late, ongoing=False)
        state.end_stall()
        return found

    def flush(self) -> None:
        """Report stalls that have ended, now (the pytest plugin, before each verdict)."""
        found: list[Violation] = []
        with self._lock:
            for state in self._watched.values():
                stall = self._collect(state)
                if stall is not None:
                    found.append(stall)
        for stall in found:
            self.report(stall)

    # -- samples and reports ----------------------------------------------------------------

    def _sample(
        self, state: _Watched, loop: asyncio.AbstractEventLoop, frame: FrameType | None
    ) -> None:
        if frame is None:
            return
        if not state.samples:
            stat = _schedstat(state.native_id)
            if stat is not None:
                state.queued_since = (_perf_counter(), stat)
        stack: list[tuple[str, int, str]] = []
        # the loop thread waiting in its selector (or in uvloop's C loop, below our
        # run_forever wrapper) runs no code: it is late for the GIL or the CPU, not blocked
        exempt = frame is state.root or _is_idle(frame)
        request: RequestInfo | None = None
        inflight = _request.inflight
        current: FrameType | None = frame
        while current is not None:
            if not exempt and (
                current in _allow_frames
                or _frames.is_guard_work(current)
                or _frames.is_exempt_stack_frame(current)
            ):
                exempt = True
            if request is None and inflight:
                request = inflight.get(current)
            stack.append(
                (current.f_code.co_filename, current.f_lineno or 0, _frames.function_name(current))
            )
            current = current.f_back
        if not exempt:
            exempt = self.is_allowed(frame)
        task = _current_task(loop)
        if request is None:
            request = _task_request(task)
        name = None
        if task is not None:
            with contextlib.suppress(Exception):
                name = task.get_name()
        state.samples.append(_Sample(_frames.user_location(frame), stack, exempt, request, name))

    def _stall(self, state: _Watched, late: float, *, ongoing: bool) -> Violation | None:
        samples = state.samples
        if not samples:
            return None  # late, but never caught on the loop thread: nothing to name
        if state.starved(self.threshold):
            return None
        blamed = [s for s in samples if not s.exempt]
        if len(blamed) < MIN_SAMPLES or len(blamed) * 2 < len(samples):
            # one glimpse is no evidence; mostly allowed, timed by a hook, idle, an import…
            return None
        counts = Counter(s.location for s in blamed)
        (location, hits), *others = counts.most_common()
        here = [s for s in blamed if s.location == location]
        sample = here[0]
        # the request: from the samples here that found one (a sample may miss it)
        requests = Counter(id(s.request) for s in here if s.request is not None)
        if requests:
            top = requests.most_common(1)[0][0]
            sample = next(s for s in here if id(s.request) == top)
        tasks = Counter(s.task for s in here)
        request = sample.request
        stack = traceback.StackSummary.from_list(
            [(filename, lineno, name, None) for filename, lineno, name in reversed(sample.stack)]
        )
        distribution = tuple(
            (Violation.describe(loc), n) for loc, n in [(location, hits), *others[:2]]
        )
        return Violation(
            call=STALL_KEY,
            category="stall",
            location=location,
            stack=stack,
            duration=late,
            thread=state.thread_name,
            task=tasks.most_common(1)[0][0],
            request=request.label if request is not None else None,
            hint=_wording.STALL,
            args=source_line(location),
            view=request.view if request is not None else None,
            samples=distribution,
            sample_count=len(samples),
            ongoing=ongoing,
        )


_IDLE_FILES = ("selectors.py",)
_IDLE_FUNCTIONS = frozenset({"_run_once", "run_forever", "select", "poll"})


def _is_idle(frame: FrameType) -> bool:
    code = frame.f_code
    if code is run_forever_code:
        return True
    filename = code.co_filename
    if filename.endswith(_IDLE_FILES):
        return True
    module = frame.f_globals.get("__name__", "")
    return (
        isinstance(module, str)
        and module.startswith("asyncio.")
        and code.co_name in _IDLE_FUNCTIONS
    )


_COROUTINE_FLAGS = inspect.CO_COROUTINE | inspect.CO_ITERABLE_COROUTINE | inspect.CO_ASYNC_GENERATOR


def _loop_root(frame: FrameType | None) -> FrameType | None:
    """The frame that called into the running loop: the outermost coroutine frame's caller."""
    root = None
    while frame is not None:
        if frame.f_code.co_flags & _COROUTINE_FLAGS:
            root = frame.f_back
        frame = frame.f_back
    return root


def _schedstat(native_id: int) -> tuple[int, int] | None:
    """Nanoseconds the thread has run, and waited for a CPU while runnable (Linux)."""
    try:
        with open(f"/proc/self/task/{native_id}/schedstat", "rb") as stat:
            ran, waited = stat.read().split()[:2]
        return int(ran), int(waited)
    except (OSError, ValueError):
        return None


def _current_task(loop: asyncio.AbstractEventLoop) -> asyncio.Task[Any] | None:
    try:
        task = asyncio.tasks._current_tasks.get(loop)  # type: ignore[attr-defined]
    except Exception:
        return None
    return task if isinstance(task, asyncio.Task) else None


def _task_request(task: asyncio.Task[Any] | None) -> RequestInfo | None:
    """The request of a task the middleware's frame is not above (Django runs each view in a
    task of its own): the task's context on 3.12+, else the only request in flight."""
    get_context = getattr(task, "get_context", None)
    if get_context is not None:
        try:
            request = get_context().get(_request.request_var)
            return request if isinstance(request, RequestInfo) else None
        except Exception:
            return None
    inflight = list(_request.inflight.values())
    return inflight[0] if len(inflight) == 1 else None


def source_line(location: tuple[str, int, str], limit: int = 80) -> str:
    """The stalled source line, abridged and without credentials (``_redact``)."""
    filename, lineno, _ = location
    line = linecache.getline(filename, lineno).strip()
    comment = line.find("  #")  # a trailing comment (a heuristic: good enough for display)
    if comment > 0:
        line = line[:comment].rstrip()
    line = redact(line)
    return line if len(line) <= limit else line[: limit - 1] + "…"


# -- the process-wide watchdog and the run_forever wrappers -----------------------------------

_watchdog: Watchdog | None = None
run_forever_code: CodeType | None = None  # our wrapper's code: uvloop idles below it


def current() -> Watchdog | None:
    return _watchdog


def set_current(watchdog: Watchdog | None) -> None:
    global _watchdog
    previous = _watchdog
    _watchdog = watchdog
    if previous is not None and previous is not watchdog:
        previous.stop()


def watch_running_loop() -> None:
    """Watch the loop running on this thread, if any (install, the slow path)."""
    loop = asyncio._get_running_loop()
    if loop is not None:
        _watch(loop)


def serving(loop: asyncio.AbstractEventLoop) -> None:
    """The middleware serves requests on ``loop`` (running on this thread): watch it (it may
    have been running before install), and let its close() log the final summary."""
    served_loops.add(loop)
    _watch(loop)


def _watch(loop: asyncio.AbstractEventLoop) -> None:
    watchdog = _watchdog
    if watchdog is not None and loop is not watchdog.last_loop:
        watchdog.watch(loop)


def run_forever_wrapper(hook: Any, original: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``run_forever``: the loop is watched while it runs."""

    def run_forever(self: asyncio.AbstractEventLoop, *args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = __traceback_hide__ = True
        watchdog = _watchdog
        if watchdog is None:
            return original(self, *args, **kwargs)
        try:
            watchdog.watch(self)
        except Exception as exc:  # pragma: no cover - never stop a loop from starting
            internal_error("watching a loop", exc)
        try:
            return original(self, *args, **kwargs)
        finally:
            watchdog = _watchdog
            if watchdog is not None:
                watchdog.loop_stopped(self)

    global run_forever_code
    run_forever_code = run_forever.__code__
    copy_metadata(run_forever, original, hook)
    return run_forever


# Loops that served requests (the middleware adds them): their close() is the end of a
# server's life, where the final summary goes — servers stopped by SIGTERM (uvicorn re-raises
# it with the default handler after a graceful shutdown) never run atexit handlers.
served_loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
on_server_end: Callable[[], None] | None = None


def close_wrapper(hook: Any, original: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``close``: a loop that served requests closing ends the server: final summary."""

    def close(self: asyncio.AbstractEventLoop, *args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = __traceback_hide__ = True
        try:
            if self in served_loops and on_server_end is not None:
                served_loops.discard(self)
                on_server_end()
        except Exception as exc:  # pragma: no cover - never stop a loop from closing
            internal_error("the summary at loop close", exc)
        return original(self, *args, **kwargs)

    copy_metadata(close, original, hook)
    return close


# Signals whose default action ends the process.  A server that handled one gracefully and then
# re-raises it with the default handler restored (uvicorn, inside its serve(), before the loop
# closes) ends the process right there: no loop close, no atexit.  With lifespan (the
# middleware's hook for the end) off or not forwarded (a Channels ProtocolTypeRouter), that
# re-raise is the last Python code that runs.
_FATAL_BY_DEFAULT = frozenset(
    getattr(signal, name)
    for name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGABRT", "SIGUSR1", "SIGUSR2")
    if hasattr(signal, name)
)


def raise_signal_wrapper(hook: Any, original: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``signal.raise_signal``: a signal about to end the process (its handler is the
    default) first writes the final summary; then the signal is raised as it was."""

    def raise_signal(signalnum: int, /) -> None:
        __tracebackhide__ = __traceback_hide__ = True
        try:
            if (
                signalnum in _FATAL_BY_DEFAULT
                and signal.getsignal(signalnum) == signal.SIG_DFL
                and on_server_end is not None
            ):
                on_server_end()
        except Exception as exc:  # pragma: no cover - never keep a signal from being raised
            internal_error("the summary before a fatal signal", exc)
        original(signalnum)

    copy_metadata(raise_signal, original, hook)
    return raise_signal


def _loop_hook(
    module: str, attr: str, factory: Callable[[Any, Any], Any], *, optional: bool = False
) -> Hook:
    return Hook(module, attr, f"{module}.{attr}", "loop", "", factory=factory, optional=optional)


# patched with the hook catalog; not call keys (nothing is ever reported under these names)
HOOKS = (
    _loop_hook("asyncio.base_events", "BaseEventLoop.run_forever", run_forever_wrapper),
    _loop_hook("uvloop", "Loop.run_forever", run_forever_wrapper, optional=True),
    _loop_hook("asyncio.base_events", "BaseEventLoop.close", close_wrapper),
    _loop_hook("uvloop", "Loop.close", close_wrapper, optional=True),
    _loop_hook("signal", "raise_signal", raise_signal_wrapper),
)
