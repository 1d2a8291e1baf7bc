"""Where violations go: the request's budget, the site table, then every sink (``_sinks``:
``guarded()`` collectors and ``on_violation`` callbacks, the ``asyncguard`` logger, the JSON-lines
file).  Everything here runs with blocking allowed, so a sink (a logging handler writing a file
on the loop thread) can never re-enter the guard; a sink's error is logged once and the others
still get the violation."""

from __future__ import annotations

from typing import Protocol

from ._allowed import ALL, allowed_var
from ._request import request_var
from ._sinks import Callback, Collector, Event, Interval, RateLimiter, Sink, collect, jsonl, log
from ._sinks.jsonl import JsonLines
from ._sites import SiteTable
from ._violation import Violation

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)
__asyncguard_work__ = True  # the guard judging or reporting a call (_frames)

__all__ = [
    "SINKS",
    "Callback",
    "Collector",
    "add_collector",
    "internal_error",
    "remove_collector",
    "report",
    "report_timed",
    "summarize",
]

# Every sink, in order: adding one is a module in _sinks and a line here.
SINKS: tuple[Sink, ...] = (collect.SINK, log.SINK, jsonl.SINK)

add_collector = collect.add_collector
remove_collector = collect.remove_collector
internal_error = log.internal_error


class _Reporting(Protocol):
    """What reporting needs from the guard (``_guard.Guard``); each sink reads its own part."""

    mode: str
    callbacks: tuple[Callback, ...]
    log: bool
    min_duration: float
    sites: SiteTable
    limiter: RateLimiter
    json: JsonLines | None


def report_timed(guard: _Reporting, violation: Violation, elapsed: float) -> None:
    """A call that ran and was timed: reported when it blocked at least ``min_duration``,
    else only counted (summaries and the JSON file still see it)."""
    if elapsed >= guard.min_duration:
        report(guard, violation.with_duration(elapsed), raised=False)
        return
    token = allowed_var.set(ALL)
    try:
        request = request_var.get()
        if request is not None:
            request.add(elapsed)
        guard.sites.record(violation.with_duration(elapsed), reported=False)
    except Exception as exc:
        internal_error("reporting", exc)
    finally:
        allowed_var.reset(token)


def report(guard: _Reporting, violation: Violation, *, raised: bool) -> None:
    """Tell everyone about one violation: the request's budget, the site table, and every
    sink (each decides what to keep: every violation, or one per site)."""
    token = allowed_var.set(ALL)
    try:
        request = request_var.get()
        if request is not None:
            request.add(violation.duration)
        site = guard.sites.record(violation, reported=True)
        event = Event(violation, site, site.total.reported if site is not None else 0, raised)
        for sink in SINKS:
            try:
                sink.violation(guard, event)
            except Exception as exc:
                internal_error(f"the {sink.name} sink", exc)
    except Exception as exc:
        internal_error("reporting", exc)
    finally:
        allowed_var.reset(token)


def summarize(guard: _Reporting, *, final: bool, top: int = 10) -> None:
    """The periodic (``final=False``: the last interval) or at-exit (since start) summary, to
    every sink: the log's top offenders by blocked time, the JSON file's ``site`` lines."""
    token = allowed_var.set(ALL)
    try:
        table = guard.sites
        rows, since, overflow_count, overflow_total = table.take_interval()
        interval = Interval(
            rows,
            since,
            overflow_count,
            overflow_total,
            guard.limiter.take_suppressed(),
            final,
            table,
            top,
        )
        for sink in SINKS:
            try:
                sink.summary(guard, interval)
            except Exception as exc:
                internal_error(f"the {sink.name} sink's summary", exc)
    except Exception as exc:
        internal_error("the summary", exc)
    finally:
        allowed_var.reset(token)
