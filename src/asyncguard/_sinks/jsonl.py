"""The JSON-lines sink (schema in docs/json-lines.md): a ``violation`` line for the first call
at each site, ``site`` and ``flush`` lines at each summary, for log aggregators and
``python -m asyncguard report``."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from datetime import datetime, timezone
from typing import Any, Protocol

from .. import _wording
from .._frames import display_path
from .._sites import Site, Window
from .._violation import Violation
from ._base import Event, Interval

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)
__asyncguard_work__ = True  # the guard judging or reporting a call (_frames)

SCHEMA = 1

logger = logging.getLogger("asyncguard")


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
        self.dropped = 0  # lines that could not be written (disk full, unwritable again)
        self._fd: int | None = None
        self._failing = False
        if path != "-":
            try:
                self._fd = self._open()
            except OSError as exc:
                raise ValueError(_wording.json_unopenable(path, exc.strerror)) from None

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def __repr__(self) -> str:
        return f"JsonLines({self.path!r})"

    def write(self, record: dict[str, Any]) -> None:
        """Append one line; never raise.  A line that cannot be written is counted in
        ``dropped`` (the first failure is logged); a file removed meanwhile (logrotate, a
        cleanup) is created again, once said."""
        line = json.dumps(
            {"schema": SCHEMA, **record, "time": _iso(time.time()), "pid": os.getpid()},
            ensure_ascii=False,
            separators=(",", ":"),
        )
        data = (line + "\n").encode("utf-8", "replace")
        if self._fd is None:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
            return
        try:
            if os.fstat(self._fd).st_nlink == 0:  # removed: its lines would reach no one
                fd, self._fd = self._fd, self._open()
                os.close(fd)
                logger.warning("%s", _wording.json_reopened(self.path))
            os.write(self._fd, data)
        except OSError as exc:
            self.dropped += 1
            if not self._failing:
                self._failing = True
                logger.warning("%s", _wording.json_unwritable(self.path, exc.strerror))
        else:
            self._failing = False

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


class _Settings(Protocol):
    mode: str
    json: JsonLines | None


class JsonLinesSink:
    name = "json"

    def violation(self, guard: _Settings, event: Event) -> None:
        if guard.json is not None and event.count == 1:
            record = violation_record(event.violation, count=1, mode=guard.mode)
            guard.json.write(record)

    def summary(self, guard: _Settings, interval: Interval) -> None:
        if guard.json is None:
            return
        for site, window in interval.rows:
            guard.json.write(site_record(site, window, interval.since))
        guard.json.write(
            {
                "type": "flush",
                "final": interval.final,
                "sites": len(interval.rows),
                "overflow_count": interval.overflow_count,
                "overflow_ms": round(interval.overflow_total * 1000, 3),
                "suppressed": interval.suppressed,
                "dropped": guard.json.dropped,
            }
        )
        if interval.final and guard.json.dropped:
            logger.warning("%s", _wording.json_dropped(guard.json.path, guard.json.dropped))


SINK = JsonLinesSink()
