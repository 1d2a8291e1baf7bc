"""The log sink: the ``asyncguard`` logger.  A site is logged in full the first time, then one
line with its totals when its count reaches 10, 100, 1000... (log volume grows with log10 of
traffic), within a rate limit; summaries of the top offenders; the guard's own errors, once.
"""

from __future__ import annotations

import _thread
import logging
import sys
import time
from typing import Protocol

from .. import _wording
from .._allowed import ALL, allowed_var
from .._sites import Site, SiteTable, Window
from ._base import Event, Interval

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)
__asyncguard_work__ = True  # the guard judging or reporting a call (_frames)

logger = logging.getLogger("asyncguard")
# summaries as text (Guard.summary()) start with it; on the logger, its name says it
PREFIX = "asyncguard: "


class FallbackHandler(logging.Handler):
    """What prints the guard's warnings while the program configured no logging: Python's
    last resort would print the bare message; this prints ``WARNING asyncguard: <message>``, as
    the README shows.  Once any handler is on the root logger (``basicConfig``, Django's
    ``LOGGING``), or on ``asyncguard`` itself, it stands aside: nothing is printed twice."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        if logging.getLogger().handlers or len(logger.handlers) > 1:
            return
        try:
            message = record.getMessage()
            if not message.startswith(f"{logger.name}:"):
                message = f"{logger.name}: {message}"
            text = f"{record.levelname} {message}"
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            sys.stderr.write(text + "\n")
            sys.stderr.flush()
        except Exception:  # pragma: no cover - stderr closed
            self.handleError(record)


_fallback = FallbackHandler()


def add_fallback_handler() -> None:
    """Give the ``asyncguard`` logger the fallback handler (once; idempotent)."""
    if _fallback not in logger.handlers:
        logger.addHandler(_fallback)


# a site is logged in full the first time, then again (one line, with its totals) when its
# count of reported calls reaches 10, 100, 1000, ...
LOGGED_COUNTS = frozenset(10**n for n in range(19))

_reported_errors: set[tuple[str, str]] = set()


def internal_error(where: str, exc: BaseException) -> None:
    """Log an error of the guard itself once per place and kind; never raise."""
    key = (where, type(exc).__name__)
    if key in _reported_errors:
        return
    _reported_errors.add(key)
    token = allowed_var.set(ALL)
    try:
        logger.error(
            _wording.INTERNAL_ERROR,
            where,
            type(exc).__name__,
            exc,
            exc_info=exc,
        )
    except Exception:  # pragma: no cover - a broken logging setup
        pass
    finally:
        allowed_var.reset(token)


class RateLimiter:
    """A token bucket: at most ``per_minute`` log lines a minute (0: no limit), bursts too."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self.tokens = float(per_minute)
        self.updated = time.monotonic()
        self.suppressed = 0  # since the last summary
        self._lock = _thread.allocate_lock()

    def take(self) -> bool:
        if not self.per_minute:
            return True
        with self._lock:
            now = time.monotonic()
            self.tokens = min(
                float(self.per_minute), self.tokens + (now - self.updated) * self.per_minute / 60
            )
            self.updated = now
            if self.tokens >= 1:
                self.tokens -= 1
                return True
            self.suppressed += 1
            return False

    def take_suppressed(self) -> int:
        with self._lock:
            count, self.suppressed = self.suppressed, 0
            return count


def _repeat_text(site: Site, count: int) -> str:
    window = site.total
    return _wording.repeat(
        site.call,
        site.where,
        count,
        window.total,
        window.max,
        site.first.hint,
        site.first.offloaded,
    )


def summary_text(
    rows: list[tuple[Site, Window]],
    *,
    title: str,
    top: int,
    overflow: tuple[int, float],
    suppressed: int,
) -> str:
    """A few lines for the log: the top sites by blocked time, then what was left out."""
    rows = sorted(rows, key=lambda row: (row[1].total, row[1].count), reverse=True)
    calls = sum(window.count for _, window in rows)
    lines = [_wording.summary_head(title, calls, len(rows))]
    for rank, (site, window) in enumerate(rows[:top], 1):
        p95 = window.histogram.percentile(0.95, at_most=window.max * 1000)
        lines.append(
            _wording.summary_row(
                rank,
                site.call,
                site.where,
                window.count,
                window.total,
                p95,
                window.max,
                len(window.requests),
                window.requests_truncated,
            )
        )
    lines += _wording.summary_tail(max(0, len(rows) - top), overflow, suppressed)
    return "\n".join(lines)


def since_start_text(table: SiteTable, *, top: int, suppressed: int) -> str:
    """The summary of every site since start (``Guard.summary()``, the final summary)."""
    return summary_text(
        table.totals(),
        title=_wording.SUMMARY_SINCE_START,
        top=top,
        overflow=(table.overflow_count, table.overflow_total),
        suppressed=suppressed,
    )


class _Settings(Protocol):
    log: bool
    limiter: RateLimiter


class LogSink:
    name = "log"

    def violation(self, guard: _Settings, event: Event) -> None:
        if event.count not in LOGGED_COUNTS or event.site is None:
            return  # a known site: counted, summarized later
        if guard.log and guard.limiter.take():
            # raise mode: the exception is the report; the log line (DEBUG) is for swallowed ones
            level = logging.DEBUG if event.raised else logging.WARNING
            violation = event.violation
            text = (
                violation.message() if event.count == 1 else _repeat_text(event.site, event.count)
            )
            logger.log(level, "%s", text, extra={"asyncguard_violation": violation})

    def summary(self, guard: _Settings, interval: Interval) -> None:
        if not guard.log:
            return
        table = interval.table
        if interval.final:
            if table.calls():
                text = since_start_text(table, top=interval.top, suppressed=interval.suppressed)
                logger.warning("%s", text.removeprefix(PREFIX))
        elif interval.rows or interval.overflow_count:
            text = summary_text(
                interval.rows,
                title=_wording.summary_window(time.time() - interval.since),
                top=interval.top,
                overflow=(interval.overflow_count, interval.overflow_total),
                suppressed=interval.suppressed,
            )
            logger.warning("%s", text.removeprefix(PREFIX))


SINK = LogSink()
