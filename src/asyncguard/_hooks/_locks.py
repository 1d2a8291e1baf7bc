"""Guarded ``threading.Lock`` / ``threading.RLock``, and the slow path of the sync family.

``_thread.lock`` is a C type whose dictionary we never write to, and ``with lock:`` calls its
``__enter__`` in C, where no attribute hook can see it.  So the factories are patched instead:
``threading.Lock`` becomes :class:`GuardedLock` (a ``__slots__`` wrapper around a real lock) and
``threading.RLock()`` returns a :class:`GuardedRLock` (a subclass of the C ``_thread.RLock``, so
``release``, ``__exit__``, ``_is_owned``, ``_release_save``, ``_acquire_restore`` and
``_recursion_count`` are the real C methods ``threading.Condition`` relies on).  Locks created
before install stay raw C locks; locks created while installed keep working after uninstall.

Fast path of ``acquire``/``__enter__``: one non-blocking try on the real lock; a free lock is
taken with no loop check at all.  Only a lock that would wait asks whether this thread runs a
loop, and if it does the guard judges the wait (raise before waiting, or wait timed and report).
"""

from __future__ import annotations

import _thread
import sys
import threading
import warnings
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any, NoReturn

from .. import _frames, _judge, _wording
from .._allowed import ALL, allowed_var
from .._format import short
from .._loop import get_running_loop
from .._spec import Hook, copy_metadata

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)
__asyncguard_work__ = True  # the guard judging or reporting a call (_frames)

CATEGORY = "sync-primitive"

# Callers whose short internal lock/condition waits are never violations, in addition to
# ``_frames.EXEMPT_CALLERS``: ``queue.Queue`` takes its mutex (``with self.not_empty:``) around
# every get/put, and asgiref's executors hand work between the loop and its sync threads.
EXEMPT_CALLERS: tuple[str, ...] = ("queue", "asgiref")

# Modules whose RLocks (made directly, or by ``threading.Condition()`` for them) are private
# and only ever taken by their own code, an exempt caller: a wait on one is never a violation,
# so it gets the C RLock, whose ``with``/``acquire`` cost no Python call.  Each
# ``concurrent.futures.Future`` has one (its ``_condition``; a Django request makes ~16 of them
# through asgiref, ~110 acquires); asgiref's ``Local`` takes its lock on every attribute access.
PRIVATE_RLOCK_CREATORS: frozenset[str] = frozenset(
    {"asgiref.local", "concurrent.futures._base", "concurrent.futures.thread"}
)


# Modules whose Locks are private in the same way: ``threading`` makes one for every ``Event``
# (a ``Thread`` has one in its ``_started``), ``Semaphore`` and ``Barrier``, ``queue`` one per
# ``Queue``, asgiref's executors and ``concurrent.futures``' pools their own; only their own code
# takes them, and each wait of theirs that can be long (``Event.wait``, ``Semaphore.acquire``,
# ``Queue.get``, ``Future.result`` ...) has a hook of its own.  A user's ``threading.Lock()``,
# and the one a user passes to ``Condition(lock)``, is made in the user's frame: guarded.
PRIVATE_LOCK_CREATORS: frozenset[str] = PRIVATE_RLOCK_CREATORS | {
    "threading",
    "queue",
    "asgiref.sync",
    "asgiref.current_thread_executor",
}


def _private_creator(frame: FrameType | None) -> bool:
    """The RLock being made is for one of ``PRIVATE_RLOCK_CREATORS`` (past ``threading``'s
    frames: a user's ``threading.Condition()`` is the user's)."""
    while frame is not None:
        module = frame.f_globals.get("__name__")
        if module != "threading":
            return module in PRIVATE_RLOCK_CREATORS
        frame = frame.f_back
    return False


_PRIVATE_LOCKS = PRIVATE_LOCK_CREATORS
_allocate_lock = _thread.allocate_lock
_LockType = _thread.LockType
_CRLock = _thread.RLock
_rlock_acquire = _thread.RLock.acquire
_running_loop = get_running_loop


# -- the slow path ------------------------------------------------------------------------------


def waits(timeout: Any) -> bool:
    """``timeout`` (``None`` = forever) lets the call wait: a positive number or ``None``."""
    if timeout is None:
        return True
    try:
        return bool(timeout > 0)
    except Exception:  # the original call rejects it without waiting
        return False


def _module_is(frame: FrameType, names: tuple[str, ...]) -> bool:
    module = frame.f_globals.get("__name__")
    if not isinstance(module, str):
        return False
    return module in names or module.startswith(tuple(name + "." for name in names))


_transparent: frozenset[CodeType] | None = None


def _transparent_codes() -> frozenset[CodeType]:
    """Standard-library frames that only forward the user's own wait (skipped when judging).

    ``with cond:`` runs ``Condition.__enter__`` (in ``threading``, an exempt caller), which
    enters the lock: the wait is the user's.  Iterating ``Executor.map(...)`` waits in
    ``Future.result()`` called from ``concurrent.futures`` (also exempt): again the user's wait.
    """
    global _transparent
    if _transparent is not None:
        return _transparent
    codes = {threading.Condition.__enter__.__code__}
    base = sys.modules.get("concurrent.futures._base")
    if base is None:
        return frozenset(codes)  # not imported yet: look again next time
    mapper = getattr(getattr(base, "Executor", None), "map", None)
    for const in getattr(getattr(mapper, "__code__", None), "co_consts", ()):
        if isinstance(const, CodeType) and const.co_name == "result_iterator":
            codes.add(const)
    helper = getattr(base, "_result_or_cancel", None)  # 3.11+
    if helper is not None:
        codes.add(helper.__code__)
    _transparent = frozenset(codes)
    return _transparent


def _user_frame(frame: FrameType | None) -> FrameType | None:
    frame = _frames.caller_frame(frame)
    transparent = _transparent_codes()
    while frame is not None and frame.f_code in transparent:
        frame = _frames.caller_frame(frame.f_back)
    return frame


def _exempt(frame: FrameType | None) -> bool:
    return frame is not None and _module_is(frame, EXEMPT_CALLERS)


def decide(hook: Hook, args: Any, kwargs: Any, frame: FrameType | None) -> Any:
    """``_judge.decide`` for a wait made from ``frame`` (past our own and transparent frames),
    for waits that hand back something to time later (``as_completed``)."""
    frame = _user_frame(frame)
    if _exempt(frame):
        return None
    return _judge.decide(hook, lambda: _judge.format_call(hook, args, kwargs), frame)


def judge(hook: Hook, original: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    """On a loop thread, for a call that may wait: the engine's slow path, with the caller
    looked for past transparent frames (see :func:`_transparent_codes`) and this module's
    ``EXEMPT_CALLERS`` exempt too; a call that will not wait runs as it is."""
    __tracebackhide__ = __traceback_hide__ = True
    # What needs no frame first: sys._getframe raises an audit event (a call into our audit
    # hook), and most calls here will not wait (a done future, a set event) or are covered
    # by a judged call around them (Condition.wait inside Event.wait).
    if allowed_var.get() is ALL:
        return original(*args, **kwargs)
    predicate = hook.would_block
    if predicate is not None:
        try:
            blocking = predicate(args, kwargs)
        except Exception:  # _judge.judge asks again and reports the predicate's error
            blocking = None
        if blocking is not None:
            if not blocking:
                return original(*args, **kwargs)  # covers=False: as _judge.judge does
            predicate = _blocks  # asked once: the answer is the one judged
    return _judge.judge(
        hook,
        original,
        args,
        kwargs,
        sys._getframe(1),
        covers=False,
        would_block=predicate,
        caller=_user_frame,
        exempt=_exempt,
    )


def _blocks(args: Any, kwargs: Any) -> bool:
    return True


def _lock_wait(
    hook: Hook, acquire: Callable[..., bool], blocking: Any, timeout: Any, tried: bool = False
) -> bool:
    """``acquire`` found the lock busy (``tried``: the caller's non-blocking try just failed),
    or was given a timeout, on a loop thread."""
    __tracebackhide__ = __traceback_hide__ = True
    if not tried:
        try:
            forever = bool(timeout == -1)
        except Exception:
            forever = False
        if not forever and not waits(timeout):
            return acquire(blocking, timeout)  # timeout 0: a try; or a value acquire rejects
        if acquire(False):
            return True  # a timeout was given and it is free
    return bool(judge(hook, acquire, (blocking, timeout), {}))


def _fmt_lock(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    timeout = args[1] if len(args) > 1 else -1
    try:
        if timeout == -1:
            return ""
    except Exception:
        pass
    return f"timeout={short(timeout)}"


# -- threading.Lock -----------------------------------------------------------------------------


class _LockMeta(type):
    """``isinstance(x, threading.Lock)`` stays true for raw C locks made before install (3.13)."""

    def __instancecheck__(cls, instance: object) -> bool:
        return isinstance(instance, _LockType) or type.__instancecheck__(cls, instance)

    def __subclasscheck__(cls, subclass: type) -> bool:
        return issubclass(subclass, _LockType) or type.__subclasscheck__(cls, subclass)


class GuardedLock(metaclass=_LockMeta):
    """What ``threading.Lock()`` returns while asyncguard is installed: a real ``_thread.lock``
    inside, the same methods outside; a wait on a loop thread is judged by the guard."""

    __slots__ = ("__weakref__", "_inner")

    def __new__(cls) -> Any:
        # one sys._getframe (an audit event) per lock made; saves a Python call on every
        # acquire and release of the private locks (~120 per Django request)
        if cls is GuardedLock and sys._getframe(1).f_globals.get("__name__") in _PRIVATE_LOCKS:
            return _allocate_lock()
        return super().__new__(cls)

    def __init__(self) -> None:
        self._inner = _allocate_lock()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        __tracebackhide__ = __traceback_hide__ = True
        if timeout == -1:
            if self._inner.acquire(False):
                return True
            if blocking and _running_loop() is not None:  # busy: no second try before judging
                return _lock_wait(LOCK_HOOK, self._inner.acquire, blocking, timeout, True)
        elif blocking and _running_loop() is not None:
            return _lock_wait(LOCK_HOOK, self._inner.acquire, blocking, timeout)
        return self._inner.acquire(blocking, timeout)

    __enter__ = acquire

    def release(self) -> None:
        self._inner.release()

    def __exit__(self, exc_type: object = None, exc: object = None, tb: object = None) -> None:
        self._inner.release()

    def locked(self) -> bool:
        return self._inner.locked()

    def _at_fork_reinit(self) -> None:
        self._inner._at_fork_reinit()  # type: ignore[attr-defined]

    acquire_lock = acquire
    release_lock = release
    locked_lock = locked

    def __repr__(self) -> str:
        state = "locked" if self._inner.locked() else "unlocked"
        return f"<{state} {type(self).__name__} object at {id(self):#x}>"

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise TypeError(f"cannot pickle {type(self).__name__!r} object")


def _lock_factory(hook: Hook, original: Any) -> Any:
    GuardedLock.__wrapped__ = original  # type: ignore[attr-defined]
    GuardedLock.__asyncguard_hook__ = hook  # type: ignore[attr-defined]
    return GuardedLock


# -- threading.RLock ----------------------------------------------------------------------------


class GuardedRLock(_CRLock):  # type: ignore[misc]
    """What ``threading.RLock()`` returns while asyncguard is installed: a real C ``RLock``
    whose ``acquire``/``__enter__`` let the guard judge a wait on a loop thread; every other
    method is the C one."""

    __slots__ = ()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        __tracebackhide__ = __traceback_hide__ = True
        if timeout == -1:
            if _rlock_acquire(self, False):
                return True
            if blocking and _running_loop() is not None:  # busy: no second try before judging
                return _lock_wait(RLOCK_HOOK, super().acquire, blocking, timeout, True)
        elif blocking and _running_loop() is not None:
            return _lock_wait(RLOCK_HOOK, super().acquire, blocking, timeout)
        return bool(_rlock_acquire(self, blocking, timeout))

    __enter__ = acquire


def _rlock_factory(hook: Hook, original: Callable[..., Any]) -> Callable[..., Any]:

    deprecated_args = sys.version_info >= (3, 13)

    def RLock(*args: Any, **kwargs: Any) -> Any:  # noqa: N802 - the name it stands in for
        __tracebackhide__ = __traceback_hide__ = True
        if args or kwargs:
            if deprecated_args:
                warnings.warn(
                    "Passing arguments to RLock is deprecated and will be removed in 3.15",
                    DeprecationWarning,
                    stacklevel=2,
                )
            return GuardedRLock(*args, **kwargs)
        if _private_creator(sys._getframe(1)):
            return _CRLock()
        return GuardedRLock()

    copy_metadata(RLock, original, hook)
    return RLock


# -- the hooks ----------------------------------------------------------------------------------

LOCK_HOOK = Hook(
    "threading",
    "Lock",
    "threading.Lock.acquire",
    CATEGORY,
    _wording.LOCK,
    fmt=_fmt_lock,
    factory=_lock_factory,
)
RLOCK_HOOK = Hook(
    "threading",
    "RLock",
    "threading.RLock.acquire",
    CATEGORY,
    _wording.LOCK,
    fmt=_fmt_lock,
    factory=_rlock_factory,
)
