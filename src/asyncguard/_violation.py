"""What a violation is, and how it is told to the user."""

from __future__ import annotations

import dataclasses
import traceback
from dataclasses import dataclass, field

from . import _frames

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
        """One or two sentences: what was called, where, and the fix."""
        context = self._context()
        if self.category == "stall":
            return self._stall_message(context)
        if self.offloaded:
            verb = (
                f"ran in a worker thread for {(self.duration or 0) * 1000:.1f} ms "
                "(offload mode) instead of blocking the event loop"
            )
        elif self.duration is None:
            verb = "would block the event loop"
        else:
            verb = f"blocked the event loop for {self.duration * 1000:.1f} ms"
        return f"{self.call_expr} {verb} in {self.where}, {context} — {self.hint}"

    def _stall_message(self, context: str) -> str:
        ms = (self.duration or 0.0) * 1000
        if self.ongoing:
            verb = f"the event loop has been blocked for {ms:.0f} ms so far"
        else:
            verb = f"the event loop was blocked for {ms:.0f} ms"
        code = f" at `{self.args}`" if self.args else ""
        sampled = ""
        if self.sample_count:
            others = "".join(f"; {where} {n}" for where, n in self.samples[1:])
            sampled = f" ({self.samples[0][1]} of {self.sample_count} samples{others})"
        return f"{self.call}: {verb} in {self.where}{code}{sampled}, {context} — {self.hint}"

    def _context(self) -> str:
        context = []
        if self.task is not None:
            context.append(f"task {self.task!r}")
        context.append(f"thread {self.thread!r}")
        if self.request is not None:
            context.append(f"request {self.request!r}")
        if self.view is not None:
            context.append(f"view {self.view}")
        return ", ".join(context)

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
