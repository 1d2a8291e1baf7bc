"""The generic wrapper: one C call on the fast path, the rest in ``_guard.on_loop_call``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from .._allow import ALL, allowed_var
from .._loop import get_running_loop
from ._spec import Hook

_WRAPPER_ASSIGNMENTS = ("__module__", "__name__", "__qualname__", "__doc__")


def copy_metadata(wrapper: Any, original: Any, hook: Hook) -> None:
    for name in _WRAPPER_ASSIGNMENTS:
        with contextlib.suppress(AttributeError, TypeError):
            setattr(wrapper, name, getattr(original, name))
    wrapper.__wrapped__ = original
    wrapper.__asyncguard_hook__ = hook


def function_wrapper(hook: Hook, original: Callable[..., Any]) -> Callable[..., Any]:
    from .._guard import on_loop_call

    running_loop = get_running_loop
    allowed = allowed_var.get

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        if running_loop() is None or allowed() is ALL:
            return original(*args, **kwargs)
        return on_loop_call(hook, original, args, kwargs)

    copy_metadata(wrapper, original, hook)
    return wrapper
