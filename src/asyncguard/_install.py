"""Install and configuration: ``install()``, ``uninstall()``, ``guarded()``, and what
installing starts — the patches, the audit hook, the watchdog, the at-exit summary.

The options are validated by the option table (``_config.from_kwargs``) and applied by
``Guard.configure``; the installed guard is ``_guard.current()``, which the slow path reads.
"""

from __future__ import annotations

import _thread
import atexit
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from . import _audit, _config, _guard, _judge, _offload, _patch, _report, _watchdog, _wording
from ._allow import AllowRule, begin_usage, names_a_missing_module, rules_allow, unused
from ._guard import Guard
from ._hooks import catalog
from ._hooks._wrap import build
from ._report import Collector
from ._sinks import log
from ._violation import Violation

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)

_install_lock = _thread.allocate_lock()  # the C lock: never one of our guarded wrappers


def install(mode: str = "raise", **options: Any) -> Guard:
    """Install the guard process-wide (or reconfigure it if already installed)."""
    with _install_lock:
        guard = _guard.current() or Guard()
        previous_exclude = guard.exclude
        guard.configure(_config.from_kwargs({"mode": mode, **options}))
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
                _guard.set_current(None)
                raise
            guard.installed = True
        _guard.set_current(guard)
        _start_watchdog(guard)
        _register_at_exit()
        _say_active(guard)
        _say_missing_modules(guard)
        return guard


_checked_places: set[AllowRule] = set()


def _say_missing_modules(guard: Guard) -> None:
    """Rules naming a module that does not exist: said once each, at configure time.  Each
    rule is looked at once per process (the pytest plugin reinstalls before every test)."""
    if guard.mode == "off":
        return
    new = [rule for rule in guard.rules if rule not in _checked_places]
    _checked_places.update(new)
    missing = [rule for rule in new if names_a_missing_module(rule)]
    if missing:
        log.logger.warning("%s", _wording.missing_module_rules([rule.source for rule in missing]))


_said_active = False


def _say_active(guard: Guard) -> None:
    """Once per process, the first time the guard is on: what it does, at INFO; and a handler
    that prints its warnings in the README's form while the program configures no logging."""
    global _said_active
    if guard.log:
        log.add_fallback_handler()
    if _said_active or guard.mode == "off":
        return
    _said_active = True
    skip = set(guard.exclude)
    families = [name for name in catalog.family_names() if name not in skip]
    sinks = ["the asyncguard logger"] if guard.log else []
    if guard.json_path is not None:
        sinks.append(f"JSON lines {guard.json_path!r}")
    log.logger.info(
        "%s",
        _wording.active(guard.mode, families, guard.stall_threshold, sinks or ["collectors only"]),
    )


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
    guard = _guard.current()
    if guard is None or guard.mode == "off":
        return
    _report.report(guard, violation, raised=False)


def _stall_allowed(frame: FrameType) -> bool:
    guard = _guard.current()
    return guard is not None and rules_allow(guard.rules, _watchdog.STALL_KEY, frame)


def _periodic_summary() -> None:
    guard = _guard.current()
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
    guard = _guard.current()
    if guard is None or not guard.installed:
        return
    _watchdog.set_current(None)
    final_summary()
    guard.close_json()


def final_summary() -> None:
    """The summary since start (log, JSON), unless nothing happened since the last one."""
    guard = _guard.current()
    if guard is None or not guard.installed:
        return
    calls = guard.sites.calls()
    if calls != guard.summarized_calls:
        guard.summarized_calls = calls
        _report.summarize(guard, final=True)
    _say_stale_rules(guard)


_said_stale: set[AllowRule] = set()


def _say_stale_rules(guard: Guard) -> None:
    """At the end, the allow rules that never allowed a call (each said once per process)."""
    stale = [rule for rule in unused(guard.rules) if rule not in _said_stale]
    if stale and guard.log and guard.mode != "off":
        _said_stale.update(stale)
        log.logger.warning("%s", _wording.stale_rules([rule.source for rule in stale]))


_watchdog.on_server_end = final_summary


def uninstall() -> None:
    """Remove every hook; each patched attribute is the identical original object again."""
    with _install_lock:
        _audit.disable()
        _patch.remove_all()
        _watchdog.set_current(None)
        _offload.release_loops()
        guard = _guard.current()
        if guard is not None:
            guard.installed = False
            if guard.json is not None:  # the JSON file gets the last interval, then closes
                _report.summarize(guard, final=True)
                guard.close_json()
        _guard.set_current(None)


@contextmanager
def guarded(mode: str | None = None, **options: Any) -> Iterator[Collector]:
    """Guard a block: install (or temporarily reconfigure) and collect every violation.

    ``with guarded(mode="warn") as g: ...`` then ``g.violations``.  Violations are collected
    even when the code swallowed the ``BlockingCallError``.  On exit the previous configuration
    comes back (or the guard is uninstalled if this block installed it).
    """
    guard = _guard.current()
    previous = guard.options() if guard is not None and guard.installed else None
    if previous is None:
        install(mode or "raise", **options)
    elif mode is not None or options:
        merged = {**previous, **options}
        merged["mode"] = mode or previous["mode"]
        install(**merged)
    collector = Collector()
    _report.add_collector(collector)
    epoch = begin_usage()
    try:
        yield collector
    finally:
        _report.remove_collector(collector)
        current = _guard.current()
        if current is not None:
            collector.unused_rules = [rule.source for rule in unused(current.rules, epoch)]
        if previous is None:
            uninstall()
        elif mode is not None or options:
            install(**previous)
