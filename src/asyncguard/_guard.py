"""The guard: configuration, install/uninstall, and the decision made on a loop thread.

Hot path (in each wrapper): "does this thread run a loop?" -> no: call through.
Slow path (here): allowed? mode off? would it really block? exempt caller? allow rule?
-> build a Violation -> raise before the call, or run it timed and report it.
"""

from __future__ import annotations

import _thread
import atexit
import dataclasses
import fnmatch
import functools
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import FrameType
from typing import Any

from . import _audit, _config, _frames, _loop, _offload, _patch, _report, _request, _watchdog
from ._allow import ALL, AllowRule, allowed_var, rules_allow
from ._hooks import catalog
from ._hooks._spec import AuditHook, Hook
from ._redact import redact
from ._report import Callback, Collector
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
_install_lock = _thread.allocate_lock()  # the C lock: never one of our guarded wrappers


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


def install(mode: str = "raise", **options: Any) -> Guard:
    """Install the guard process-wide (or reconfigure it if already installed)."""
    global _guard
    with _install_lock:
        guard = _guard or Guard()
        previous_exclude = guard.exclude
        guard.configure(_config.from_kwargs({"mode": mode, **options}))
        if guard.installed and guard.exclude != previous_exclude:
            _patch.remove_all()
            guard.installed = False
        if not guard.installed:
            try:
                _patch.apply([*catalog.hooks(exclude=guard.exclude), *_watchdog.HOOKS])
                _audit.enable(catalog.audit_hooks(exclude=guard.exclude), on_audit_event)
            except BaseException:
                _patch.remove_all()
                _audit.disable()
                _guard = None
                raise
            guard.installed = True
        _guard = guard
        _start_watchdog(guard)
        _register_at_exit()
        return guard


def _start_watchdog(guard: Guard) -> None:
    """One watchdog for the guard, restarted when its threshold or summary interval changes."""
    current = _watchdog.current()
    threshold = guard.stall_threshold
    wanted = guard.mode != "off" and (threshold is not None or guard.summary_interval > 0)
    if not wanted:
        _watchdog.set_current(None)
        return
    if (
        current is not None
        and current.threshold == (threshold or 0.0)
        and current.periodic_interval == guard.summary_interval
    ):
        return
    watchdog = _watchdog.Watchdog(
        threshold if threshold is not None else float("inf"),
        report=_report_stall,
        is_allowed=_stall_allowed,
    )
    if threshold is None:
        watchdog.watch_loops = False
    watchdog.periodic = _periodic_summary
    watchdog.periodic_interval = guard.summary_interval
    _watchdog.set_current(watchdog)
    watchdog.start()
    _watchdog.watch_running_loop()


def _report_stall(violation: Violation) -> None:
    guard = _guard
    if guard is None or guard.mode == "off":
        return
    _report.report(guard, violation, raised=False)


def _stall_allowed(frame: FrameType) -> bool:
    guard = _guard
    return guard is not None and rules_allow(guard.rules, _watchdog.STALL_KEY, frame)


def _periodic_summary() -> None:
    guard = _guard
    if guard is not None:
        _report.summarize(guard, final=False)


_at_exit_registered = False


def _register_at_exit() -> None:
    global _at_exit_registered
    if not _at_exit_registered:
        _at_exit_registered = True
        atexit.register(_at_exit)


def _at_exit() -> None:
    """The at-exit summary (log and JSON), if the guard is still installed and something
    happened since the last final summary (a served loop's close logs one)."""
    guard = _guard
    if guard is None or not guard.installed:
        return
    _watchdog.set_current(None)
    final_summary()
    guard.close_json()


def final_summary() -> None:
    """The summary since start (log, JSON), unless nothing happened since the last one."""
    guard = _guard
    if guard is None or not guard.installed:
        return
    calls = guard.sites.calls()
    if calls != guard.summarized_calls:
        guard.summarized_calls = calls
        _report.summarize(guard, final=True)


_watchdog.on_served_loop_close = final_summary


def uninstall() -> None:
    """Remove every hook; each patched attribute is the identical original object again."""
    global _guard
    with _install_lock:
        _audit.disable()
        _patch.remove_all()
        _watchdog.set_current(None)
        _offload.release_loops()
        if _guard is not None:
            _guard.installed = False
            if _guard.json is not None:  # the JSON file gets the last interval, then closes
                _report.summarize(_guard, final=True)
                _guard.close_json()
        _guard = None


@contextmanager
def guarded(mode: str | None = None, **options: Any) -> Iterator[Collector]:
    """Guard a block: install (or temporarily reconfigure) and collect every violation.

    ``with guarded(mode="warn") as g: ...`` then ``g.violations``.  Violations are collected
    even when the code swallowed the ``BlockingCallError``.  On exit the previous configuration
    comes back (or the guard is uninstalled if this block installed it).
    """
    previous = _guard.options() if _guard is not None and _guard.installed else None
    if previous is None:
        install(mode or "raise", **options)
    elif mode is not None or options:
        merged = {**previous, **options}
        merged["mode"] = mode or previous["mode"]
        install(**merged)
    collector = Collector()
    _report.add_collector(collector)
    try:
        yield collector
    finally:
        _report.remove_collector(collector)
        if previous is None:
            uninstall()
        elif mode is not None or options:
            install(**previous)


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
