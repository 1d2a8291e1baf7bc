"""Stack inspection for the slow path: the user's frame, and internal callers to exempt.

Only runs once a call on a loop thread is about to be reported, never on the fast path.
"""

from __future__ import annotations

import functools
import os
import site
import sysconfig
import traceback
from collections.abc import Iterator
from types import FrameType
from typing import Protocol

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _library_prefixes() -> tuple[str, ...]:
    paths = set()
    for name in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(name)
        if path:
            paths.add(os.path.abspath(path) + os.sep)
    try:
        for path in [*site.getsitepackages(), site.getusersitepackages()]:
            paths.add(os.path.abspath(path) + os.sep)
    except AttributeError:  # pragma: no cover - old virtualenv's site.py
        pass
    return tuple(sorted(paths, key=len, reverse=True))


_LIBRARY_PREFIXES = _library_prefixes()

# Modules whose *own* calls to a hooked function are never violations: the interpreter's
# import system, the tools that read source for tracebacks, asyncio/uvloop internals (the
# loop's own selector wait, subprocess transports, executor shutdown), and the standard
# library's short internal lock waits (threading, concurrent.futures, logging).  A call is
# exempt when the nearest frame outside asyncguard belongs to one of them.
EXEMPT_CALLERS: tuple[str, ...] = (
    "importlib._bootstrap",
    "importlib._bootstrap_external",
    "zipimport",
    "linecache",
    "tokenize",
    "traceback",
    "asyncio",
    "uvloop",
    "threading",
    "concurrent.futures",
    "logging",
    "queue",
    "asgiref",
    "_pytest.assertion",
)

# Tools that run *inside* user frames (tracers, debuggers, coverage): a call anywhere below
# one of their frames is theirs, not the user's (blockbuster issues #5, #26, #60).
EXEMPT_STACK: tuple[str, ...] = (
    "pdb",
    "bdb",
    "cmd",
    "coverage",
    "pydevd",
    "debugpy",
    "_pydevd",
    # module-level code running while a module is imported (anyio reads its own sources)
    "importlib._bootstrap",
)


def module_of(frame: FrameType) -> str:
    """The name of the module whose code ``frame`` runs (``""`` if it has none)."""
    name = frame.f_globals.get("__name__")
    return name if isinstance(name, str) else ""


@functools.lru_cache(maxsize=16)
def _prefixes(names: tuple[str, ...]) -> tuple[frozenset[str], tuple[str, ...]]:
    return frozenset(names), tuple(name + "." for name in names)


def _matches(module: str, names: tuple[str, ...]) -> bool:
    """``module`` is one of ``names`` or inside one of those packages."""
    exact, prefixes = _prefixes(names)
    return module in exact or module.startswith(prefixes)


def is_library_file(filename: str) -> bool:
    if filename.startswith("<frozen") or filename.startswith(_PACKAGE_DIR):
        return True
    return filename.startswith(_LIBRARY_PREFIXES)


INTERNAL = "__asyncguard_internal__"  # a global of every asyncguard module
WORK = "__asyncguard_work__"  # a global of the modules that judge and report (hooks, engine)


def is_internal(frame: FrameType) -> bool:
    """This frame runs asyncguard's own code (its module carries the ``INTERNAL`` marker)."""
    return frame.f_globals.get(INTERNAL) is True


def caller_frame(frame: FrameType | None) -> FrameType | None:
    """The nearest frame that is not asyncguard's own."""
    while frame is not None and frame.f_globals.get(INTERNAL) is True:
        frame = frame.f_back
    return frame


# Standard-library helpers that only pass a call on: the caller that counts is the one that
# called them (pytest's assertion rewriter -> os.path.exists -> genericpath -> os.stat).
PASS_THROUGH: tuple[str, ...] = (
    "os",
    "posixpath",
    "ntpath",
    "genericpath",
    "stat",
    "pathlib",
    "shutil",
    "glob",
    "fnmatch",
    "tempfile",
    "io",
    "_pyio",
    "codecs",
)


PASS, CALLER, STACK = 1, 2, 4  # kind bits: PASS_THROUGH, EXEMPT_CALLERS, EXEMPT_STACK
_PASS, _CALLER, _STACK = PASS, CALLER, STACK

# A frame's kind depends only on its module's name, so it is cached by that name, read from
# ``frame.f_globals``.  Not by code object: ``frame.f_code`` raises the audit event
# ``object.__getattr__``, and with asyncguard's audit hook installed each access is a call into
# Python (~0.2 µs), on every frame of every walk; ``f_globals`` and ``f_back`` are not audited.
_kinds: dict[str, int] = {}
MAX_MODULES = 100_000  # bounded: module names of a process, not of its traffic


def module_kind(module: str) -> int:
    """The kind bits of a module name (cached)."""
    kind = _kinds.get(module)
    if kind is None:
        kind = (
            (PASS if _matches(module, PASS_THROUGH) else 0)
            | (CALLER if _matches(module, EXEMPT_CALLERS) else 0)
            | (STACK if _matches(module, EXEMPT_STACK) else 0)
        )
        if len(_kinds) < MAX_MODULES:
            _kinds[module] = kind
    return kind


def _kind(frame: FrameType) -> int:
    name = frame.f_globals.get("__name__")
    kind = _kinds.get(name) if isinstance(name, str) else None
    return kind if kind is not None else module_kind(module_of(frame))


def is_exempt(frame: FrameType | None) -> bool:
    """True when the call made from ``frame`` belongs to an exempt internal caller or tool."""
    return exempt_or_matched(frame, None)


class FrameMatcher(Protocol):
    """The frames an allow rule set names (``_allow``): ``modules`` maps a module name to
    ``NO_MATCH``, ``MATCH`` (every frame of it) or ``BY_CODE`` (ask ``by_code(frame)``);
    names not in it are asked of ``by_module``."""

    modules: dict[str, int]

    def by_module(self, module: str) -> int: ...

    def by_code(self, frame: FrameType) -> bool: ...


NO_MATCH, MATCH, BY_CODE = 0, 1, 2


def exempt_or_matched(frame: FrameType | None, matcher: FrameMatcher | None) -> bool:
    """``is_exempt(frame)``, or a frame from ``frame``'s caller outwards that ``matcher``
    matches: one walk, that stops at the first frame that decides."""
    frame = caller_frame(frame)
    kinds = _kinds
    modules = matcher.modules if matcher is not None else None
    first = True  # the pass-through frames, then the caller: exempt callers are asked here
    while frame is not None:
        module = frame.f_globals.get("__name__")
        if not isinstance(module, str):
            module = ""
        kind = kinds.get(module)
        if kind is None:
            kind = module_kind(module)
        if modules is not None:
            verdict = modules.get(module)
            if verdict is None:
                verdict = matcher.by_module(module)  # type: ignore[union-attr]
            if verdict and (verdict == MATCH or matcher.by_code(frame)):  # type: ignore[union-attr]
                return True
        if first:
            if kind & PASS:
                frame = frame.f_back
                continue
            if kind & CALLER:
                return True
            first = False
        if kind & STACK:
            return True
        frame = frame.f_back
    return False


def _is_library_frame(frame: FrameType) -> bool:
    if frame.f_globals.get(INTERNAL) is True:
        return True
    filename = frame.f_code.co_filename
    if filename.startswith("<") and not filename.startswith("<frozen"):
        # generated code (dataclasses' __init__, namedtuple, exec) belongs to the module
        # whose globals it runs with; ``python -c`` code has no __file__ and is the user's
        module_file = frame.f_globals.get("__file__")
        return isinstance(module_file, str) and is_library_file(module_file)
    return is_library_file(filename)


def user_location(frame: FrameType | None) -> tuple[str, int, str]:
    """``(filename, lineno, function)`` of the first frame in user code, else the caller."""
    first = caller_frame(frame)
    current = first
    while current is not None:
        if not _is_library_frame(current):
            return _describe(current)
        current = current.f_back
    if first is not None:
        return _describe(first)
    return ("<unknown>", 0, "<unknown>")


def function_name(frame: FrameType) -> str:
    """``Class.method`` or ``outer.inner`` (3.11+), without ``<locals>`` noise."""
    code = frame.f_code
    return str(getattr(code, "co_qualname", code.co_name)).replace(".<locals>", "")


def _describe(frame: FrameType) -> tuple[str, int, str]:
    return (frame.f_code.co_filename, frame.f_lineno or 0, function_name(frame))


def stack_from(frame: FrameType | None, limit: int = 64) -> traceback.StackSummary:
    """Outermost-first stack like ``traceback.extract_stack``; source lines are read lazily."""
    frame = caller_frame(frame)
    stack = traceback.StackSummary.extract(
        traceback.walk_stack(frame), limit=limit, lookup_lines=False
    )
    stack.reverse()
    return stack


def frame_names(frame: FrameType | None) -> Iterator[tuple[str, str]]:
    """``(module, module.qualname)`` of each frame from ``frame`` outwards, for allow rules."""
    frame = caller_frame(frame)
    while frame is not None:
        module = module_of(frame)
        yield module, f"{module}.{function_name(frame)}"
        frame = frame.f_back


def display_path(filename: str) -> str:
    """A path relative to the working directory when it lies below it."""
    try:
        relative = os.path.relpath(filename)
    except ValueError:  # pragma: no cover - another drive on Windows
        return filename
    return filename if relative.startswith("..") else relative


def is_guard_work(frame: FrameType) -> bool:
    """This frame is a hook wrapper or the guard judging, timing or reporting a call."""
    return frame.f_globals.get(WORK) is True


def is_exempt_stack_frame(frame: FrameType) -> bool:
    """This frame belongs to an import, a debugger or a tracer (see ``EXEMPT_STACK``)."""
    return bool(_kind(frame) & _STACK)


def has_guard_frame(frame: FrameType | None) -> bool:
    """True when one of our hook wrappers (or the engine) is on the stack: it already judged
    this call."""
    while frame is not None:
        if frame.f_globals.get(WORK) is True:
            return True
        frame = frame.f_back
    return False
