"""Allowing blocking calls: ``allow_blocking()`` (the per-task contextvar of ``_allowed``) and
allow rules.

``allow_blocking()`` sets a contextvar, so it is per task, survives ``await`` and never leaks
into other tasks.  Rules (``install(allow=[...])``) are only evaluated when a violation is
about to be reported, never on the fast path.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import inspect
import re
import sys
from collections.abc import Callable, Iterable
from contextvars import ContextVar, Token
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import Any, TypeVar, cast

from . import _frames
from ._allowed import ALL, AllKeys, Allowed, SomeKeys, allowed_var
from ._watchdog import allow_frame_enter, allow_frame_exit

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)


_known: list[Callable[[], frozenset[str]]] = []  # the call keys of the hook families


def set_known_keys(provider: Callable[[], frozenset[str]]) -> None:
    """Given by the installer (the catalog of hook families lives above this module)."""
    _known[:] = [provider]


def _known_keys() -> frozenset[str]:
    return _known[0]() if _known else frozenset()


def validate_call_pattern(pattern: str, *, what: str = "call key") -> str:
    """Return ``pattern`` if it names (or, with wildcards, matches) a known call key."""
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"{what} must be a non-empty string, got {pattern!r}")
    known = _known_keys()
    if any(ch in pattern for ch in "*?["):
        if not any(fnmatch.fnmatchcase(key, pattern) for key in known):
            raise ValueError(f"{what} pattern {pattern!r} matches no known call key")
        return pattern
    if pattern not in known:
        close = difflib.get_close_matches(pattern, sorted(known), n=3, cutoff=0.6)
        suggestion = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(
            f"unknown {what} {pattern!r}{suggestion} "
            "(see asyncguard.known_calls() for the full list)"
        )
    return pattern


def make_allowed(calls: Iterable[str]) -> Allowed:
    calls = tuple(calls)
    if not calls:
        return ALL
    keys: list[str] = []
    patterns: list[str] = []
    for call in calls:
        validate_call_pattern(call)
        (patterns if any(ch in call for ch in "*?[") else keys).append(call)
    return SomeKeys(frozenset(keys), tuple(patterns))


def _combine(outer: Allowed | None, inner: Allowed) -> Allowed:
    if outer is None or isinstance(inner, AllKeys):
        return inner
    if isinstance(outer, AllKeys):
        return outer
    return outer.union(inner)


F = TypeVar("F", bound=Callable[..., Any])


class allow_blocking:  # noqa: N801 - used like a function, as contextlib's helpers are
    """Allow blocking calls in a block or a function, for the current task only.

    ``allow_blocking()`` allows every call; ``allow_blocking("time.sleep", "os.stat")`` only
    those keys (wildcards allowed).  Works as ``with``/``async with`` and as a decorator of
    sync or async functions.  Unknown call keys raise ``ValueError``.
    """

    def __init__(self, *calls: str, reason: str | None = None) -> None:
        self.calls = calls
        self.reason = reason
        self._allowed = make_allowed(calls)
        self._stalls = self._allowed.allows("stall")
        self._tokens: ContextVar[tuple[tuple[Token[Allowed | None], FrameType | None], ...]] = (
            ContextVar("asyncguard_allow_tokens", default=())
        )

    def __repr__(self) -> str:
        calls = ", ".join(repr(c) for c in self.calls)
        reason = f", reason={self.reason!r}" if self.reason else ""
        return f"allow_blocking({calls}{reason})"

    def __enter__(self) -> allow_blocking:
        return self._enter(sys._getframe(1))

    def _enter(self, frame: FrameType | None) -> allow_blocking:
        token = allowed_var.set(_combine(allowed_var.get(), self._allowed))
        if not self._stalls:
            frame = None
        allow_frame_enter(frame)  # the watchdog does not blame stalls below this frame
        self._tokens.set((*self._tokens.get(), (token, frame)))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tokens = self._tokens.get()
        self._tokens.set(tokens[:-1])
        token, frame = tokens[-1]
        allow_frame_exit(frame)
        allowed_var.reset(token)

    async def __aenter__(self) -> allow_blocking:
        return self._enter(sys._getframe(1))

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def __call__(self, func: F) -> F:
        allowed = self._allowed
        stalls = self._stalls

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                __tracebackhide__ = __traceback_hide__ = True
                token = allowed_var.set(_combine(allowed_var.get(), allowed))
                frame = sys._getframe() if stalls else None
                allow_frame_enter(frame)
                try:
                    return await func(*args, **kwargs)
                finally:
                    allow_frame_exit(frame)
                    allowed_var.reset(token)

            return cast(F, async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            __tracebackhide__ = __traceback_hide__ = True
            token = allowed_var.set(_combine(allowed_var.get(), allowed))
            frame = sys._getframe() if stalls else None
            allow_frame_enter(frame)
            try:
                return func(*args, **kwargs)
            finally:
                allow_frame_exit(frame)
                allowed_var.reset(token)

        return cast(F, wrapper)


@dataclass(frozen=True)
class AllowRule:
    """``"CALL"`` or ``"CALL in WHERE"``: CALL is a call key (wildcards allowed), WHERE a module
    or ``module.function`` pattern matched against every frame of the call's stack."""

    call: str
    where: str | None = None
    source: str = ""

    @classmethod
    def parse(cls, text: str) -> AllowRule:
        if not isinstance(text, str):
            raise ValueError(
                f"allow rule must be a string like 'time.sleep' or 'time.sleep in myapp.*', "
                f"got {text!r}"
            )
        parts = text.split()
        if not parts or len(parts) == 2 or len(parts) > 3 or (len(parts) == 3 and parts[1] != "in"):
            if len(parts) == 2 and parts[1] == "in":
                raise ValueError(f"allow rule {text!r} has nothing after 'in'")
            raise ValueError(
                f"allow rule {text!r} is not of the form 'CALL' or 'CALL in MODULE[.FUNCTION]'"
            )
        call, where = parts[0], (parts[2] if len(parts) == 3 else "")
        if call != "*":
            validate_call_pattern(call, what="call key in allow rule")
        return cls(call, where or None, text)

    def matches_call(self, key: str) -> bool:
        return self.call == key or fnmatch.fnmatchcase(key, self.call)

    def matches_frame(self, module: str, qualname: str) -> bool:
        where = self.where
        if where is None:
            return True
        if module == where or module.startswith(where + ".") or qualname == where:
            return True
        pattern = _where_pattern(where)
        return pattern is not None and (
            pattern.match(module) is not None or pattern.match(qualname) is not None
        )


@functools.lru_cache(maxsize=256)
def _where_pattern(where: str) -> re.Pattern[str] | None:
    """The compiled wildcard pattern (``None`` without wildcards): rules walk the stack, so
    fnmatch's per-call overhead was most of their cost."""
    if not any(ch in where for ch in "*?["):
        return None
    return re.compile(fnmatch.translate(where))


def rules_allow(rules: tuple[AllowRule, ...], key: str, frame: FrameType | None) -> bool:
    """True when a rule allows ``key`` here; stops at the first frame that matches."""
    candidates = [rule for rule in rules if rule.matches_call(key)]
    if not candidates:
        return False
    if any(rule.where is None for rule in candidates):
        return True
    for module, qualname in _frames.frame_names(frame):
        if any(rule.matches_frame(module, qualname) for rule in candidates):
            return True
    return False
