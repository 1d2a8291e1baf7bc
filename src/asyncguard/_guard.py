"""The guard: its configuration (``Guard``, applied from the option table, ``_config``) and
the decision made on a loop thread.  ``install``/``uninstall``/``guarded`` are in ``_install``.

Hot path (in each wrapper): "does this thread run a loop?" -> no: call through.
Slow path (here): allowed? mode off? would it really block? exempt caller? allow rule?
-> build a Violation -> raise before the call, or run it timed and report it.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import sys
import time
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any

from . import _config, _frames, _loop, _offload, _report, _request, _watchdog
from ._allow import ALL, AllowRule, allowed_var, rules_allow
from ._hooks._spec import AuditHook, Hook
from ._redact import redact
from ._report import Callback
from ._sinks import JsonLines, RateLimiter
from ._sites import SiteTable
from ._violation import BlockingCallError, Violation

MODES = _config.MODES
OPTIONS = _config.INSTALL_OPTIONS  # install()'s keyword arguments, from the option table
ROUTES = _config.ROUTES
# where offload mode sends a call, by call key pattern (the first match wins; user routes go
# first): "thread_sensitive" = asgiref's thread-sensitive executor (Django's per-request
# thread), "pool" = asyncguard's worker threads, "inline" = not offloaded (run and reported
# as in warn mode) — for objects bound to the thread that made them
DEFAULT_ROUTES: tuple[tuple[str, str], ...] = (
    ("threading.RLock.*", "inline"),  # an RLock belongs to the thread that acquires it
    ("threading.Condition.*", "inline"),  # wait() must be called by the lock's owner
    ("sqlite3.*", "inline"),  # sqlite3 objects refuse other threads (check_same_thread)
    ("django.utils.asyncio.async_unsafe", "inline"),  # a refusal Django raised: nothing to run
    ("django.*", "thread_sensitive"),  # Django's own rule for its sync code (and the ORM's)
)


def _offload_adapter(key: str) -> _Adapter | None:
    """Calls that need preparing to run in another thread (the ORM: the worker's connection)."""
    if key == "django.db.query":
        from ._hooks._django_wrap import offload_query

        return offload_query
    return None


_Adapter = Callable[[Callable[..., Any], Any, Any], "Callable[[], Any] | None"]

_perf_counter = time.perf_counter


class Guard:
    """The process-wide guard returned by :func:`install`.

    Calling :func:`install` again while installed reconfigures this same object (mode, rules,
    callbacks, ...); changing ``exclude`` re-patches.  :func:`uninstall` restores every patched
    attribute to the identical original object.
    """

    def __init__(self) -> None:
        self.json_path: str | None = None
        self.json: JsonLines | None = None
        self.sites = SiteTable(_config.BY_NAME["max_sites"].default)
        self.limiter = RateLimiter(_config.BY_NAME["rate_limit"].default)
        self.installed = False
        self.counts: dict[str, int] = {}
        self.summarized_calls = 0  # calls covered by the last final summary
        self.configure(_config.defaults())

    def __repr__(self) -> str:
        state = "installed" if self.installed else "not installed"
        return f"<asyncguard.Guard mode={self.mode!r} {state}>"

    def options(self) -> dict[str, Any]:
        """The install options in effect (``install(**guard.options())`` gives them back)."""
        options = dict(self._options)
        options["offload_routes"] = dict(options["offload_routes"])
        return options

    def route(self, key: str) -> str:
        """Where offload mode sends ``key``: ``thread_sensitive``, ``pool`` or ``inline``."""
        for pattern, route in (*self.offload_routes.items(), *DEFAULT_ROUTES):
            if fnmatch.fnmatchcase(key, pattern):
                return route
        return "pool"

    def summary(self, top: int = 10) -> str:
        """The top ``top`` call sites by blocked time since install, as logged at exit."""
        from ._sinks import since_start_text

        return since_start_text(self.sites, top=top, suppressed=0)

    def configure(self, options: Mapping[str, Any]) -> None:
        """Apply every install option, validated already (``_config.from_kwargs``)."""
        if options["mode"] == "offload" and not _offload.available():
            raise ValueError(
                "mode 'offload' needs the greenlet package: pip install 'asyncguard[offload]'"
            )
        json = options["json"]
        if json != self.json_path:
            sink = JsonLines(json) if json is not None else None  # ValueError if unwritable
            if self.json is not None:
                _report.summarize(self, final=True)
                self.json.close()
            self.json, self.json_path = sink, json
        self.mode: str = options["mode"]
        self.rules: tuple[AllowRule, ...] = tuple(map(AllowRule.parse, options["allow"]))
        self.callbacks: tuple[Callback, ...] = options["on_violation"]
        self.min_duration: float = options["min_duration"]
        self.exclude: frozenset[str] = frozenset(options["exclude"])
        self.log: bool = options["log"]
        self.stall_threshold: float | None = options["stall_threshold"]
        if options["rate_limit"] != self.limiter.per_minute:
            self.limiter = RateLimiter(options["rate_limit"])
        self.rate_limit: int = options["rate_limit"]
        self.sites.max_sites = self.max_sites = options["max_sites"]
        self.summary_interval: float = options["summary_interval"]
        self.offload_threads: int = options["offload_threads"]
        self.offload_routes: dict[str, str] = dict(options["offload_routes"])
        self._options = {**options, "offload_routes": dict(self.offload_routes)}

    def close_json(self) -> None:
        """Close the JSON-lines file (the caller wrote its last summary)."""
        if self.json is not None:
            self.json.close()
        self.json = None
        self.json_path = None
        self._options["json"] = None


_guard: Guard | None = None  # the installed guard, read by the slow path


def current() -> Guard | None:
    """The installed guard, or ``None``."""
    return _guard


def set_current(guard: Guard | None) -> None:
    """Make ``guard`` the installed one (``_install.install`` / ``uninstall``)."""
    global _guard
    _guard = guard


# -- the slow path -----------------------------------------------------------------------


def _violation(key: str, category: str, hint: str, args: str, frame: FrameType | None) -> Violation:
    _watchdog.watch_running_loop()
    args = redact(args)  # every hook's formatter scrubs; this is the net below them all
    request = _request.current()
    return Violation(
        call=key,
        category=category,
        location=_frames.user_location(frame),
        stack=_frames.stack_from(frame),
        duration=None,
        thread=_loop.current_thread_name(),
        task=_loop.current_task_name(),
        request=request.label if request is not None else None,
        hint=hint.format(args=args),
        args=args,
        view=request.view if request is not None else None,
    )


def decide(
    key: str,
    category: str,
    hint: str,
    format_args: Callable[[], str],
    frame: FrameType | None,
) -> tuple[Guard, Violation] | None:
    """On a loop thread: the violation to act on, or ``None`` to let the call through."""
    allowed = allowed_var.get()
    if allowed is not None and allowed.allows(key):
        return None
    guard = _guard
    if guard is None or guard.mode == "off":
        return None
    if _frames.is_exempt(frame) or rules_allow(guard.rules, key, frame):
        return None
    guard.counts[key] = guard.counts.get(key, 0) + 1
    return guard, _violation(key, category, hint, format_args(), frame)


def act(
    guard: Guard,
    violation: Violation,
    original: Callable[..., Any],
    args: Any,
    kwargs: Any,
    *,
    error: Callable[[Violation], BaseException] | None = None,
) -> Any:
    """Raise before the call (``error(violation)``, by default a ``BlockingCallError``), or
    run it timed (blocking allowed inside) and report it."""
    __tracebackhide__ = __traceback_hide__ = True
    if guard.mode == "raise":
        _report.report(guard, violation, raised=True)
        raise BlockingCallError(violation) if error is None else error(violation)
    if guard.mode == "offload":
        route = guard.route(violation.call)
        child = _offload.driven() if route != "inline" else None
        if child is not None:
            adapter = _offload_adapter(violation.call)
            call = (
                functools.partial(original, *args, **kwargs)
                if adapter is None
                else adapter(original, args, kwargs)
            )
            if call is not None:
                return _offload_call(guard, violation, child, call, route == "thread_sensitive")
    token = allowed_var.set(ALL)
    start = _perf_counter()
    try:
        return original(*args, **kwargs)
    finally:
        elapsed = _perf_counter() - start
        allowed_var.reset(token)
        _report.report_timed(guard, violation, elapsed)


def _offload_call(
    guard: Guard, violation: Violation, child: Any, call: Callable[[], Any], sensitive: bool
) -> Any:
    """Suspend the driven coroutine here while ``call`` runs in a worker thread (the
    thread-sensitive executor or the pool); report it (timed) so the call still gets fixed."""
    __tracebackhide__ = __traceback_hide__ = True
    pool = None if sensitive else _offload.pool(guard.offload_threads)
    start = _perf_counter()
    try:
        return _offload.run_offloaded(child, call, sensitive, pool)
    finally:
        elapsed = _perf_counter() - start
        _report.report_timed(guard, dataclasses.replace(violation, offloaded=True), elapsed)


def on_loop_call(hook: Hook, original: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    """Called by a generic wrapper when this thread runs a loop."""
    __tracebackhide__ = __traceback_hide__ = True
    if allowed_var.get() is ALL:  # allow_blocking() or the guard's own work: no judgement
        return original(*args, **kwargs)
    try:
        if hook.would_block is not None and not hook.would_block(args, kwargs):
            return call_allowed(original, args, kwargs)
        decision = decide(
            hook.key,
            hook.category,
            hook.hint,
            lambda: _format(hook, args, kwargs),
            sys._getframe(1),
        )
    except Exception as exc:
        _report.internal_error(f"hook {hook.key}", exc)
        decision = None
    if decision is None:
        return call_allowed(original, args, kwargs)
    return act(decision[0], decision[1], original, args, kwargs, error=hook.error)


def call_allowed(original: Callable[..., Any], args: Any, kwargs: Any) -> Any:
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


def _format(hook: Hook, args: Any, kwargs: Any) -> str:
    from ._hooks._format import positional

    if hook.fmt is not None:
        return hook.fmt(args, kwargs)
    return positional(args, skip=1 if hook.method else 0)


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
            spec.key,
            spec.category,
            spec.hint,
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
        _report.report(guard, violation, raised=True)
        raise BlockingCallError(violation)
    # warn: the C call has not run yet and cannot be timed from an audit hook
    _report.report(guard, violation, raised=False)


def _short_first(args: tuple[Any, ...]) -> str:
    from ._hooks._format import short

    return short(args[0]) if args else ""
