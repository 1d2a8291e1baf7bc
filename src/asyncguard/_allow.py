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
import importlib.machinery
import importlib.util
import inspect
import re
import sys
from collections.abc import Callable, Iterable
from contextvars import ContextVar, Token
from dataclasses import dataclass
from types import CodeType, FrameType, TracebackType
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
def names_a_missing_module(rule: AllowRule) -> bool:
    """The module ``rule.where`` names (``module`` or ``module.function``, no wildcard) does
    not exist.  Decided without importing anything: the top-level name by ``find_spec``, a
    submodule only under a package that is already imported."""
    where = rule.where
    if where is None or any(char in where for char in "*?["):
        return False
    parts = where.split(".")
    try:
        if importlib.util.find_spec(parts[0]) is None:
            return True
    except (ImportError, ValueError):
        return True
    for depth in range(2, len(parts) + 1):
        parent = sys.modules.get(".".join(parts[: depth - 1]))
        if parent is None:
            return False  # not imported yet: not decided without importing it
        path = getattr(parent, "__path__", None)
        if path is None:
            return False  # a module: the rest names a function or class in it
        name = ".".join(parts[:depth])
        if name in sys.modules or importlib.machinery.PathFinder.find_spec(name, list(path)):
            continue
        return not hasattr(parent, parts[depth - 1])  # else a function of the package itself
    return False


def _where_pattern(where: str) -> re.Pattern[str] | None:
    """The compiled wildcard pattern (``None`` without wildcards): rules walk the stack, so
    fnmatch's per-call overhead was most of their cost."""
    if not any(ch in where for ch in "*?["):
        return None
    return re.compile(fnmatch.translate(where))


def _literal_prefix(pattern: str) -> str:
    """The part of a wildcard pattern before its first wildcard."""
    for index, ch in enumerate(pattern):
        if ch in "*?[":
            return pattern[:index]
    return pattern


class _Matcher:
    """The rules of one rule set that can allow one call key, and the frames they name.

    Cached, as the answers never change: per module name, whether every frame of it matches,
    none does, or it depends on the function (``_frames.BY_CODE``); then per function of such
    a module (its module and qualname decide).  Slow-path walks avoid what is audited (with
    asyncguard's audit hook installed each audited operation is a call into Python, ~0.2 µs):
    ``id()``, and ``frame.f_code``, read only for frames of a module a rule names a function
    of.  The last match is remembered as (module globals, instruction offset, code object): a
    frame of that module at that offset is confirmed by its code object, so a call below a
    frame a rule names needs one ``f_code`` however deep it is; a miss falls back to the full
    walk.
    """

    __slots__ = ("always", "candidates", "functions", "last", "modules")

    def __init__(self, rules: tuple[AllowRule, ...], key: str) -> None:
        self.candidates = tuple(rule for rule in rules if rule.matches_call(key))
        self.always = any(rule.where is None for rule in self.candidates)
        # made when a call with this key is judged: a rule naming no place allows it
        _mark(rule for rule in self.candidates if rule.where is None)
        self.modules: dict[str, int] = {}
        self.functions: dict[str, dict[str, bool]] = {}  # module -> raw qualname -> matched
        # (the module's globals, the instruction offset, the code) of the last frame matched
        self.last: tuple[dict[str, Any], int, CodeType] | None = None

    def by_module(self, module: str) -> int:
        verdict = _frames.NO_MATCH
        prefix = module + "."
        for rule in self.candidates:
            where = rule.where
            if where is None or rule.matches_frame(module, module):
                verdict = _frames.MATCH
                _mark((rule,))
                break
            literal = _literal_prefix(where)
            if literal == where:  # no wildcard: only "module.function" itself
                if where.startswith(prefix):
                    verdict = _frames.BY_CODE
            elif prefix.startswith(literal) or literal.startswith(prefix):
                verdict = _frames.BY_CODE
        if len(self.modules) < _MAX_ENTRIES:
            self.modules[module] = verdict
        return verdict

    def by_code(self, frame: FrameType) -> bool:
        code = frame.f_code
        globals_ = frame.f_globals
        module = globals_.get("__name__")
        if not isinstance(module, str):
            module = ""
        raw = getattr(code, "co_qualname", code.co_name)  # 3.10: no co_qualname
        functions = self.functions.get(module)
        if functions is None:
            functions = self.functions.setdefault(module, {})
        matched = functions.get(raw)
        if matched is None:
            qualname = f"{module}.{raw.replace('.<locals>', '')}"
            matching = [r for r in self.candidates if r.matches_frame(module, qualname)]
            _mark(matching)
            matched = bool(matching)
            if len(functions) < _MAX_ENTRIES:
                functions[raw] = matched
        if matched:
            self.last = (globals_, frame.f_lasti, code)
        return matched

    def remembered(self, frame: FrameType | None) -> bool:
        """A frame of the last match's module, at its offset, running its code, is on this
        stack (from ``frame`` outwards).  ``f_lineno`` would cost a line-table lookup."""
        last = self.last
        if last is None:
            return False
        globals_, offset, code = last
        while frame is not None:
            if frame.f_globals is globals_ and frame.f_lasti == offset and frame.f_code is code:
                return True
            frame = frame.f_back
        return False


_MAX_ENTRIES = 10_000  # module names, and functions per module, remembered per matcher
# Rules that allowed a call -> the usage epoch when last seen doing so.  A matcher marks a
# rule when it first finds the match (its answers are cached after that), so a new epoch
# drops the caches: every match is seen again.  A rule not marked since an epoch is stale.
_used: dict[AllowRule, int] = {}
_epoch = 0


def _mark(rules: Iterable[AllowRule]) -> None:
    """These rules allowed a call: seen at the current epoch."""
    for rule in rules:
        _used[rule] = _epoch


def begin_usage() -> int:
    """Start a new epoch (a ``guarded()`` block, a pytest session) and return it."""
    global _epoch, _rules, _matchers
    _epoch += 1
    _rules, _matchers = (), {}
    return _epoch


def unused(rules: Iterable[AllowRule], since: int = 0) -> list[AllowRule]:
    """The rules that allowed no call since epoch ``since``, in order."""
    return [rule for rule in dict.fromkeys(rules) if _used.get(rule, -1) < since]


# The matchers of the last rule set seen (the installed guard's), per call key: compared by
# identity, no id() (audited).
_rules: tuple[AllowRule, ...] = ()
_matchers: dict[str, _Matcher] = {}


def _matcher(rules: tuple[AllowRule, ...], key: str) -> _Matcher | None:
    """The cached matcher for ``key`` under ``rules``; ``None`` when no rule names ``key``."""
    global _rules, _matchers
    if rules is not _rules:
        _rules, _matchers = rules, {}
    matcher = _matchers.get(key)
    if matcher is None:
        matcher = _Matcher(rules, key)
        if len(_matchers) < _MAX_ENTRIES:
            _matchers[key] = matcher
    return matcher if matcher.candidates else None


def rules_allow(rules: tuple[AllowRule, ...], key: str, frame: FrameType | None) -> bool:
    """True when a rule allows ``key`` here; stops at the first frame that matches."""
    matcher = _matcher(rules, key) if rules else None
    if matcher is None:
        return False
    if matcher.always or matcher.remembered(frame):
        return True
    modules = matcher.modules
    frame = _frames.caller_frame(frame)
    while frame is not None:
        module = _frames.module_of(frame)
        verdict = modules.get(module)
        if verdict is None:
            verdict = matcher.by_module(module)
        if verdict and (verdict == _frames.MATCH or matcher.by_code(frame)):
            return True
        frame = frame.f_back
    return False


def exempt_or_allowed(rules: tuple[AllowRule, ...], key: str, frame: FrameType | None) -> bool:
    """``_frames.is_exempt(frame) or rules_allow(rules, key, frame)``, in one walk of the stack
    that stops at the first frame that decides (a rule naming the caller: its frame)."""
    if not rules:
        return _frames.exempt_or_matched(frame, None)
    matcher = _matchers.get(key) if rules is _rules else None
    if matcher is None or not matcher.candidates:
        matcher = _matcher(rules, key)
    if matcher is not None and (matcher.always or matcher.remembered(frame)):
        return True
    return _frames.exempt_or_matched(frame, matcher)
