"""The stall watchdog: catches what no hook knows — CPU-bound code, C extensions doing I/O (libpq,
zlib, bcrypt), locks created before install — by watching each loop's responsiveness.

One daemon thread (``asyncguard-watchdog``) for every watched loop: main-thread and worker-thread
loops, asyncio's and uvloop's.  Every tick it schedules a heartbeat on each loop with
``call_soon_threadsafe``; an idle or healthy loop runs it at once.  While a heartbeat is late the
loop thread's stack is sampled with ``sys._current_frames()``.  When the heartbeat finally runs
(or the loop stops) and it was at least ``threshold`` late, the stall is reported as a
``Violation`` with call key ``"stall"``: the dominant user frame among the samples, the
measured lateness, the samples' distribution, and the task and request that were running.

Loops are found without any help from the user: ``run_forever`` of asyncio's ``BaseEventLoop``
and of ``uvloop.Loop`` are wrapped (every ``asyncio.run``, ``run_until_complete`` and asgiref
``async_to_sync`` goes through them), and a loop already running at install, or seen by the
middleware or a hook, is added then.  The heartbeat callback only stores a timestamp; all the
work (sampling, building the report, logging) happens on the watchdog thread.
"""

from __future__ import annotations

import _thread
import asyncio
import linecache
import os
import re
import sys
import threading
import time
import traceback
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from types import CodeType, FrameType
from typing import Any

from . import _frames, _request
from ._hooks import _hints
from ._hooks._spec import Hook
from ._request import RequestInfo
from ._violation import Violation

DEFAULT_THRESHOLD = 0.1  # seconds; the pytest plugin uses 0.05
MAX_SAMPLES = 200
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


@dataclass
class _Watched:
    """One loop: its thread, and the heartbeat in flight (``seq``) with its samples."""

    loop_ref: weakref.ref[asyncio.AbstractEventLoop]
    thread_id: int
    thread_name: str
    seq: int = 0
    sent_at: float | None = None
    acked: tuple[int, float] | None = None  # (seq, when), written by the loop thread only
    samples: list[_Sample] = field(default_factory=list)
    reported: bool = False  # an ongoing stall was already reported

    def ack(self, seq: int) -> None:  # runs on the loop: store a timestamp, nothing else
        self.acked = (seq, _perf_counter())

    def reset(self) -> None:
        self.seq += 1
        self.sent_at = None
        self.samples = []
        self.reported = False


# Which frames a sample must not blame: our own wrappers (warn mode times and reports those
# calls itself), code running under ``allow_blocking()``, imports, debuggers and tracers.
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
        self.tick = min(max(threshold / 10, 0.002), 0.05)  # error of the measured lateness
        self.sample_after = threshold / 2
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

    # -- loops ------------------------------------------------------------------------------

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Watch ``loop``, which runs on the calling thread."""
        self.last_loop = loop
        ident = _thread.get_ident()
        with self._lock:
            state = self._watched.get(id(loop))
            if state is None or state.loop_ref() is not loop or state.thread_id != ident:
                self._watched[id(loop)] = _Watched(
                    weakref.ref(loop), ident, threading.current_thread().name
                )
        self._ensure_thread()

    def loop_stopped(self, loop: asyncio.AbstractEventLoop) -> None:
        """``run_forever`` returned: a heartbeat still pending ends the stall now."""
        with self._lock:
            state = self._watched.get(id(loop))
            found = self._finish(state, _perf_counter()) if state is not None else None
            if state is not None:
                state.reset()
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
        next_periodic = _perf_counter() + self.periodic_interval if self.periodic_interval else 0
        while not stop.acquire(timeout=self.tick):
            try:
                self.poll()
                if next_periodic and _perf_counter() >= next_periodic and self.periodic:
                    next_periodic = _perf_counter() + self.periodic_interval
                    self.periodic()
            except Exception as exc:  # never die: report once, keep watching
                from ._report import internal_error

                internal_error("the stall watchdog", exc)
        stop.release()

    def poll(self) -> None:
        """One tick: send heartbeats, sample late loops, report finished stalls."""
        if not self.watch_loops:
            return
        found: list[Violation] = []
        now = _perf_counter()
        with self._lock:
            frames: dict[int, FrameType] | None = None
            for key, state in list(self._watched.items()):
                loop = state.loop_ref()
                if loop is None or loop.is_closed():
                    del self._watched[key]
                    continue
                if state.sent_at is not None:
                    acked = state.acked
                    if acked is not None and acked[0] == state.seq:
                        stall = self._finish(state, acked[1])
                        if stall is not None:
                            found.append(stall)
                        state.reset()
                    elif not loop.is_running():
                        stall = self._finish(state, now)
                        if stall is not None:
                            found.append(stall)
                        state.reset()
                        continue
                    else:
                        age = now - state.sent_at
                        if age >= self.sample_after and len(state.samples) < MAX_SAMPLES:
                            if frames is None:
                                frames = sys._current_frames()
                            self._sample(state, loop, frames.get(state.thread_id))
                        if age >= self.ongoing_after and not state.reported:
                            stall = self._stall(state, age, ongoing=True)
                            state.reported = True
                            if stall is not None:
                                found.append(stall)
                        continue
                if not loop.is_running():
                    continue
                state.sent_at = _perf_counter()
                try:
                    loop.call_soon_threadsafe(state.ack, state.seq)
                except RuntimeError:  # closed between the check and the call
                    state.reset()
            del frames
        for stall in found:
            self.report(stall)

    def flush(self) -> None:
        """Report stalls whose heartbeat has arrived, now (the pytest plugin, at teardown)."""
        found: list[Violation] = []
        with self._lock:
            for state in self._watched.values():
                acked = state.acked
                if state.sent_at is not None and acked is not None and acked[0] == state.seq:
                    stall = self._finish(state, acked[1])
                    if stall is not None:
                        found.append(stall)
                    state.reset()
        for stall in found:
            self.report(stall)

    # -- samples and reports ----------------------------------------------------------------

    def _sample(
        self, state: _Watched, loop: asyncio.AbstractEventLoop, frame: FrameType | None
    ) -> None:
        if frame is None:
            return
        stack: list[tuple[str, int, str]] = []
        # the loop thread waiting in its selector (or in uvloop's C loop, below our
        # run_forever wrapper) runs no code: it is late for the GIL or the CPU, not blocked
        exempt = _is_idle(frame)
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
        state.samples.append(
            _Sample(_frames.user_location(frame), stack, exempt, request, _task_name(loop))
        )

    def _finish(self, state: _Watched, end: float) -> Violation | None:
        if state.sent_at is None or state.reported:
            return None
        late = end - state.sent_at
        if late < self.threshold:
            return None
        return self._stall(state, late, ongoing=False)

    def _stall(self, state: _Watched, late: float, *, ongoing: bool) -> Violation | None:
        samples = state.samples
        if not samples:
            return None  # late, but never caught on the loop thread: nothing to name
        blamed = [s for s in samples if not s.exempt]
        if len(blamed) * 2 < len(samples):
            return None  # mostly allowed, timed by a hook, an import or a debugger
        counts = Counter(s.location for s in blamed)
        (location, hits), *others = counts.most_common()
        sample = next(s for s in blamed if s.location == location)
        tasks = Counter(s.task for s in blamed if s.location == location)
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
            hint=_hints.STALL,
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


def _task_name(loop: asyncio.AbstractEventLoop) -> str | None:
    try:
        task = asyncio.tasks._current_tasks.get(loop)  # type: ignore[attr-defined]
        return task.get_name() if task is not None else None
    except Exception:
        return None


_CREDENTIALS = re.compile(r"(://)[^/\s'\"@]*@")
_SECRET_ARG = re.compile(r"((?:password|passwd|secret|token|api_key)\s*=\s*)[^,)]+", re.I)


def source_line(location: tuple[str, int, str], limit: int = 80) -> str:
    """The stalled source line, abridged and without credentials (``//user:pw@``,
    ``password=...``)."""
    filename, lineno, _ = location
    line = linecache.getline(filename, lineno).strip()
    comment = line.find("  #")  # a trailing comment (a heuristic: good enough for display)
    if comment > 0:
        line = line[:comment].rstrip()
    line = _CREDENTIALS.sub(r"\1", line)
    line = _SECRET_ARG.sub(r"\1…", line)
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
    """Watch the loop running on this thread, if any (install, the middleware, hooks)."""
    watchdog = _watchdog
    if watchdog is None:
        return
    loop = asyncio._get_running_loop()
    if loop is not None and loop is not watchdog.last_loop:
        watchdog.watch(loop)


def run_forever_wrapper(hook: Any, original: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``run_forever``: the loop is watched while it runs."""

    def run_forever(self: asyncio.AbstractEventLoop, *args: Any, **kwargs: Any) -> Any:
        watchdog = _watchdog
        if watchdog is None:
            return original(self, *args, **kwargs)
        try:
            watchdog.watch(self)
        except Exception as exc:  # pragma: no cover - never stop a loop from starting
            from ._report import internal_error

            internal_error("watching a loop", exc)
        try:
            return original(self, *args, **kwargs)
        finally:
            watchdog = _watchdog
            if watchdog is not None:
                watchdog.loop_stopped(self)

    global run_forever_code
    run_forever_code = run_forever.__code__
    run_forever.__asyncguard_hook__ = hook  # type: ignore[attr-defined]
    run_forever.__wrapped__ = original  # type: ignore[attr-defined]
    run_forever.__name__ = "run_forever"
    run_forever.__qualname__ = getattr(original, "__qualname__", "run_forever")
    run_forever.__doc__ = getattr(original, "__doc__", None)
    return run_forever


def _loop_hook(module: str, attr: str, *, optional: bool = False) -> Hook:
    return Hook(
        module, attr, f"{module}.{attr}", "loop", "", factory=run_forever_wrapper, optional=optional
    )


# patched with the hook catalog; not call keys (nothing is ever reported under these names)
HOOKS = (
    _loop_hook("asyncio.base_events", "BaseEventLoop.run_forever"),
    _loop_hook("uvloop", "Loop.run_forever", optional=True),
)
