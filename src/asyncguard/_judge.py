"""The engine: the one slow path every hook goes through, on a thread that runs an event loop.

Hot path (in each wrapper, ``_hooks``): "does this thread run a loop?" -> no: call through.
Slow path (here), in this order, building nothing for a report until a call is judged:

1. blocking allowed for this task (``allow_blocking()``, the guard's own work)? -> call through
2. would it really block (``Hook.would_block``: a non-blocking socket, a free lock)? -> call
   through, its callees covered (or judged on their own: ``covers=False``)
3. no guard installed, or mode ``off``? exempt caller (``_frames.is_exempt``)? allow rule? ->
   call through
4. a ``Violation`` -> raise mode: the hook's error (``Hook.error``, by default
   ``BlockingCallError``) before the call; warn: run it timed and report; offload: run it in a
   worker thread through the driver (``_offload``), timed and reported.

The installed guard is handed in by the installer (:func:`set_current`); the engine reads what
it needs through :class:`Settings` and names no call key and no hook family.  An error of the
guard itself is logged once and the original call goes ahead (in raise mode a
``BlockingCallError`` is still raised: fail closed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any, Protocol

from . import _frames, _loop, _offload, _report, _request, _watchdog, _wording
from ._allow import AllowRule, exempt_or_allowed
from ._allowed import ALL, allowed_var
from ._format import positional, short
from ._redact import redact
from ._sinks import JsonLines, RateLimiter
from ._sites import SiteTable
from ._spec import AuditHook, Hook
from ._violation import BlockingCallError, Violation

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)
__asyncguard_work__ = True  # the guard judging or reporting a call (_frames)

perf_counter = time.perf_counter
Args = tuple[Any, ...]
Kwargs = dict[str, Any]
FrameFinder = Callable[[FrameType | None], "FrameType | None"]


class Settings(Protocol):
    """What the engine reads of the installed guard (``_guard.Guard``)."""

    mode: str
    rules: tuple[AllowRule, ...]
    offload_threads: int
    exclude: frozenset[str]
    callbacks: tuple[_report.Callback, ...]
    log: bool
    min_duration: float
    sites: SiteTable
    limiter: RateLimiter
    json: JsonLines | None

    def route(self, key: str) -> str: ...


_current: Settings | None = None


def current() -> Settings | None:
    """The installed guard, or ``None``."""
    return _current


def set_current(guard: Settings | None) -> None:
    global _current
    _current = guard


# -- deciding -------------------------------------------------------------------------------------


def _violation(hook: Hook | AuditHook, args: str, frame: FrameType | None) -> Violation:
    _watchdog.watch_running_loop()
    request = _request.current()
    args = redact(args)  # every hook's formatter scrubs; this is the net below them all
    return Violation(
        call=hook.key,
        category=hook.category,
        location=_frames.user_location(frame),
        stack=_frames.stack_from(frame),
        duration=None,
        thread=_loop.current_thread_name(),
        task=_loop.current_task_name(),
        request=request.label if request is not None else None,
        hint=hook.hint.replace("{args}", args),  # never str.format: args is the user's text
        args=args,
        view=request.view if request is not None else None,
    )


def decide(
    hook: Hook | AuditHook, format_args: Callable[[], str], frame: FrameType | None
) -> tuple[Settings, Violation] | None:
    """On a loop thread, for a call judged blocking: the violation to act on, or ``None`` to
    let it through (allowed for this task, no guard or mode off, exempt caller, allow rule).
    The arguments are formatted only once the call is a violation."""
    guard = guard_for(hook.key, frame)
    if guard is None:
        return None
    return guard, _violation(hook, format_args(), frame)


def guard_for(key: str, frame: FrameType | None) -> Settings | None:
    """The guard to report a blocking call ``key`` made from ``frame`` to, or ``None`` to let
    it through (allowed for this task, no guard or mode off, exempt caller, allow rule):
    decided on the stack alone, before anything is built for a report."""
    allowed = allowed_var.get()
    if allowed is not None and allowed.allows(key):
        return None
    guard = _current
    if guard is None or guard.mode == "off":
        return None
    if exempt_or_allowed(guard.rules, key, frame):
        return None
    return guard


def format_call(hook: Hook, args: Args, kwargs: Kwargs) -> str:
    """The call's arguments for the message (the hook's formatter, or the first two)."""
    if hook.fmt is not None:
        return hook.fmt(args, kwargs)
    return positional(args, skip=1 if hook.method else 0)


# -- acting ---------------------------------------------------------------------------------------


def act(
    guard: Settings,
    violation: Violation,
    hook: Hook,
    original: Callable[..., Any],
    args: Args,
    kwargs: Kwargs,
) -> Any:
    """Raise before the call (the hook's error), or run it timed (blocking allowed inside) and
    report it, in a worker thread in offload mode where the hook's route allows."""
    __tracebackhide__ = __traceback_hide__ = True
    if guard.mode == "raise":
        raise_error(guard, violation, hook)
    if guard.mode == "offload":
        route = guard.route(hook.key)
        child = _offload.driven() if route != "inline" else None
        if child is not None:
            adapter = hook.offload_adapter
            call: Callable[[], Any] | None
            if adapter is None:
                call = _Call(original, args, kwargs)
            else:
                call = adapter(original, args, kwargs)
            if call is not None:
                return _offload_call(guard, violation, child, call, route == "thread_sensitive")
    token = allowed_var.set(ALL)
    start = perf_counter()
    refused: str | None = None
    try:
        return original(*args, **kwargs)
    except BaseException as exc:
        if hook.refused_by is not None:
            try:
                refused = hook.refused_by(exc)
            except Exception as error:
                _report.internal_error(f"hook {hook.key}", error)
        raise
    finally:
        elapsed = perf_counter() - start
        allowed_var.reset(token)
        if refused is None:
            _report.report_timed(guard, violation, elapsed)
        else:  # it never ran: nothing was timed
            _report.report(guard, dataclasses.replace(violation, refused_by=refused), raised=False)


def raise_error(guard: Settings, violation: Violation, hook: Hook | AuditHook | None) -> None:
    """Raise mode: report, then raise the hook's error (fail closed: a plain
    ``BlockingCallError`` if building the hook's own error fails)."""
    __tracebackhide__ = __traceback_hide__ = True
    _report.report(guard, violation, raised=True)
    make_error = getattr(hook, "error", None)
    if make_error is None:
        raise BlockingCallError(violation)
    try:
        error = make_error(violation)
    except Exception as exc:
        _report.internal_error("building the error to raise", exc)
        raise BlockingCallError(violation) from None
    raise error


class _Call:
    """The call for a worker thread; its repr shows no argument."""

    __slots__ = ("args", "kwargs", "original")

    def __init__(self, original: Callable[..., Any], args: Args, kwargs: Kwargs) -> None:
        self.original = original
        self.args = args
        self.kwargs = kwargs

    def __call__(self) -> Any:
        __tracebackhide__ = __traceback_hide__ = True
        return self.original(*self.args, **self.kwargs)

    def __repr__(self) -> str:
        return f"<call of {getattr(self.original, '__qualname__', 'a function')}>"


def _offload_call(
    guard: Settings, violation: Violation, child: Any, call: Callable[[], Any], sensitive: bool
) -> Any:
    """Suspend the driven coroutine here while ``call`` runs in a worker thread (the
    thread-sensitive executor or the pool); report it (timed) so the call still gets fixed."""
    __tracebackhide__ = __traceback_hide__ = True
    pool = None if sensitive else _offload.pool(guard.offload_threads)
    start = perf_counter()
    try:
        return _offload.run_offloaded(child, call, sensitive, pool)
    finally:
        elapsed = perf_counter() - start
        _report.report_timed(guard, dataclasses.replace(violation, offloaded=True), elapsed)


def call_allowed(original: Callable[..., Any], args: Args, kwargs: Kwargs) -> Any:
    """Run a call that was judged and let through (not blocking, exempt caller, rule): the
    hooked calls it makes itself (asyncio's ``Popen`` -> ``os.posix_spawn``, a finished
    ``Popen.wait`` -> ``os.waitpid``, ``Path.read_text`` -> ``open``) are covered by that
    judgement.  Only reached on a loop thread, so the contextvar round trip is cheap."""
    __tracebackhide__ = __traceback_hide__ = True
    token = allowed_var.set(ALL)
    try:
        return original(*args, **kwargs)
    finally:
        allowed_var.reset(token)


# -- the slow path ------------------------------------------------------------------------------


def judge(
    hook: Hook,
    original: Callable[..., Any],
    args: Args,
    kwargs: Kwargs,
    frame: FrameType | None,
    *,
    covers: bool = True,
    shown: tuple[Hook, Args, Kwargs] | None = None,
    would_block: Callable[[Args, Kwargs], bool] | None = None,
    caller: FrameFinder | None = None,
    exempt: Callable[[FrameType | None], bool] | None = None,
) -> Any:
    """The slow path of every hook, on a loop thread, for a call made from ``frame``.

    ``covers``: a call judged not blocking covers the hooked calls it makes (the generic
    wrappers), or lets them be judged on their own (locks, Django: a template served from the
    cache still renders a lazy query).  ``shown``: the call to name in the report when it is
    not this one (``send_mail`` reported at the SMTP send below it).  ``would_block``: the
    predicate to use instead of the hook's (evaluated with blocking allowed by the caller's
    choice).  ``caller``: finds the frame that made the call, from ``frame`` (past frames that
    only forward it); ``exempt``: more callers whose calls are not violations (a queue's own
    mutex).  Both run only for a call judged blocking.
    """
    __tracebackhide__ = __traceback_hide__ = True
    if allowed_var.get() is ALL:  # allow_blocking() or the guard's own work: no judgement
        return original(*args, **kwargs)
    predicate = would_block if would_block is not None else hook.would_block
    try:
        blocking = predicate is None or predicate(args, kwargs)
        if blocking and caller is not None:
            frame = caller(frame)
        exempted = blocking and exempt is not None and exempt(frame)
    except Exception as exc:  # a predicate's bug: the call goes ahead, as if unhooked
        _report.internal_error(f"hook {hook.key}", exc)
        blocking, exempted = True, True
    if not blocking:
        return call_allowed(original, args, kwargs) if covers else original(*args, **kwargs)
    guard = violation = None
    if not exempted:
        named, named_args, named_kwargs = shown if shown is not None else (hook, args, kwargs)
        try:
            guard = guard_for(named.key, frame)
            if guard is not None:  # a violation: only now is anything built for the report
                violation = _violation(named, format_call(named, named_args, named_kwargs), frame)
        except Exception as exc:  # judged blocking, but describing it failed
            _report.internal_error(f"hook {hook.key}", exc)
            guard = _current
            if guard is not None and guard.mode == "raise":  # fail closed, plain message
                raise BlockingCallError(_plain_violation(hook, frame)) from None
            guard = None
    if guard is None or violation is None:
        return call_allowed(original, args, kwargs)
    return act(guard, violation, hook, original, args, kwargs)


def _plain_violation(hook: Hook | AuditHook, frame: FrameType | None) -> Violation:
    """A violation built without the hook's formatter or predicate (they failed)."""
    location = ("<unknown>", 0, "<unknown>")
    with contextlib.suppress(Exception):  # the frame walk itself may be what failed
        location = _frames.user_location(frame)
    return Violation(
        call=hook.key,
        category=hook.category,
        location=location,
        stack=traceback.StackSummary(),
        duration=None,
        thread=_loop.current_thread_name(),
        task=_loop.current_task_name(),
        request=None,
        hint=_wording.UNDESCRIBED,
    )


def on_loop_call(hook: Hook, original: Callable[..., Any], args: Args, kwargs: Kwargs) -> Any:
    """Called by a generic wrapper when this thread runs a loop.  A call that will not block
    (a non-blocking socket, a descriptor) is let through before the frame is fetched:
    ``sys._getframe`` raises an audit event, a call into our audit hook."""
    __tracebackhide__ = __traceback_hide__ = True
    predicate = hook.would_block
    if predicate is not None and allowed_var.get() is not ALL:
        try:
            blocking = predicate(args, kwargs)
        except Exception:  # judge() asks again and reports the predicate's error
            blocking = None
        if blocking is not None:
            if not blocking:
                return call_allowed(original, args, kwargs)  # as judge() does (covers)
            return judge(hook, original, args, kwargs, sys._getframe(1), would_block=_blocks)
    return judge(hook, original, args, kwargs, sys._getframe(1))


def _blocks(args: Args, kwargs: Kwargs) -> bool:
    return True  # the hook's predicate was asked once, by on_loop_call


def timed_iteration(items: Iterator[Any], guard: Settings, violation: Violation) -> Iterator[Any]:
    """Warn mode for a call that hands back an iterator of waits (``as_completed``): each
    ``next()`` is timed with blocking allowed, and the total reported when it is done."""
    elapsed = 0.0
    try:
        while True:
            token = allowed_var.set(ALL)
            start = perf_counter()
            try:
                item = next(items)
            except StopIteration:
                return
            finally:
                elapsed += perf_counter() - start
                allowed_var.reset(token)
            yield item
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()
        _report.report_timed(guard, violation, elapsed)


def on_audit_event(spec: AuditHook, args: tuple[Any, ...]) -> None:
    """Called by the audit hook for a watched event on a loop thread."""
    __tracebackhide__ = __traceback_hide__ = True
    try:
        if spec.would_block is not None and not spec.would_block(args):
            return
        frame = sys._getframe(2)
        if _frames.has_guard_frame(frame):
            return  # an attribute hook of ours is handling this very call
        fmt = spec.fmt
        decision = decide(
            spec,
            (lambda: fmt(args)) if fmt is not None else (lambda: _short_first(args)),
            frame,
        )
    except Exception as exc:
        _report.internal_error(f"audit event {spec.event}", exc)
        return
    if decision is None:
        return
    guard, violation = decision
    if guard.mode == "raise":
        raise_error(guard, violation, None)
    # warn: the C call has not run yet and cannot be timed from an audit hook
    _report.report(guard, violation, raised=False)


def _short_first(args: tuple[Any, ...]) -> str:
    return short(args[0]) if args else ""
