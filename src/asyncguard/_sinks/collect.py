"""The collect sink: every violation, swallowed or not, to the active ``guarded()`` collectors
(and so the pytest plugin's per-test record) and to the ``on_violation`` callbacks."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Protocol

from .._violation import Violation
from ._base import Event, Interval
from .log import internal_error

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)
__asyncguard_work__ = True  # the guard judging or reporting a call (_frames)

Callback = Callable[[Violation], object]

_collectors: list[Collector] = []


class Collector:
    """What ``guarded()`` yields: every violation seen while it is active, swallowed or not."""

    def __init__(self) -> None:
        self.violations: list[Violation] = []
        # set when the guarded() block ends: its allow rules that matched no call in it
        self.unused_rules: list[str] = []

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


class _Settings(Protocol):
    callbacks: tuple[Callback, ...]


class CollectSink:
    name = "collect"

    def violation(self, guard: _Settings, event: Event) -> None:
        violation = event.violation
        for collector in tuple(_collectors):
            collector.violations.append(violation)
        for callback in guard.callbacks:
            try:
                callback(violation)
            except Exception as exc:  # the user's callback: logged once, others still called
                internal_error(f"on_violation callback {callback!r}", exc)

    def summary(self, guard: _Settings, interval: Interval) -> None:
        pass


SINK = CollectSink()
