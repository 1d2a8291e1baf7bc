"""The shape of a hook: what is patched, the key users see, and when it would really block."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)

Args = tuple[Any, ...]
Kwargs = dict[str, Any]
WouldBlock = Callable[[Args, Kwargs], bool]
Format = Callable[[Args, Kwargs], str]
WrapperFactory = Callable[["Hook", Any], Callable[..., Any]]
MakeError = Callable[[Any], BaseException]  # Violation -> the error to raise
OffloadAdapter = Callable[[Callable[..., Any], Args, Kwargs], "Callable[[], Any] | None"]
Gate = Callable[[], "str | None"]  # why a hook must not be applied, or None


@dataclass(frozen=True)
class Hook:
    """Patch ``module.attr`` (``attr`` may be ``"Class.method"``) with a guarded wrapper.

    ``would_block(args, kwargs)`` runs only on a loop thread; returning ``False`` lets the call
    through unreported (a non-blocking socket, a timeout of 0).  ``method`` says the first
    argument is ``self`` (left out of messages).  ``factory`` builds a special wrapper (locks,
    queues) instead of the generic one.  ``optional`` hooks are skipped where the attribute does
    not exist on this platform or version.  ``sensitive`` hooks take credentials (passwords,
    connection strings): their wrapper keeps the arguments out of every frame of ours that a
    traceback can show (see ``_wrap.sealed``); a callable Django protects with
    ``sensitive_variables`` is treated so without being declared.

    ``library`` names the library the hook belongs to within its family: ``exclude`` can name
    it alone (``exclude_name(family, library)``: ``"clients.redis"``).  ``gate`` is called once
    the hook's module is imported (at install if it already is), before patching: the reason
    not to patch (the installed library is older than the hooks), or ``None``.
    """

    module: str
    attr: str
    key: str
    category: str
    hint: str
    would_block: WouldBlock | None = None
    fmt: Format | None = None
    method: bool = False
    factory: WrapperFactory | None = None
    optional: bool = False
    sensitive: bool = False
    # the exception raise mode raises (default ``BlockingCallError(violation)``): Django's
    # ORM hooks raise one that is also Django's ``SynchronousOnlyOperation``
    error: MakeError | None = None
    # warn mode: who refused the call when the exception it raised says it never ran
    # (Django's ``SynchronousOnlyOperation``): reported as refused, not as timed
    refused_by: Callable[[BaseException], str | None] | None = None
    # offload mode: prepares the call for a worker thread (the ORM: that thread's connection),
    # or returns None to run it inline
    offload_adapter: OffloadAdapter | None = None
    library: str | None = None
    gate: Gate | None = None


@dataclass(frozen=True)
class AuditHook:
    """A PEP 578 audit event raised in C, for calls no attribute hook can see."""

    event: str
    key: str
    category: str
    hint: str
    would_block: Callable[[Args], bool] | None = None
    fmt: Callable[[Args], str] | None = None


@dataclass(frozen=True)
class Family:
    """A group of hooks users can exclude together (``install(exclude=["sync"])``), or one
    library of it (``exclude=["clients.redis"]``: its hooks' ``library``)."""

    name: str
    description: str
    hooks: tuple[Hook, ...] = ()
    audit: tuple[AuditHook, ...] = ()
    # keys reported by special wrappers (files opened on the loop, guarded locks)
    extra: tuple[tuple[str, str, str], ...] = field(default=())
    # offload mode: where its calls go, by call key pattern ("inline": objects bound to the
    # thread that made them; "thread_sensitive": asgiref's thread-sensitive executor); the
    # rest go to the pool
    routes: tuple[tuple[str, str], ...] = field(default=())


_WRAPPER_ASSIGNMENTS = ("__module__", "__name__", "__qualname__", "__doc__")


def copy_metadata(wrapper: Any, original: Any, hook: Hook) -> None:
    """Make ``wrapper`` look like ``original`` (name, doc, ``__wrapped__``) and mark it ours."""
    for name in _WRAPPER_ASSIGNMENTS:
        with contextlib.suppress(AttributeError, TypeError):
            setattr(wrapper, name, getattr(original, name))
    wrapper.__wrapped__ = original
    wrapper.__asyncguard_hook__ = hook


def exclude_name(family: str, library: str) -> str:
    """How ``exclude`` names one library of a family: ``"clients.redis"``."""
    return f"{family}.{library}"
