"""What a violation is, and how it is told to the user."""

from __future__ import annotations

import dataclasses
import traceback
from dataclasses import dataclass, field

from . import _frames, _wording

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)


@dataclass(frozen=True)
class Violation:
    """One blocking call (or stall) seen on a thread that runs an event loop.

    ``call`` is the key users write in allow rules (``"time.sleep"``,
    ``"socket.socket.connect"``); ``location`` is ``(filename, lineno, function)`` of the first
    frame in user code; ``duration`` is how long the call blocked in seconds (``None`` when it
    never ran, e.g. raise mode); ``request`` is ``"GET /path"`` when a middleware knows it.
    """

    call: str
    category: str
    location: tuple[str, int, str]
    stack: traceback.StackSummary = field(repr=False, compare=False)
    duration: float | None
    thread: str
    task: str | None
    request: str | None
    hint: str
    args: str = ""
    view: str | None = None
    # stalls found by the watchdog: the sampled locations ``(where, hits)``, most hits first
    samples: tuple[tuple[str, int], ...] = field(default=(), compare=False)
    sample_count: int = field(default=0, compare=False)
    ongoing: bool = field(default=False, compare=False)
    offloaded: bool = field(default=False, compare=False)  # offload mode ran it in a thread
    refused_by: str | None = field(default=None, compare=False)  # e.g. "Django": it never ran

    @property
    def call_expr(self) -> str:
        """The call as the user wrote it, arguments abridged: ``time.sleep(0.5)``."""
        return f"{self.call}({self.args})"

    @property
    def where(self) -> str:
        return self.describe(self.location)

    @staticmethod
    def describe(location: tuple[str, int, str]) -> str:
        filename, lineno, function = location
        return f"{_frames.display_path(filename)}:{lineno} ({function})"

    def message(self) -> str:
        """One or two sentences: what was called, where, and the fix (see ``_wording``)."""
        context = _wording.context(self.task, self.thread, self.request, self.view)
        if self.category == "stall":
            return _wording.stall(
                self.duration or 0.0,
                ongoing=self.ongoing,
                where=self.where,
                code=self.args,
                samples=list(self.samples),
                sample_count=self.sample_count,
                context=context,
                hint=self.hint,
            )
        verb = _wording.call_verb(
            self.duration, offloaded=self.offloaded, refused_by=self.refused_by
        )
        return _wording.violation(self.call_expr, verb, self.where, context, self.hint)

    __str__ = message

    def with_duration(self, duration: float | None) -> Violation:
        return dataclasses.replace(self, duration=duration)


class BlockingCallError(Exception):
    """Raised at the call site, before the blocking work starts, in ``raise`` mode."""

    violation: Violation

    def __init__(self, violation: Violation) -> None:
        super().__init__(violation.message())
        self.violation = violation

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.violation,))
