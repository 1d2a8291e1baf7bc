"""Offload mode: a blocking call found on the loop runs in a worker thread while the loop goes on.

A call in the middle of a coroutine can only be suspended if the coroutine runs inside a
greenlet (the pattern of SQLAlchemy's asyncio layer).  :func:`offloading` drives a coroutine
step by step in a child greenlet whose ``gr_context`` is the task's context; the driver, an
ordinary awaitable in the task, passes every future the coroutine awaits on to the task.  When
a hook finds a blocking call and the current greenlet descends from such a child, it switches
to the driver with the call; the driver awaits ``sync_to_async(call)`` — the loop serves other
tasks meanwhile — and switches back with the result or the exception, which the call site sees
as if the call had run inline.  Cancelling the task while the call is offloaded raises
``CancelledError`` at the call site.  Outside a driven coroutine (a bare callback, a task the
driver did not create) there is nothing to suspend: the call runs inline, timed and reported,
as in warn mode.

``greenlet`` is an optional dependency: ``pip install 'asyncguard[offload]'``.
"""

from __future__ import annotations

import _thread
import asyncio
import concurrent.futures
import contextvars
import functools
import inspect
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, TypeVar, cast

T = TypeVar("T")

_YIELD, _OFFLOAD, _DONE, _ERROR = "yield", "offload", "done", "error"
_SEND, _THROW, _RETURN, _RAISE = "send", "throw", "return", "raise"

DEFAULT_THREADS = 40  # a pool sized for waiting, not for CPU (anyio's default is 40 too)


def _greenlet() -> Any:
    try:
        import greenlet
    except ImportError:
        raise RuntimeError(
            "asyncguard's offload mode needs the greenlet package: "
            "pip install 'asyncguard[offload]' (or pip install greenlet)"
        ) from None
    return greenlet


def available() -> bool:
    try:
        import greenlet  # noqa: F401
    except ImportError:
        return False
    return True


_child_class: type | None = None


def _child_type() -> type:
    """The greenlet subclass that runs a driven coroutine (created when first needed, so
    importing asyncguard never imports greenlet)."""
    global _child_class
    if _child_class is None:
        greenlet = _greenlet().greenlet

        class DrivenCoroutine(greenlet):  # type: ignore[misc, valid-type]
            """Runs one coroutine's steps; its parent greenlet is the driver."""

        _child_class = DrivenCoroutine
    return _child_class


def _steps(coro: Coroutine[Any, Any, Any]) -> tuple[str, Any]:
    """The child greenlet's body: step the coroutine, hand each yielded future to the driver."""
    driver = _greenlet().getcurrent().parent
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            yielded = coro.throw(error) if error is not None else coro.send(value)
        except StopIteration as stop:
            return (_DONE, stop.value)
        except BaseException as exc:
            return (_ERROR, exc)
        kind, payload = driver.switch((_YIELD, yielded))
        if kind == _SEND:
            value, error = payload, None
        else:
            value, error = None, payload


class _Driver:
    """``await offloading(coro)``: drives ``coro`` in a child greenlet (see the module doc)."""

    __slots__ = ("_coro",)

    def __init__(self, coro: Awaitable[Any]) -> None:
        self._coro = coro

    def __await__(self) -> Generator[Any, Any, Any]:
        greenlet = _greenlet()
        coro = self._coro
        driver = greenlet.getcurrent()
        child = _child_type()(_steps, driver)
        child.gr_context = driver.gr_context  # contextvars: the task's, shared both ways
        message = child.switch(coro)
        while True:
            kind = message[0]
            if kind == _YIELD:
                try:
                    sent = yield message[1]  # the task awaits what the coroutine awaited
                except BaseException as exc:  # thrown in by the task: cancellation, close()
                    message = child.switch((_THROW, exc))
                else:
                    message = child.switch((_SEND, sent))
            elif kind == _OFFLOAD:
                origin, call, thread_sensitive, pool = message[1:]
                try:
                    result = yield from _in_thread(call, thread_sensitive, pool).__await__()
                except BaseException as exc:  # the call's own error, or the task cancelled
                    message = origin.switch((_RAISE, exc))
                else:
                    message = origin.switch((_RETURN, result))
            elif kind == _DONE:
                return message[1]
            else:  # _ERROR
                raise message[1]


def _in_thread(
    call: Callable[[], Any],
    thread_sensitive: bool,
    pool: concurrent.futures.ThreadPoolExecutor | None,
) -> Awaitable[Any]:
    from asgiref.sync import sync_to_async

    if thread_sensitive:
        return sync_to_async(call, thread_sensitive=True)()
    return sync_to_async(call, thread_sensitive=False, executor=pool)()


def offloading(coro: Awaitable[T]) -> Coroutine[Any, Any, T]:
    """Run a coroutine so that, in ``mode="offload"``, each blocking call in it goes to a worker
    thread while the loop goes on: ``await asyncguard.offloading(handler(request))``, or
    ``asyncio.create_task(asyncguard.offloading(job()))``."""
    if not isinstance(coro, Coroutine):
        if not inspect.isawaitable(coro):
            raise TypeError(f"offloading() takes a coroutine or awaitable, got {coro!r}")
        coro = _await(coro)
    _greenlet()  # a clear error now rather than at the first blocking call
    return _drive(coro)


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


# set in a driven coroutine's context: the tasks it creates are driven too (Django's handler
# runs each view in a task of its own), through a task factory on the loop
_driving: contextvars.ContextVar[bool] = contextvars.ContextVar("asyncguard_driving", default=False)
_factories: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
    weakref.WeakKeyDictionary()
)  # loop -> the task factory it had before ours


async def _drive(coro: Awaitable[T]) -> T:
    _adopt(asyncio.get_running_loop())
    token = _driving.set(True)
    try:
        return cast(T, await _Driver(coro))
    finally:
        _driving.reset(token)


def _task_factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Future[Any]:
    """Drive the coroutine of a task created from a driven coroutine; otherwise the factory
    the loop had (or a plain Task)."""
    if _driving.get() and asyncio.iscoroutine(coro) and _worth_driving(coro):
        coro = _drive(coro)
    previous = _factories.get(loop)
    if previous is not None:
        return cast("asyncio.Future[Any]", previous(loop, coro, **kwargs))
    return asyncio.Task(coro, loop=loop, **kwargs)


# coroutines that only await (asgiref's executor waits, asyncio's helpers, Django's wait for a
# client disconnect): driving them would only cost a greenlet per task
_NOT_DRIVEN_MODULES = ("asgiref.", "asyncio.")
_NOT_DRIVEN_NAMES = frozenset({"ASGIHandler.listen_for_disconnect"})


def _worth_driving(coro: Any) -> bool:
    frame = getattr(coro, "cr_frame", None)
    if frame is None:
        return True
    module = frame.f_globals.get("__name__", "")
    if isinstance(module, str) and module.startswith(_NOT_DRIVEN_MODULES):
        return False
    return getattr(coro, "__qualname__", "") not in _NOT_DRIVEN_NAMES


def _adopt(loop: asyncio.AbstractEventLoop) -> None:
    current = loop.get_task_factory()
    if current is _task_factory:
        return
    _factories[loop] = current
    loop.set_task_factory(_task_factory)


def release_loops() -> None:
    """Give every loop its own task factory back (``uninstall()``)."""
    for loop, previous in list(_factories.items()):
        if not loop.is_closed() and loop.get_task_factory() is _task_factory:
            loop.set_task_factory(previous)
    _factories.clear()


F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def offloaded(func: F) -> F:
    """Decorator for async functions: every call runs under :func:`offloading`."""
    if not inspect.iscoroutinefunction(func):
        raise TypeError(f"@offloaded decorates async functions, not {func!r}")

    @functools.wraps(func)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        return await _Driver(func(*args, **kwargs))

    return cast(F, wrapper)


def driven() -> Any | None:
    """The child greenlet of the nearest driver above the current greenlet, or ``None``
    (also when greenlet is not installed)."""
    child_type = _child_class
    if child_type is None:
        return None
    import greenlet

    current = greenlet.getcurrent()
    node = current
    while node is not None:
        if isinstance(node, child_type):
            return node
        node = node.parent
    return None


def run_offloaded(
    child: Any,
    call: Callable[[], Any],
    thread_sensitive: bool,
    pool: concurrent.futures.ThreadPoolExecutor | None,
) -> Any:
    """Suspend the driven coroutine at this call site until ``call`` ran in a worker thread."""
    import greenlet

    origin = greenlet.getcurrent()
    kind, payload = child.parent.switch((_OFFLOAD, origin, call, thread_sensitive, pool))
    if kind == _RAISE:
        raise payload
    return payload


_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = _thread.allocate_lock()  # the C lock: never a guarded wrapper


def pool(size: int) -> concurrent.futures.ThreadPoolExecutor:
    """The worker threads for calls that wait (sleeps, sockets, files, subprocesses)."""
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size != size:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=size, thread_name_prefix="asyncguard-offload"
            )
            _pool_size = size
        return _pool
