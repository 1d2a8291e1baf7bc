"""The ``Sink`` protocol: where reporting sends each violation and each summary.

``_report`` records a violation in the site table, then hands every sink an :class:`Event`
(the violation, its site, how many calls were reported there so far); at each summary it
hands them the interval's sites.  A sink decides what to keep (every violation, the first at a
site, the log's powers of ten) and reads its own settings from the guard.  A sink's error is
logged once and never reaches the user's call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from .._sites import Site, SiteTable, Window
from .._violation import Violation

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)
__asyncguard_work__ = True  # the guard judging or reporting a call (_frames)


@dataclass(frozen=True)
class Event:
    """One reported violation, as the sinks see it."""

    violation: Violation
    site: Site | None  # its site in the table; None: beyond max_sites (only counted)
    count: int  # calls reported at this site so far, this one included (0: no site)
    raised: bool  # raise mode: the exception is the report


@dataclass(frozen=True)
class Interval:
    """A summary: the sites of the last interval (periodic) or since start (``final``)."""

    rows: list[tuple[Site, Window]]
    since: float
    overflow_count: int
    overflow_total: float
    suppressed: int  # log lines dropped by the rate limit since the last summary
    final: bool
    table: SiteTable
    top: int


class Sink(Protocol):
    """An output of the guard: one module under ``_sinks`` and one entry in ``_report.SINKS``."""

    name: str

    def violation(self, guard: Any, event: Event) -> None: ...

    def summary(self, guard: Any, interval: Interval) -> None: ...
