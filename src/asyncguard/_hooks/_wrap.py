"""The generic wrapper: one C call on the fast path, the rest in ``_judge.on_loop_call``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from .. import _frames
from .._allowed import ALL, allowed_var
from .._judge import on_loop_call
from .._loop import get_running_loop
from .._spec import Hook, copy_metadata

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)
__asyncguard_work__ = True  # the guard judging or reporting a call (_frames)


class _Sealed:
    """A call's arguments out of sight: no named local of ours holds them, and the repr of
    the one that does shows nothing (frame-local capture: Django's error page, Sentry...)."""

    __slots__ = ("args", "kwargs")

    def __init__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.args = args
        self.kwargs = kwargs

    def __repr__(self) -> str:
        return "<arguments hidden by asyncguard>"


def drop_own_frames(exc: BaseException) -> None:
    """Take asyncguard's frames off the front of ``exc``'s traceback (where it was raised or
    passed through our wrapper and engine), so no tool that shows frame locals sees them.
    The caller re-raises it (see ``BARE_RERAISE_KEEPS_TRACEBACK``)."""
    tb = exc.__traceback__
    while tb is not None and _frames.is_internal(tb.tb_frame):
        tb = tb.tb_next
    exc.__traceback__ = tb


# Python 3.11+: a bare ``raise`` re-raises ``exc`` with its (trimmed) traceback and does not add
# the re-raising frame.  3.10: a bare ``raise`` restores the traceback as it was caught, so the
# trimmed one is raised explicitly, which adds the re-raising frame (it holds only a _Sealed).
BARE_RERAISE_KEEPS_TRACEBACK = sys.version_info >= (3, 11)


def is_sensitive(hook: Hook, original: Any) -> bool:
    """Declared (``Hook.sensitive``), or protected by Django's ``sensitive_variables`` /
    ``sensitive_post_parameters`` (its wrapper's code name; any decorator above it keeps
    ``__wrapped__``)."""
    if hook.sensitive:
        return True
    seen = 0
    while original is not None and seen < 10:
        name = getattr(getattr(original, "__code__", None), "co_name", "")
        if name in ("sensitive_variables_wrapper", "sensitive_post_parameters_wrapper"):
            return True
        original, seen = getattr(original, "__wrapped__", None), seen + 1
    return False


def sealed(hook: Hook, original: Any, inner: Callable[..., Any]) -> Callable[..., Any]:
    """The patched attribute for a sensitive hook: ``inner`` (the hook's own wrapper) called
    with arguments no frame of ours names, and our frames dropped from any exception, so
    Django's ``sensitive_variables`` protection of ``authenticate(**credentials)`` and the
    secrecy of a password or DSN hold with the guard installed (a few hundred ns more, on
    calls that hash a password or open a connection)."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = __traceback_hide__ = True
        call = _Sealed(args, kwargs)
        del args, kwargs
        try:
            return inner(*call.args, **call.kwargs)
        except BaseException as exc:
            drop_own_frames(exc)
            if BARE_RERAISE_KEEPS_TRACEBACK:
                raise
            raise exc  # see BARE_RERAISE_KEEPS_TRACEBACK

    copy_metadata(wrapper, original, hook)
    return wrapper


def function_wrapper(hook: Hook, original: Callable[..., Any]) -> Callable[..., Any]:
    running_loop = get_running_loop
    allowed = allowed_var.get

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = __traceback_hide__ = True
        if running_loop() is None or allowed() is ALL:
            return original(*args, **kwargs)
        return on_loop_call(hook, original, args, kwargs)

    copy_metadata(wrapper, original, hook)
    return wrapper


def build(hook: Hook, original: Any) -> Any:
    """The wrapper patched in for ``hook``: its own factory's (or the generic one), sealed
    when the hook is sensitive."""
    factory = hook.factory or function_wrapper
    wrapper = factory(hook, original)
    if callable(wrapper) and is_sensitive(hook, original):
        wrapper = sealed(hook, original, wrapper)
    return wrapper
