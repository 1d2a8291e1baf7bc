"""The site table: every blocking call site (call key + user location) with its counts and cost.

Deduplication for staging: a site is logged the first time it is seen and then only counted;
summaries rank sites by total blocked time.  Memory is bounded: at most ``max_sites`` sites,
each with a log-scale histogram (about 100 buckets at most) and at most ``MAX_LABELS`` request
and view labels; calls at further sites are only added to an overflow counter.
"""

from __future__ import annotations

import _thread
import time
from dataclasses import dataclass, field

from ._histogram import Histogram
from ._violation import Violation

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)

MAX_LABELS = 20
DEFAULT_MAX_SITES = 1000


@dataclass
class Window:
    """A site's activity over one interval (since the previous flush) or since start."""

    count: int = 0
    reported: int = 0
    total: float = 0.0  # seconds
    max: float = 0.0
    histogram: Histogram = field(default_factory=Histogram)
    requests: set[str] = field(default_factory=set)
    requests_truncated: bool = False
    views: set[str] = field(default_factory=set)

    def add(self, violation: Violation, reported: bool) -> None:
        self.count += 1
        if reported:
            self.reported += 1
        duration = violation.duration
        if duration is not None:
            self.total += duration
            if duration > self.max:
                self.max = duration
            self.histogram.add(duration * 1000)
        if violation.request is not None and violation.request not in self.requests:
            if len(self.requests) < MAX_LABELS:
                self.requests.add(violation.request)
            else:
                self.requests_truncated = True
        if violation.view is not None and len(self.views) < MAX_LABELS:
            self.views.add(violation.view)


@dataclass
class Site:
    call: str
    category: str
    where: str
    first: Violation  # the first call seen here: its message, hint and location
    total: Window = field(default_factory=Window)
    interval: Window = field(default_factory=Window)


class SiteTable:
    """Thread-safe (loop threads and the watchdog thread record into it)."""

    def __init__(self, max_sites: int = DEFAULT_MAX_SITES) -> None:
        self.max_sites = max_sites
        self.sites: dict[tuple[str, str], Site] = {}
        self.overflow_count = 0
        self.overflow_total = 0.0
        self.interval_overflow_count = 0
        self.interval_overflow_total = 0.0
        self.started = time.time()
        self.interval_started = self.started
        self._lock = _thread.allocate_lock()  # the C lock: never a guarded wrapper

    def record(self, violation: Violation, *, reported: bool) -> Site | None:
        """Count one call at its site; ``None`` when the table is full (overflow counted)."""
        key = (violation.call, violation.where)
        with self._lock:
            site = self.sites.get(key)
            if site is None:
                if len(self.sites) >= self.max_sites:
                    duration = violation.duration or 0.0
                    self.overflow_count += 1
                    self.overflow_total += duration
                    self.interval_overflow_count += 1
                    self.interval_overflow_total += duration
                    return None
                site = self.sites[key] = Site(
                    violation.call, violation.category, violation.where, violation
                )
            site.total.add(violation, reported)
            site.interval.add(violation, reported)
            return site

    def calls(self) -> int:
        """Every call counted so far, overflow included."""
        with self._lock:
            return self.overflow_count + sum(site.total.count for site in self.sites.values())

    def take_interval(self) -> tuple[list[tuple[Site, Window]], float, int, float]:
        """``([(site, its interval window)], interval start, overflow calls, overflow s)`` for
        the sites active since the previous call, and start a new interval."""
        with self._lock:
            active = []
            for site in self.sites.values():
                if site.interval.count:
                    active.append((site, site.interval))
                    site.interval = Window()
            result = (
                active,
                self.interval_started,
                self.interval_overflow_count,
                self.interval_overflow_total,
            )
            self.interval_started = time.time()
            self.interval_overflow_count = 0
            self.interval_overflow_total = 0.0
            return result

    def totals(self) -> list[tuple[Site, Window]]:
        """Every site with its activity since start."""
        with self._lock:
            return [(site, site.total) for site in self.sites.values()]
