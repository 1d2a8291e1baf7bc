"""Special wrappers for the network family: socket methods, selectors and ``select.poll``.

Each keeps the hot-path shape of the generic wrapper (one C call to ask "does this thread run a
loop?") and adds the one check that makes the common on-loop call cheap:

- socket methods: a socket with timeout 0.0 (every socket asyncio and uvloop drive) is never
  blocking, so it calls straight through without reaching the slow path;
- selector ``select``: the running asyncio loop waits in its *own* selector on every iteration,
  which is the loop working, not a blocking call; it is recognised by identity before anything
  else, and that selector then gets the original ``select`` bound on the instance;
- ``select.poll()`` returns C objects whose methods cannot be patched, so the factory is wrapped
  to return a small proxy whose ``poll`` is guarded and whose other methods *are* the real
  object's bound methods.
"""

from __future__ import annotations

import _socket
import contextlib
from collections.abc import Callable
from types import MethodType
from typing import Any

from .._judge import on_loop_call
from .._loop import get_running_loop
from .._spec import Hook, copy_metadata

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)
__asyncguard_work__ = True  # the guard judging or reporting a call (_frames)

_gettimeout = _socket.socket.gettimeout


def socket_method(hook: Hook, original: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a method of ``socket.socket`` / ``ssl.SSLSocket``; non-blocking sockets skip it all."""

    running_loop = get_running_loop
    gettimeout = _gettimeout

    # The timeout is checked first: asyncio's transports call send/recv on non-blocking
    # sockets for every read and write, and on 3.10/3.11 the loop check costs a getpid().
    if hook.attr.endswith((".send", ".recv")) and not hook.attr.startswith("SSL"):
        missing = object()

        # a fixed signature lets the interpreter specialise the call (-600 ns on 3.11)
        def fixed(self: Any, first: Any, flags: Any = missing, /) -> Any:
            __tracebackhide__ = __traceback_hide__ = True
            if gettimeout(self) == 0.0 or running_loop() is None:
                if flags is missing:
                    return original(self, first)
                return original(self, first, flags)
            args = (self, first) if flags is missing else (self, first, flags)
            return on_loop_call(hook, original, args, {})

        copy_metadata(fixed, original, hook)
        return fixed

    def wrapper(self: Any, /, *args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = __traceback_hide__ = True
        if gettimeout(self) == 0.0 or running_loop() is None:
            return original(self, *args, **kwargs)
        return on_loop_call(hook, original, (self, *args), kwargs)

    copy_metadata(wrapper, original, hook)
    return wrapper


def selector_method(hook: Hook, original: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``selectors.*Selector.select``; the running loop's own selector is never flagged."""

    running_loop = get_running_loop

    # every selector's signature is select(self, timeout=None); spelling it out (no *args)
    # keeps this call specialisable: +60 ns per loop iteration instead of +300 ns
    def wrapper(self: Any, timeout: float | None = None) -> Any:
        __tracebackhide__ = __traceback_hide__ = True
        loop = running_loop()
        if loop is None:
            return original(self, timeout)
        # asyncio's BaseSelectorEventLoop waits in ``self._selector.select(timeout)`` on every
        # iteration: recognised by identity (uvloop has no _selector), and from then on that
        # selector's ``select`` is the original, bound on the instance, so the loop's next
        # iterations do not come here at all.  Harmless after uninstall: it is the original.
        if getattr(loop, "_selector", None) is self:
            with contextlib.suppress(AttributeError, TypeError):  # no __dict__: stay wrapped
                vars(self)["select"] = MethodType(original, self)
            return original(self, timeout)
        return on_loop_call(hook, original, (self, timeout), {})

    copy_metadata(wrapper, original, hook)
    return wrapper


def poll_factory(hook: Hook, original: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap the ``select.poll`` factory: its objects' ``poll(timeout)`` is guarded.

    ``register``/``modify``/``unregister`` are the real object's bound methods (same cost, same
    errors); ``poll`` takes the same positional-only arguments.  The only visible difference
    is ``type(select.poll())``, which no code can name (``select.poll`` is a function).
    ``selectors.PollSelector`` bound the original factory at import and is guarded by its own
    hook instead.
    """

    running_loop = get_running_loop

    class poll:  # noqa: N801 - reads like the original type in reprs: <select.poll object ...>
        __slots__ = ("_poll", "modify", "register", "unregister")

        def __init__(self, real: Any) -> None:
            self._poll = real
            self.register = real.register
            self.modify = real.modify
            self.unregister = real.unregister

        def poll(self, *args: Any) -> Any:
            __tracebackhide__ = __traceback_hide__ = True
            real_poll = self._poll.poll
            if running_loop() is None:
                return real_poll(*args)
            return on_loop_call(hook, real_poll, args, {})

    poll.__module__ = "select"
    poll.__qualname__ = "poll"

    def make_poll(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = __traceback_hide__ = True
        return poll(original(*args, **kwargs))

    copy_metadata(make_poll, original, hook)
    return make_poll


def keyed_by(choose: Callable[[Any, Any], Hook]) -> Callable[[Hook, Any], Callable[..., Any]]:
    """A factory whose wrapper reports under the hook ``choose(args, kwargs)`` picks.

    For helpers made of several blocking steps (``socket.create_connection``): the violation
    names the first step that would block, yet is raised at the helper's entry, before it
    creates a socket that the error would leak, and warn mode times the helper once.
    """

    def factory(hook: Hook, original: Callable[..., Any]) -> Callable[..., Any]:

        running_loop = get_running_loop

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            __tracebackhide__ = __traceback_hide__ = True
            if running_loop() is None:
                return original(*args, **kwargs)
            return on_loop_call(choose(args, kwargs), original, args, kwargs)

        copy_metadata(wrapper, original, hook)
        return wrapper

    return factory
