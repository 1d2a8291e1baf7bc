"""Outputs for staging: the JSON-lines file (schema in docs/json-lines.md), the log rate limit,
and the summary of top offenders.

Everything here runs with blocking allowed (called from ``_report``), on a loop thread for the
first call at a site and on the watchdog thread or at exit for summaries.
"""

from __future__ import annotations

import _thread
import json
import os
import sys
import time
from datetime import datetime, timezone
from typing import Any

from ._frames import display_path
from ._sites import Site, SiteTable, Window
from ._violation import Violation

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)
__asyncguard_work__ = True  # the guard judging or reporting a call (_frames)

SCHEMA = 1


def _iso(timestamp: float) -> str:
    moment = datetime.fromtimestamp(timestamp, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


class JsonLines:
    """Appends JSON objects, one per line, each with a single ``write()`` (``O_APPEND``), so
    several worker processes can share one file.  ``"-"`` means standard error."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None
        if path != "-":
            try:
                self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            except OSError as exc:
                raise ValueError(
                    f"cannot open the asyncguard JSON-lines file {path!r}: {exc.strerror}"
                ) from None

    def __repr__(self) -> str:
        return f"JsonLines({self.path!r})"

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(
            {"schema": SCHEMA, **record, "time": _iso(time.time()), "pid": os.getpid()},
            ensure_ascii=False,
            separators=(",", ":"),
        )
        data = (line + "\n").encode("utf-8", "replace")
        if self._fd is None:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        else:
            os.write(self._fd, data)

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def violation_record(violation: Violation, *, count: int, mode: str) -> dict[str, Any]:
    filename, lineno, function = violation.location
    return {
        "type": "violation",
        "call": violation.call,
        "category": violation.category,
        "location": f"{display_path(filename)}:{lineno}",
        "function": function,
        "duration_ms": _ms(violation.duration),
        "count": count,
        "request": violation.request,
        "view": violation.view,
        "task": violation.task,
        "thread": violation.thread,
        "hint": violation.hint,
        "args": violation.args,
        "mode": mode,
        "offloaded": violation.offloaded,
        "message": violation.message(),
    }


def site_record(site: Site, window: Window, since: float) -> dict[str, Any]:
    location, _, _ = site.where.rpartition(" (")
    return {
        "type": "site",
        "call": site.call,
        "category": site.category,
        "location": location,
        "function": site.first.location[2],
        "count": window.count,
        "reported": window.reported,
        "total_ms": _ms(window.total),
        "max_ms": _ms(window.max),
        "p95_ms": window.histogram.percentile(0.95, at_most=_ms(window.max)),
        "histogram": window.histogram.pairs(),
        "requests": sorted(window.requests),
        "requests_truncated": window.requests_truncated,
        "views": sorted(window.views),
        "since": _iso(since),
    }


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


def _seconds(value: float) -> str:
    return f"{value:.2f} s" if value >= 1 else f"{value * 1000:.1f} ms"


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
    lines = [f"asyncguard: {title}: {calls} blocking calls at {len(rows)} sites; top by time:"]
    for rank, (site, window) in enumerate(rows[:top], 1):
        p95 = window.histogram.percentile(0.95, at_most=window.max * 1000)
        timing = f"{_seconds(window.total)} total"
        if p95 is not None:
            timing += f", p95 {p95:.1f} ms, max {window.max * 1000:.1f} ms"
        requests = len(window.requests)
        affected = f", {requests}{'+' if window.requests_truncated else ''} requests" * bool(
            requests
        )
        lines.append(
            f"  {rank}. {site.call} at {site.where}: {window.count} calls, {timing}{affected}"
        )
    if len(rows) > top:
        lines.append(f"  … and {len(rows) - top} more sites")
    if overflow[0]:
        lines.append(
            f"  + {overflow[0]} calls ({_seconds(overflow[1])}) at sites beyond the "
            "max_sites table limit"
        )
    if suppressed:
        lines.append(f"  ({suppressed} log lines were dropped by the rate limit)")
    return "\n".join(lines)


def since_start_text(table: SiteTable, *, top: int, suppressed: int) -> str:
    """The summary of every site since start (``Guard.summary()``, the final summary)."""
    return summary_text(
        table.totals(),
        title="summary since start",
        top=top,
        overflow=(table.overflow_count, table.overflow_total),
        suppressed=suppressed,
    )
