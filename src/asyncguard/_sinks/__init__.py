"""The sinks: where violations and summaries go (``_base.Sink``), one module each — ``collect``
(``guarded()`` collectors, ``on_violation`` callbacks), ``log`` (the ``asyncguard`` logger) and
``jsonl`` (JSON lines).  Adding a sink: one module here and one entry in ``_report.SINKS``."""

from __future__ import annotations

from ._base import Event, Interval, Sink
from .collect import Callback, Collector
from .jsonl import JsonLines, site_record, violation_record
from .log import RateLimiter, since_start_text, summary_text

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)

__all__ = [
    "Callback",
    "Collector",
    "Event",
    "Interval",
    "JsonLines",
    "RateLimiter",
    "Sink",
    "since_start_text",
    "site_record",
    "summary_text",
    "violation_record",
]
