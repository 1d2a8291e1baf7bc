"""Wrappers for the django family (see ``djangohooks``).

They keep the generic wrapper's fast path (no loop on this thread, or blocking allowed: call
through) and differ on the slow path in one way: a call whose predicate says it will *not*
block runs unjudged, so the hooked calls it makes are judged on their own.  A template served
from the cached loader still renders the lazy queryset in its context (a query on the loop); a
connection that is already open still makes Django raise ``SynchronousOnlyOperation``.  A call
judged blocking (raised, warned, or let through by an allow rule) covers its callees, as
everywhere else.

Also here: Django's own ``SynchronousOnlyOperation`` reported as a violation, and mail entry
points (``send_mail``...) that name the SMTP send reported below them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from types import CodeType, FrameType
from typing import Any

from .. import _judge, _report
from .._allowed import ALL, allowed_var
from .._judge import call_allowed
from .._loop import get_running_loop
from .._spec import Hook, copy_metadata
from ._django_errors import DJANGO_SENTENCE, refusal
from ._files_wrap import AllowedIterator

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)
__asyncguard_work__ = True  # the guard judging or reporting a call (_frames)

Args = tuple[Any, ...]
Kwargs = dict[str, Any]


def on_django_call(
    hook: Hook,
    original: Callable[..., Any],
    args: Args,
    kwargs: Kwargs,
    frame: FrameType | None,
    *,
    report: tuple[Hook, Args, Kwargs] | None = None,
    iterate: bool = False,
) -> Any:
    """The engine's slow path with the django family's two differences: a call judged not
    blocking does not cover its callees, and the predicate runs with blocking allowed (it may
    set up what Django sets up lazily).  ``report`` names the call the user made when it is
    not this one (``send_mail`` reported at the SMTP send below it)."""
    __tracebackhide__ = __traceback_hide__ = True
    would_block = hook.would_block
    result = _judge.judge(
        hook,
        original,
        args,
        kwargs,
        frame,
        covers=False,
        shown=report,
        would_block=None if would_block is None else _evaluated(would_block),
    )
    if iterate and isinstance(result, Iterator):
        return AllowedIterator(result)  # lazy fetches belong to the judged query
    return result


def _evaluated(would_block: Callable[[Args, Kwargs], bool]) -> Callable[[Args, Kwargs], bool]:
    return lambda args, kwargs: _evaluate(would_block, args, kwargs)


def _evaluate(would_block: Callable[[Args, Kwargs], bool], args: Args, kwargs: Kwargs) -> bool:
    """A predicate may set up what Django sets up lazily on first use (the template engines
    and their loaders, which look for app template directories): our own work, allowed."""
    token = allowed_var.set(ALL)
    try:
        return would_block(args, kwargs)
    finally:
        allowed_var.reset(token)


def _build(hook: Hook, original: Callable[..., Any], *, iterate: bool) -> Callable[..., Any]:
    running_loop = get_running_loop
    allowed = allowed_var.get

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = __traceback_hide__ = True
        if running_loop() is None or allowed() is ALL:
            return original(*args, **kwargs)
        return on_django_call(hook, original, args, kwargs, sys._getframe(1), iterate=iterate)

    copy_metadata(wrapper, original, hook)
    return wrapper


def django_call(hook: Hook, original: Callable[..., Any]) -> Callable[..., Any]:
    return _build(hook, original, iterate=False)


def django_query(hook: Hook, original: Callable[..., Any]) -> Callable[..., Any]:
    """``SQLCompiler.execute_sql``: a chunked read (``.iterator()``) returns a generator whose
    fetches are part of the query already judged."""
    return _build(hook, original, iterate=True)


def django_setup(hook: Hook, original: Callable[..., Any]) -> Callable[..., Any]:
    """Setup Django does on first use (a file cache making sure of its directory): never
    reported, and the calls it makes are covered (as the generic wrapper does for a call
    judged not blocking)."""

    running_loop = get_running_loop
    allowed = allowed_var.get

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = __traceback_hide__ = True
        if running_loop() is None or allowed() is ALL:
            return original(*args, **kwargs)
        return call_allowed(original, args, kwargs)

    copy_metadata(wrapper, original, hook)
    return wrapper


# -- mail: the entry point the user called, reported where the SMTP send starts -----------------

_mail_entry: ContextVar[tuple[Hook, Args, Kwargs] | None] = ContextVar(
    "asyncguard_django_mail", default=None
)


def mail_entry(hook: Hook, original: Callable[..., Any]) -> Callable[..., Any]:
    """``send_mail``, ``EmailMessage.send``...: never judged themselves (the locmem and console
    backends do not block); they name the call a guarded SMTP backend reports."""
    running_loop = get_running_loop
    allowed = allowed_var.get

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = __traceback_hide__ = True
        if running_loop() is None or allowed() is ALL or _mail_entry.get() is not None:
            return original(*args, **kwargs)
        token = _mail_entry.set((hook, args, kwargs))
        try:
            return original(*args, **kwargs)
        finally:
            _mail_entry.reset(token)

    copy_metadata(wrapper, original, hook)
    return wrapper


def smtp_call(hook: Hook, original: Callable[..., Any]) -> Callable[..., Any]:
    running_loop = get_running_loop
    allowed = allowed_var.get

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = __traceback_hide__ = True
        if running_loop() is None or allowed() is ALL:
            return original(*args, **kwargs)
        return on_django_call(
            hook, original, args, kwargs, sys._getframe(1), report=_mail_entry.get()
        )

    copy_metadata(wrapper, original, hook)
    return wrapper


# -- SynchronousOnlyOperation --------------------------------------------------------------------

_inner_code: list[CodeType] = []


def _async_unsafe_code() -> CodeType | None:
    """The code object shared by every function ``django.utils.asyncio.async_unsafe`` made."""
    if not _inner_code:
        module = sys.modules.get("django.utils.asyncio")
        if module is None:
            return None
        _inner_code.append(module.async_unsafe(lambda: None).__code__)
    return _inner_code[0]


def _refused(frame: FrameType) -> str:
    """``BaseDatabaseWrapper.cursor``: the function Django refused to run on the loop."""
    func = frame.f_locals.get("func")
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None)
    return str(name).replace(".<locals>", "") if name else ""


def synchronous_only_init(hook: Hook, original: Callable[..., Any]) -> Callable[..., Any]:
    """``SynchronousOnlyOperation.__init__``: when ``async_unsafe`` raises it on a loop thread,
    the refusal is reported as a violation like any other call.  In raise mode the error raised
    is ours, with our message, and still a ``SynchronousOnlyOperation``; in warn mode Django's
    own error goes on unchanged (the call never ran: no duration)."""
    running_loop = get_running_loop
    allowed = allowed_var.get

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:  # noqa: N807
        __tracebackhide__ = __traceback_hide__ = True
        original(self, *args, **kwargs)
        if running_loop() is None or allowed() is ALL:
            return
        _report_refusal(hook, sys._getframe(1), str(self))

    copy_metadata(__init__, original, hook)
    __init__.__name__ = __init__.__qualname__ = "__init__"
    return __init__


def _report_refusal(hook: Hook, frame: FrameType, django_text: str) -> None:
    __tracebackhide__ = __traceback_hide__ = True

    try:
        if frame.f_code is not _async_unsafe_code():
            return  # raised by someone else: not a refusal on the loop
        refused = _refused(frame)
        decision = _judge.decide(hook, lambda: refused, frame)
    except Exception as exc:
        _report.internal_error(f"hook {hook.key}", exc)
        return
    if decision is None:
        return
    guard, violation = decision
    raised = guard.mode == "raise"
    _report.report(guard, violation, raised=raised)
    if raised:
        raise refusal(violation, django_text or DJANGO_SENTENCE)


# -- offload mode: an ORM query in a worker thread -----------------------------------------------


def offload_query(
    original: Callable[..., Any], args: Args, kwargs: Kwargs
) -> Callable[[], Any] | None:
    """``SQLCompiler.execute_sql`` for a worker thread, or ``None`` when it must stay inline.

    A Django connection belongs to the thread that opened it, so in the worker the compiler
    uses that thread's own connection for the same alias (as Django's async ORM does, which
    runs the whole query there).  A chunked read is fetched there in full.  Stays inline: a
    query that hands back its open cursor (``update()``/``delete()`` read ``rowcount`` from it
    afterwards), a query inside a transaction of the loop thread's connection (another
    connection would not see it), and raw cursors and connecting (the loop thread's own).
    """
    from django.db.models.sql.compiler import SQLCompiler, SQLInsertCompiler, SQLUpdateCompiler
    from django.db.models.sql.constants import CURSOR

    compiler = args[0] if args else None
    if not isinstance(compiler, SQLCompiler):
        return None  # a raw cursor or a connection: bound to this thread
    bound = compiler.connection
    if bound.in_atomic_block:
        return None

    if not isinstance(compiler, (SQLInsertCompiler, SQLUpdateCompiler)):
        result_type = args[1] if len(args) > 1 else kwargs.get("result_type")
        if result_type == CURSOR:
            return None

    alias = compiler.using or "default"

    def call() -> Any:
        __tracebackhide__ = __traceback_hide__ = True
        from django.db import connections

        compiler.connection = connections[alias]
        try:
            result = original(*args, **kwargs)
            if isinstance(result, Iterator):
                result = iter(list(result))
            return result
        finally:
            compiler.connection = bound

    return call
