"""Where violations go: the active ``guarded()`` collectors, ``on_violation`` callbacks and the
``asyncguard`` logger.  Everything here runs with blocking allowed, so a sink (a logging handler
writing a file on the loop thread) can never re-enter the guard."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Protocol

from ._allowed import ALL, allowed_var
from ._request import request_var
from ._sinks import (
    JsonLines,
    RateLimiter,
    since_start_text,
    site_record,
    summary_text,
    violation_record,
)
from ._sites import Site, SiteTable
from ._violation import Violation

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)
__asyncguard_work__ = True  # the guard judging or reporting a call (_frames)

logger = logging.getLogger("asyncguard")

Callback = Callable[[Violation], object]

_collectors: list[Collector] = []
_reported_errors: set[tuple[str, str]] = set()


class Collector:
    """What ``guarded()`` yields: every violation seen while it is active, swallowed or not."""

    def __init__(self) -> None:
        self.violations: list[Violation] = []

    @property
    def calls(self) -> list[str]:
        """The call keys of :attr:`violations`, in order."""
        return [v.call for v in self.violations]

    def clear(self) -> None:
        self.violations.clear()

    def __repr__(self) -> str:
        return f"<asyncguard collector: {len(self.violations)} violation(s)>"


def add_collector(collector: Collector) -> None:
    _collectors.append(collector)


def remove_collector(collector: Collector) -> None:
    with contextlib.suppress(ValueError):
        _collectors.remove(collector)


def internal_error(where: str, exc: BaseException) -> None:
    """Log an error of the guard itself once per place and kind; never raise."""
    key = (where, type(exc).__name__)
    if key in _reported_errors:
        return
    _reported_errors.add(key)
    token = allowed_var.set(ALL)
    try:
        logger.error(
            "asyncguard: internal error in %s (the original call went ahead); "
            "please report it: %s: %s",
            where,
            type(exc).__name__,
            exc,
            exc_info=exc,
        )
    except Exception:  # pragma: no cover - a broken logging setup
        pass
    finally:
        allowed_var.reset(token)


# a site is logged in full the first time, then again (one line, with its totals) when its
# count of reported calls reaches 10, 100, 1000, ...: log volume grows with log10(traffic)
_LOGGED_COUNTS = frozenset(10**n for n in range(19))


def _repeat_text(site: Site | None, count: int) -> str:
    assert site is not None
    window = site.total
    spent = "run in worker threads" if site.first.offloaded else "blocked"
    return (
        f"{site.call} at {site.where}: {count} calls so far, {window.total:.3f} s {spent} in "
        f"total (max {window.max * 1000:.1f} ms) — {site.first.hint}"
    )


class _Reporting(Protocol):
    """What reporting needs from the guard (``_guard.Guard``)."""

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
    """Tell everyone about one violation: the request's budget, ``guarded()`` collectors,
    ``on_violation`` callbacks (every violation), and, deduplicated per site, the log (rate
    limited) and the JSON-lines file."""
    token = allowed_var.set(ALL)
    try:
        request = request_var.get()
        if request is not None:
            request.add(violation.duration)
        for collector in tuple(_collectors):
            collector.violations.append(violation)
        for callback in guard.callbacks:
            try:
                callback(violation)
            except Exception as exc:
                internal_error(f"on_violation callback {callback!r}", exc)
        site = guard.sites.record(violation, reported=True)
        count = site.total.reported if site is not None else 0
        if count not in _LOGGED_COUNTS:
            return  # a known site: counted, summarized later
        if guard.log and guard.limiter.take():
            # raise mode: the exception is the report; the log line (DEBUG) is for swallowed ones
            level = logging.DEBUG if raised else logging.WARNING
            text = violation.message() if count == 1 else _repeat_text(site, count)
            logger.log(level, "%s", text, extra={"asyncguard_violation": violation})
        if guard.json is not None and count == 1:
            guard.json.write(violation_record(violation, count=1, mode=guard.mode))
    except Exception as exc:
        internal_error("reporting", exc)
    finally:
        allowed_var.reset(token)


def summarize(guard: _Reporting, *, final: bool, top: int = 10) -> None:
    """The periodic (``final=False``: the last interval) or at-exit (since start) summary:
    log the top offenders by blocked time, write the interval's ``site`` lines."""
    token = allowed_var.set(ALL)
    try:
        table = guard.sites
        rows, since, overflow_count, overflow_total = table.take_interval()
        suppressed = guard.limiter.take_suppressed()
        if guard.json is not None:
            for site, window in rows:
                guard.json.write(site_record(site, window, since))
            guard.json.write(
                {
                    "type": "flush",
                    "final": final,
                    "sites": len(rows),
                    "overflow_count": overflow_count,
                    "overflow_ms": round(overflow_total * 1000, 3),
                    "suppressed": suppressed,
                }
            )
        if not guard.log:
            return
        if final:
            if table.calls():
                text = since_start_text(table, top=top, suppressed=suppressed)
                logger.warning("%s", text)
        elif rows or overflow_count:
            text = summary_text(
                rows,
                title=f"the last {time.time() - since:.0f} s",
                top=top,
                overflow=(overflow_count, overflow_total),
                suppressed=suppressed,
            )
            logger.warning("%s", text)
    except Exception as exc:
        internal_error("the summary", exc)
    finally:
        allowed_var.reset(token)
