"""The error raised in raise mode where Django itself refuses a call on the event loop.

Imported only once Django has raised ``SynchronousOnlyOperation`` on a loop thread, so Django is
imported already.  The error is both our ``BlockingCallError`` (the violation, our message) and
Django's ``SynchronousOnlyOperation``: code that catches either keeps working.
"""

from __future__ import annotations

from django.core.exceptions import SynchronousOnlyOperation

from .._violation import BlockingCallError, Violation


class SynchronousOnlyBlockingCallError(BlockingCallError, SynchronousOnlyOperation):
    """Django refused a sync-only call on an event loop thread (raise mode)."""

    def __init__(self, violation: Violation) -> None:
        Exception.__init__(self, violation.message())  # not Django's (patched) __init__
        self.violation = violation
