"""The error raised in raise mode where Django itself refuses a call on the event loop.

Django raises ``SynchronousOnlyOperation`` ("You cannot call this from an async context - use a
thread or sync_to_async.") from every ``@async_unsafe`` callable on a loop thread: the ORM's
connection, cursors and transactions, so every query.  asyncguard judges those calls first (it
names the query, the line and the fix); the error it raises there is both its own
``BlockingCallError`` and Django's ``SynchronousOnlyOperation``, with Django's sentence first,
so code and tests that catch either keep working.  ``DJANGO_ALLOW_ASYNC_UNSAFE`` turns Django's
protection off, and with it the Django class: the error is then a plain ``BlockingCallError``.

The class derives from Django's, so it is made on first use (the hooks that need it are applied
only once Django is imported; importing asyncguard never imports Django) and found by name
through the module's ``__getattr__``, which is how pickle finds it too.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from .. import _wording
from .._violation import BlockingCallError, Violation

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)
__asyncguard_work__ = True  # the guard judging or reporting a call (_frames)

# django.utils.asyncio.async_unsafe's message (the same in Django 4.2 to 6.x)
DJANGO_SENTENCE = _wording.DJANGO_ASYNC_UNSAFE
CLASS_NAME = "SynchronousOnlyBlockingCallError"

_made: list[type[BlockingCallError]] = []


def _error_class() -> type[BlockingCallError]:
    if not _made:
        from django.core.exceptions import SynchronousOnlyOperation

        class SynchronousOnlyBlockingCallError(BlockingCallError, SynchronousOnlyOperation):
            """Django refuses this call on an event loop thread (raise mode)."""

            def __init__(self, violation: Violation, django_text: str = DJANGO_SENTENCE) -> None:
                # not Django's (patched) __init__: its hook would report the refusal again
                Exception.__init__(self, f"{django_text} {violation.message()}")
                self.violation = violation
                self.django_text = django_text

            def __reduce__(self) -> tuple[object, ...]:
                return (type(self), (self.violation, self.django_text))

        SynchronousOnlyBlockingCallError.__module__ = __name__
        SynchronousOnlyBlockingCallError.__qualname__ = CLASS_NAME
        _made.append(SynchronousOnlyBlockingCallError)
    return _made[0]


def __getattr__(name: str) -> Any:
    if name == CLASS_NAME:
        return _error_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def refused_by_django(exc: BaseException) -> str | None:
    """``"Django"`` when ``exc`` is Django's ``SynchronousOnlyOperation``: the call never ran."""
    exceptions = sys.modules.get("django.core.exceptions")
    refused = getattr(exceptions, "SynchronousOnlyOperation", None)
    if isinstance(refused, type) and isinstance(exc, refused):
        return "Django"
    return None


def refusal(violation: Violation, django_text: str = DJANGO_SENTENCE) -> BlockingCallError:
    """Raise mode's error for a call Django refuses on the loop (see the module docs)."""
    if os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE"):
        return BlockingCallError(violation)
    return _error_class()(violation, django_text)  # type: ignore[call-arg]
