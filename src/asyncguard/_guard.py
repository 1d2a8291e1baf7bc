"""The guard: its configuration, and install/uninstall/guarded.

``install()`` patches the hook families (``_hooks.catalog``) through ``_patch``, turns on the
audit hook and the stall watchdog, and hands the configured :class:`Guard` to the engine
(``_judge.set_current``), whose slow path reads it on every judged call.
"""

from __future__ import annotations

import _thread
import atexit
import fnmatch
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from . import _allow, _audit, _judge, _offload, _patch, _report, _watchdog
from ._allow import AllowRule, rules_allow, validate_call_pattern
from ._hooks import catalog
from ._hooks._wrap import build
from ._report import Callback, Collector
from ._sinks import JsonLines, RateLimiter, since_start_text
from ._sites import DEFAULT_MAX_SITES, SiteTable
from ._violation import Violation

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)

MODES = ("raise", "warn", "offload", "off")
OPTIONS = (
    "mode",
    "allow",
    "on_violation",
    "min_duration",
    "exclude",
    "log",
    "stall_threshold",
    "json",
    "rate_limit",
    "max_sites",
    "summary_interval",
    "offload_threads",
    "offload_routes",
)
ROUTES = ("thread_sensitive", "pool", "inline")
DEFAULT_RATE_LIMIT = 60  # log lines a minute
DEFAULT_SUMMARY_INTERVAL = 300.0  # seconds

_install_lock = _thread.allocate_lock()  # the C lock: never one of our guarded wrappers


def _check_mode(mode: object) -> str:
    if mode not in MODES:
        raise ValueError(
            f"unknown asyncguard mode {mode!r}; choose one of {', '.join(map(repr, MODES))}"
        )
    return str(mode)


class Guard:
    """The process-wide guard returned by :func:`install`.

    Calling :func:`install` again while installed reconfigures this same object (mode, rules,
    callbacks, ...); changing ``exclude`` re-patches.  :func:`uninstall` restores every patched
    attribute to the identical original object.
    """

    def __init__(self) -> None:
        self.mode = "raise"
        self.rules: tuple[AllowRule, ...] = ()
        self.callbacks: tuple[Callback, ...] = ()
        self.min_duration = 0.0
        self.exclude: frozenset[str] = frozenset()
        self.log = True
        self.stall_threshold: float | None = _watchdog.DEFAULT_THRESHOLD
        self.json_path: str | None = None
        self.json: JsonLines | None = None
        self.rate_limit = DEFAULT_RATE_LIMIT
        self.max_sites = DEFAULT_MAX_SITES
        self.summary_interval = DEFAULT_SUMMARY_INTERVAL
        self.offload_threads = _offload.DEFAULT_THREADS
        self.offload_routes: dict[str, str] = {}
        self.sites = SiteTable(self.max_sites)
        self.limiter = RateLimiter(self.rate_limit)
        self.installed = False
        self.summarized_calls = 0  # calls covered by the last final summary

    def __repr__(self) -> str:
        state = "installed" if self.installed else "not installed"
        return f"<asyncguard.Guard mode={self.mode!r} {state}>"

    def options(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "allow": tuple(rule.source for rule in self.rules),
            "on_violation": self.callbacks,
            "min_duration": self.min_duration,
            "exclude": tuple(sorted(self.exclude)),
            "log": self.log,
            "stall_threshold": self.stall_threshold,
            "json": self.json_path,
            "rate_limit": self.rate_limit,
            "max_sites": self.max_sites,
            "summary_interval": self.summary_interval,
            "offload_threads": self.offload_threads,
            "offload_routes": dict(self.offload_routes),
        }

    def route(self, key: str) -> str:
        """Where offload mode sends ``key``: ``thread_sensitive``, ``pool`` or ``inline`` (the
        user's ``offload_routes`` first, then the hook families' own)."""
        for pattern, route in (*self.offload_routes.items(), *_DEFAULT_ROUTES):
            if fnmatch.fnmatchcase(key, pattern):
                return route
        return "pool"

    def summary(self, top: int = 10) -> str:
        """The top ``top`` call sites by blocked time since install, as logged at exit."""
        return since_start_text(self.sites, top=top, suppressed=0)

    def configure(
        self,
        mode: str = "raise",
        *,
        allow: Iterable[str] = (),
        on_violation: Callback | Iterable[Callback] | None = None,
        min_duration: float = 0.0,
        exclude: Iterable[str] = (),
        log: bool = True,
        stall_threshold: float | None = _watchdog.DEFAULT_THRESHOLD,
        json: str | None = None,
        rate_limit: int = DEFAULT_RATE_LIMIT,
        max_sites: int = DEFAULT_MAX_SITES,
        summary_interval: float = DEFAULT_SUMMARY_INTERVAL,
        offload_threads: int = _offload.DEFAULT_THREADS,
        offload_routes: dict[str, str] | None = None,
        **unknown: object,
    ) -> None:
        if unknown:
            name = next(iter(unknown))
            raise ValueError(
                f"unknown asyncguard option {name!r}; valid options are "
                f"{', '.join(map(repr, OPTIONS))}"
            )
        mode = _check_mode(mode)
        if isinstance(allow, str):
            allow = [allow]
        rules = tuple(AllowRule.parse(rule) for rule in allow)
        if on_violation is None:
            callbacks: tuple[Callback, ...] = ()
        elif callable(on_violation):
            callbacks = (on_violation,)
        else:
            callbacks = tuple(on_violation)
        for callback in callbacks:
            if not callable(callback):
                raise ValueError(f"on_violation must be callable, got {callback!r}")
        if isinstance(min_duration, bool) or not isinstance(min_duration, (int, float)):
            raise ValueError(f"min_duration must be a number of seconds, got {min_duration!r}")
        if min_duration < 0:
            raise ValueError(f"min_duration must be >= 0 seconds, got {min_duration!r}")
        if stall_threshold is not None:
            _check_number("stall_threshold", stall_threshold, "seconds (None: no watchdog)")
            if stall_threshold == 0:
                stall_threshold = None
        _check_number("summary_interval", summary_interval, "seconds (0: only at exit)")
        for name, value in (("rate_limit", rate_limit), ("max_sites", max_sites)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")
        if max_sites < 1:
            raise ValueError(f"max_sites must be at least 1, got {max_sites!r}")
        if (
            isinstance(offload_threads, bool)
            or not isinstance(offload_threads, int)
            or offload_threads < 1
        ):
            raise ValueError(
                f"offload_threads must be a whole number >= 1, got {offload_threads!r}"
            )
        routes = dict(offload_routes or {})
        for pattern, route in routes.items():
            if route not in ROUTES:
                raise ValueError(
                    f"offload route {route!r} for {pattern!r} is not valid; choose one of "
                    f"{', '.join(map(repr, ROUTES))}"
                )
            validate_call_pattern(pattern, what="call key in offload_routes")
        if mode == "offload" and not _offload.available():
            raise ValueError(
                "mode 'offload' needs the greenlet package: pip install 'asyncguard[offload]'"
            )
        if json is not None and (not isinstance(json, str) or not json):
            raise ValueError(f"json must be a file path or '-' (standard error), got {json!r}")
        if json != self.json_path:
            sink = JsonLines(json) if json is not None else None  # ValueError if unwritable
            if self.json is not None:
                _report.summarize(self, final=True)
                self.json.close()
            self.json, self.json_path = sink, json
        if isinstance(exclude, str):
            exclude = [exclude]
        excluded = frozenset(exclude)
        choices = catalog.exclude_choices()
        for name in excluded:
            if name not in choices:
                raise ValueError(
                    f"unknown hook family {name!r} in exclude; choose from "
                    f"{', '.join(map(repr, catalog.family_names()))}, or one library: "
                    f"{', '.join(map(repr, catalog.library_names()))}"
                )
        self.mode = mode
        self.rules = rules
        self.callbacks = callbacks
        self.min_duration = float(min_duration)
        self.exclude = excluded
        self.log = bool(log)
        self.stall_threshold = None if stall_threshold is None else float(stall_threshold)
        if rate_limit != self.rate_limit:
            self.limiter = RateLimiter(rate_limit)
        self.rate_limit = rate_limit
        if max_sites != self.max_sites:
            self.sites.max_sites = max_sites
        self.max_sites = max_sites
        self.summary_interval = float(summary_interval)
        self.offload_threads = offload_threads
        self.offload_routes = routes


def _check_number(name: str, value: object, unit: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{name} must be a number of {unit} >= 0, got {value!r}")


_DEFAULT_ROUTES = catalog.routes()
_allow.set_known_keys(catalog.known_keys)  # allow rules and markers name these
_guard: Guard | None = None  # the installed guard (also the engine's: _judge.set_current)


def current() -> Guard | None:
    """The installed guard, or ``None``."""
    return _guard


def install(mode: str = "raise", **options: Any) -> Guard:
    """Install the guard process-wide (or reconfigure it if already installed)."""
    global _guard
    with _install_lock:
        guard = _guard or Guard()
        previous_exclude = guard.exclude
        guard.configure(mode, **options)
        if guard.installed and guard.exclude != previous_exclude:
            _patch.remove_all()
            guard.installed = False
        if not guard.installed:
            try:
                _patch.apply([*catalog.hooks(exclude=guard.exclude), *_watchdog.HOOKS], build)
                _audit.enable(catalog.audit_hooks(exclude=guard.exclude), _judge.on_audit_event)
            except BaseException:
                _patch.remove_all()
                _audit.disable()
                _guard = None
                _judge.set_current(None)
                raise
            guard.installed = True
        _guard = guard
        _judge.set_current(guard)
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
    if guard.json is not None:
        guard.json.close()
        guard.json = None
        guard.json_path = None


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
                _guard.json.close()
                _guard.json = None
                _guard.json_path = None
        _guard = None
        _judge.set_current(None)


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
