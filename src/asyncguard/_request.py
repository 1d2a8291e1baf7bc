"""The request a violation belongs to: set by the ASGI middleware for HTTP and WebSocket scopes.

A contextvar, so it follows the request's task and the tasks it creates, and asgiref carries
it into ``sync_to_async`` threads.  Only the method and path are kept: never the query string,
headers or body.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import FrameType

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)


@dataclass
class RequestInfo:
    """One request in flight, with its blocking budget: how many calls, how long they blocked."""

    method: str
    path: str
    resolve_view: Callable[[str], str | None] | None = field(default=None, repr=False)
    calls: int = 0
    blocked: float = 0.0
    _view: str | None = field(default=None, repr=False)
    _view_resolved: bool = field(default=False, repr=False)

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}" if self.method else self.path

    @property
    def view(self) -> str | None:
        """The view's dotted name, resolved once, lazily (only when a violation needs it)."""
        if not self._view_resolved:
            self._view_resolved = True
            if self.resolve_view is not None:
                try:
                    self._view = self.resolve_view(self.path)
                except Exception:
                    self._view = None
        return self._view

    def add(self, duration: float | None) -> None:
        self.calls += 1
        if duration:
            self.blocked += duration


request_var: ContextVar[RequestInfo | None] = ContextVar("asyncguard_request", default=None)


# the middleware's frame of each request in flight -> its request: the stall watchdog finds
# the request a stalled loop was serving by looking for one of these frames in the stack
inflight: dict[FrameType, RequestInfo] = {}


def current() -> RequestInfo | None:
    return request_var.get()
