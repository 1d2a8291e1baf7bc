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

``greenlet`` is an optional dependency: ``pip install greenlet`` (the ``offload`` extra).
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

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)

T = TypeVar("T")

_RETURN, _RAISE = "return", "raise"  # how an offloaded call ended

DEFAULT_THREADS = 40  # a pool sized for waiting, not for CPU (anyio's default is 40 too)


_greenlet_module: Any = None


def _greenlet() -> Any:
    global _greenlet_module
    if _greenlet_module is not None:
        return _greenlet_module
    try:
        import greenlet
    except ImportError:
        raise RuntimeError(
            "asyncguard's offload mode needs the greenlet package: "
            "pip install greenlet (or asyncguard's 'offload' extra)"
        ) from None
    _greenlet_module = greenlet
    return greenlet


def available() -> bool:
    try:
        import greenlet  # noqa: F401
    except ImportError:
        return False
    return True


_child_class: type | None = None


def _child_type() -> type:
    """The greenlet subclass that runs driven coroutines (created when first needed, so
    importing asyncguard never imports greenlet)."""
    global _child_class
    if _child_class is None:
        greenlet = _greenlet().greenlet

        class DrivenCoroutine(greenlet):  # type: ignore[misc, valid-type]
            """Runs driven coroutines' steps, one coroutine after another; its parent greenlet
            is the driver of the coroutine it runs."""

        _child_class = DrivenCoroutine
    return _child_class


class _Finished:
    """What a child greenlet hands its driver when the coroutine returned or raised."""

    __slots__ = ("error", "value")

    def __init__(self, value: Any, error: BaseException | None) -> None:
        self.value = value
        self.error = error


class _Offload:
    """What a hook hands the driver to have ``call`` run in a worker thread."""

    __slots__ = ("call", "origin", "pool", "thread_sensitive")

    def __init__(
        self,
        origin: Any,
        call: Callable[[], Any],
        thread_sensitive: bool,
        pool: concurrent.futures.ThreadPoolExecutor | None,
    ) -> None:
        self.origin = origin
        self.call = call
        self.thread_sensitive = thread_sensitive
        self.pool = pool


def _steps(coro: Coroutine[Any, Any, Any]) -> _Finished:
    """Step the coroutine; each value it yields (a future for the task) goes to the driver,
    the parent greenlet, which switches back with what the task sent or throws in what the
    task threw.  Plain values, not tagged tuples: this runs on every step of every request."""
    __tracebackhide__ = __traceback_hide__ = True
    switch = _greenlet().getcurrent().parent.switch
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            yielded = coro.send(value) if error is None else coro.throw(error)
        except StopIteration as stop:
            return _Finished(stop.value, None)
        except BaseException as exc:
            return _Finished(None, exc)
        try:
            value = switch(yielded)
            error = None
        except BaseException as exc:  # thrown in by the driver: cancellation, close()
            value = None
            error = exc


def _runner(coro: Any) -> Any:
    """A child greenlet's body: drive one coroutine, report its outcome to the driver, wait for
    the next one.  A greenlet is reused because a new one costs ~8 us (its own frame stack is
    mapped and unmapped: two system calls and page faults), a reused one ~0.3 us."""
    __tracebackhide__ = __traceback_hide__ = True
    getcurrent = _greenlet().getcurrent
    while isinstance(coro, Coroutine):
        finished = _steps(coro)
        coro = getcurrent().parent.switch(finished)
    # not a coroutine from a driver: a greenlet started inside a driven coroutine outlived it
    # and finished while this one waited idle; end here, handing its value on to the parent
    # (as a finished greenlet would have), and never be reused (dead greenlets are skipped)
    return coro


_idle = _thread._local()  # per thread (a greenlet belongs to its thread): idle child greenlets
IDLE_CHILDREN = 32  # kept per thread after a burst; more are created when needed


def _take_child(driver: Any) -> Any:
    free: list[Any] | None = getattr(_idle, "children", None)
    while free:
        child = free.pop()
        if child.dead:  # ended by an orphan (see _runner)
            continue
        try:
            child.parent = driver
        except ValueError:  # the driver descends from it (a greenlet it started outlived it)
            continue
        return child
    return _child_type()(_runner, driver)


def _give_back(child: Any) -> None:
    child.gr_context = None  # do not keep the finished request's context alive
    free: list[Any] | None = getattr(_idle, "children", None)
    if free is None:
        free = _idle.children = []
    if len(free) < IDLE_CHILDREN:
        free.append(child)


class _Driver:
    """``await _Driver(coro)``: drives ``coro`` in a child greenlet (see the module doc)."""

    __slots__ = ("_adopt", "_coro")

    def __init__(self, coro: Awaitable[Any], adopt: bool = True) -> None:
        self._coro = coro
        self._adopt = adopt  # entry points install the task factory; driven tasks have it

    def __await__(self) -> Generator[Any, Any, Any]:
        __tracebackhide__ = __traceback_hide__ = True
        if self._adopt:
            _adopt(asyncio.get_running_loop())
        driver = _greenlet().getcurrent()
        child = _take_child(driver)
        child.gr_context = driver.gr_context  # contextvars: the task's, shared both ways
        switch = child.switch
        message = switch(self._coro)
        while True:
            kind = type(message)
            if kind is not _Finished and kind is not _Offload:  # a step: what it awaits
                try:
                    sent = yield message  # the task awaits what the coroutine awaited
                except BaseException as exc:  # thrown in by the task: cancellation, close()
                    message = child.throw(exc)
                else:
                    message = switch(sent)
            elif kind is _Offload:
                try:
                    result = yield from _in_thread(
                        message.call, message.thread_sensitive, message.pool
                    ).__await__()
                except BaseException as exc:  # the call's own error, or the task cancelled
                    message = message.origin.switch((_RAISE, exc))
                else:
                    message = message.origin.switch((_RETURN, result))
            else:
                value, error = message.value, message.error
                # the idle child's frame keeps this object until its next coroutine: empty it,
                # so that no response or traceback of this one stays alive meanwhile
                message.value = message.error = None
                _give_back(child)
                if error is None:
                    return value
                raise error


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
    __tracebackhide__ = __traceback_hide__ = True
    return await awaitable


_factories: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
    weakref.WeakKeyDictionary()
)  # loop -> the task factory it had before ours

# set while a request runs under driving_tasks(): the tasks created in its context are driven
_tasks_driven: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "asyncguard_tasks_driven", default=False
)


async def _drive(coro: Awaitable[T]) -> T:
    __tracebackhide__ = __traceback_hide__ = True
    return cast(T, await _Driver(coro))


async def driving_tasks(awaitable: Awaitable[T]) -> T:
    """Await ``awaitable`` as it is, but drive the tasks created while it runs.

    For a handler that does its work in tasks of its own (Django 5.x runs the middleware
    chain, the view and the response in one task per request and only awaits it): driving the
    handler's coroutine too would cost a greenlet and a switch pair per step for code that
    makes no blocking call."""
    __tracebackhide__ = __traceback_hide__ = True
    _adopt(asyncio.get_running_loop())
    token = _tasks_driven.set(True)
    try:
        return await awaitable
    finally:
        _tasks_driven.reset(token)


async def _drive_task(coro: Awaitable[T]) -> T:
    __tracebackhide__ = __traceback_hide__ = True
    return cast(T, await _Driver(coro, adopt=False))


def _task_factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Future[Any]:
    """A task created from a driven coroutine (Django's handler runs each view in a task of its
    own) is driven too; every task is then made by the factory the loop had (or is a Task)."""
    __tracebackhide__ = __traceback_hide__ = True
    if (
        (_tasks_driven.get() or driven() is not None)
        and asyncio.iscoroutine(coro)
        and _worth_driving(coro)
    ):
        coro = _drive_task(coro)
    previous = _factories.get(loop)
    if previous is not None:
        return cast("asyncio.Future[Any]", previous(loop, coro, **kwargs))
    return asyncio.Task(coro, loop=loop, **kwargs)


# coroutines that only await (asgiref's executor waits, asyncio's helpers, Django's wait for a
# client disconnect): driving them would only cost a greenlet per task
_NOT_DRIVEN_MODULES = ("asgiref.", "asyncio.")
_NOT_DRIVEN_NAMES = frozenset({"ASGIHandler.listen_for_disconnect"})


_worth: dict[Any, bool] = {}  # code object -> whether its coroutines are driven


def _worth_driving(coro: Any) -> bool:
    code = getattr(coro, "cr_code", None)
    if code is None:
        return True
    worth = _worth.get(code)
    if worth is None:
        frame = coro.cr_frame
        module = frame.f_globals.get("__name__", "") if frame is not None else ""
        worth = (
            not (isinstance(module, str) and module.startswith(_NOT_DRIVEN_MODULES))
            and getattr(coro, "__qualname__", "") not in _NOT_DRIVEN_NAMES
        )
        if len(_worth) < 10_000:
            _worth[code] = worth
    return worth


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
        __tracebackhide__ = __traceback_hide__ = True
        return await _Driver(func(*args, **kwargs))

    return cast(F, wrapper)


def driven() -> Any | None:
    """The child greenlet of the nearest driver above the current greenlet, or ``None``
    (also when greenlet is not installed)."""
    child_type = _child_class
    if child_type is None:
        return None
    node = _greenlet().getcurrent()
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
    __tracebackhide__ = __traceback_hide__ = True
    origin = _greenlet().getcurrent()
    kind, payload = child.parent.switch(_Offload(origin, call, thread_sensitive, pool))
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
