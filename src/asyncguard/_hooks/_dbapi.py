"""Guarded DB-API objects, shared by the database family (sqlite3) and the psycopg2 client:
a driver's ``connect`` that hands out guarded subclasses of its connection and cursor
classes, whose hooked methods go through the engine on a loop thread."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._judge import on_loop_call
from .._loop import get_running_loop
from .._report import internal_error
from .._spec import Hook, copy_metadata

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)
__asyncguard_work__ = True  # the guard judging or reporting a call (_frames)


def guarded_method(hook: Hook, original: Callable[..., Any]) -> Callable[..., Any]:

    running_loop = get_running_loop
    judged = original

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = __traceback_hide__ = True
        if running_loop() is None:
            return original(self, *args, **kwargs)
        return on_loop_call(hook, judged, (self, *args), kwargs)

    copy_metadata(method, original, hook)
    return method


_guarded: dict[type, type] = {}  # base class -> its guarded subclass


def is_guarded(cls: type) -> bool:
    return "__asyncguard_base__" in vars(cls)


def subclass(base: type, namespace: dict[str, Any]) -> type:
    namespace.update(
        __slots__=(),  # no __dict__ the base does not have: identical behaviour
        __module__=base.__module__,
        __qualname__=base.__qualname__,
        __doc__=base.__doc__,
        __asyncguard_base__=base,
    )
    return type(base.__name__, (base,), namespace)


def cached(base: type, build: Callable[[type], type]) -> type:
    cls = _guarded.get(base)
    if cls is None:
        try:
            built = build(base)
        except Exception as exc:  # an exotic user class (__init_subclass__ with arguments...)
            internal_error(f"guarding {base.__module__}.{base.__qualname__}", exc)
            built = base  # left unguarded, never broken
        # two threads may both build one; setdefault keeps the first for good
        cls = _guarded.setdefault(base, built)
    return cls


def guarded_methods_class(base: type, hooks: dict[str, Hook]) -> type:
    """A guarded subclass of ``base`` whose ``hooks`` methods are wrapped (cached per base);
    shared by the sqlite3 and psycopg2 cursor classes."""
    if is_guarded(base):
        return base

    def build(base: type) -> type:
        namespace = {
            name: guarded_method(hook, getattr(base, name)) for name, hook in hooks.items()
        }
        return subclass(base, namespace)

    return cached(base, build)


def connect_with_factory(
    hook: Hook,
    original: Callable[..., Any],
    guard_factory: Callable[[type, Any, Any], tuple[Any, Any]],
    connection_type: type,
) -> Callable[..., Any]:
    """A driver's ``connect`` that hands out guarded connection subclasses (on or off the
    loop: connections are opened at start-up and used later in async handlers)."""

    running_loop = get_running_loop

    def connect(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = __traceback_hide__ = True
        args, kwargs = guard_factory(connection_type, args, kwargs)
        if running_loop() is None:
            return original(*args, **kwargs)
        return on_loop_call(hook, original, args, kwargs)

    copy_metadata(connect, original, hook)
    return connect
