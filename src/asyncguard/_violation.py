"""What a violation is, and how it is told to the user."""

from __future__ import annotations

import dataclasses
import traceback
from dataclasses import dataclass, field

from . import _frames


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

    @property
    def call_expr(self) -> str:
        """The call as the user wrote it, arguments abridged: ``time.sleep(0.5)``."""
        return f"{self.call}({self.args})"

    @property
    def where(self) -> str:
        filename, lineno, function = self.location
        return f"{_frames.display_path(filename)}:{lineno} ({function})"

    def message(self) -> str:
        """One or two sentences: what was called, where, and the fix."""
        if self.duration is None:
            verb = "would block the event loop"
        else:
            verb = f"blocked the event loop for {self.duration * 1000:.1f} ms"
        context = []
        if self.task is not None:
            context.append(f"task {self.task!r}")
        context.append(f"thread {self.thread!r}")
        if self.request is not None:
            context.append(f"request {self.request!r}")
        if self.view is not None:
            context.append(f"view {self.view}")
        return f"{self.call_expr} {verb} in {self.where}, {', '.join(context)} — {self.hint}"

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
