"""Files opened on a loop thread: the layers ``open()`` builds, from guarded Python subclasses.

The methods of ``_io`` types cannot be patched, so ``open()`` called on a loop thread (and let
through: warn mode, ``allow_blocking("open")``, an allow rule) builds its result the way
CPython's ``_io.open`` does (``_pyio.open`` is the readable copy), with the *outermost* layer a
subclass of the same ``io`` class whose I/O methods are guarded.  ``isinstance`` checks, mode,
name, encoding, newline handling, line buffering on ttys, append, ``opener`` and ``closefd``
behave as usual, and warnings point at the caller.  Anything unusual (invalid arguments,
3.10's ``"U"`` mode) goes to the original ``open``, which raises exactly as always.

``close()`` is never flagged: a flush it makes writes data whose ``write`` was already judged.
An explicit ``flush()`` is, when there is something to write.  Iteration is judged once per
file: after one ``next(f)`` went ahead (warn mode, allowed), the rest of ``for line in f`` does
too, rather than reporting every line.
"""

from __future__ import annotations

import _io
import io
import os
import sys
import warnings
from collections.abc import Callable
from types import FrameType
from typing import Any

from .. import _frames, _wording
from .._allowed import ALL, allowed_var
from .._format import short
from .._judge import call_allowed, on_loop_call
from .._loop import get_running_loop
from .._spec import Hook, WouldBlock, copy_metadata

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)
__asyncguard_work__ = True  # the guard judging or reporting a call (_frames)

CATEGORY = "file"

# Guarded I/O methods of files opened on the loop, by the public io class users see.
_RAW_READS = ("read", "readall", "readinto", "readline", "readlines", "__next__")
_READS = ("read", "read1", "readinto", "readinto1", "readline", "readlines", "peek", "__next__")
_WRITES = ("write", "writelines")
FILE_METHODS: dict[str, tuple[str, ...]] = {
    "FileIO": (*_RAW_READS, *_WRITES),
    "BufferedReader": _READS,
    "BufferedWriter": (*_WRITES, "flush"),
    "BufferedRandom": (*_READS, *_WRITES, "flush"),
    "TextIOWrapper": ("read", "readline", "readlines", "__next__", *_WRITES, "flush"),
}


C_OPEN: Callable[..., Any] = _io.open  # never patched: ``_io`` is a builtin module
_NEWLINES = (None, "", "\n", "\r", "\r\n")
_LINE_BUFFERING_WARNING = (
    "line buffering (buffering=1) isn't supported in binary mode, "
    "the default buffer size will be used"
)

Args = tuple[Any, ...]
Kwargs = dict[str, Any]


# -- guarded classes -------------------------------------------------------------------------


def _is_open(args: Args, kwargs: Kwargs) -> bool:
    try:
        return not args[0].closed  # a closed file raises ValueError as usual
    except ValueError:  # a detached TextIOWrapper
        return False


def _buffer_dirty(args: Args, kwargs: Kwargs) -> bool:
    stream = args[0]
    try:
        if stream.closed or stream._asyncguard_closing:
            return False
        return bool(stream.tell() > stream.raw.tell())  # pending writes
    except ValueError:
        return False
    except OSError:  # not seekable: assume there is something to write
        return True


def _text_writable(args: Args, kwargs: Kwargs) -> bool:
    stream = args[0]
    try:
        return not stream.closed and not stream._asyncguard_closing and bool(stream.writable())
    except ValueError:
        return False


def _fmt_file(args: Args, kwargs: Kwargs) -> str:
    try:
        return short(args[0].name)
    except Exception:  # detached, or no name
        return ""


def _method(
    hook: Hook, original: Callable[..., Any], judged: Callable[..., Any]
) -> Callable[..., Any]:
    running_loop = get_running_loop

    def method(self: Any, /, *args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = __traceback_hide__ = True
        if running_loop() is None:
            return original(self, *args, **kwargs)
        if allowed_var.get() is ALL:
            return judged(self, *args, **kwargs)
        return on_loop_call(hook, judged, (self, *args), kwargs)

    return method


def _next_method(
    hook: Hook, original: Callable[..., Any], judged: Callable[..., Any]
) -> Callable[..., Any]:
    """``for line in f`` is one operation: once a ``next()`` went ahead (warn mode, allowed),
    the rest of the iteration does too, instead of one report per line."""
    running_loop = get_running_loop

    def method(self: Any, /) -> Any:
        __tracebackhide__ = __traceback_hide__ = True
        if running_loop() is None:
            return original(self)
        if allowed_var.get() is ALL:
            return judged(self)
        if self._asyncguard_iterating:  # readline() underneath is part of this iteration
            return call_allowed(judged, (self,), {})
        line = on_loop_call(hook, judged, (self,), {})
        self._asyncguard_iterating = True
        return line

    return method


def _guarded_method(base: type, name: str, would_block: WouldBlock) -> Callable[..., Any]:
    original = getattr(base, name)
    key = f"io.{base.__name__}.{name}"
    hook = Hook(
        "io",
        f"{base.__name__}.{name}",
        key,
        CATEGORY,
        _wording.FILE,
        would_block=would_block,
        fmt=_fmt_file,
        method=True,
    )
    build = _next_method if name == "__next__" else _method
    method = build(hook, original, original)
    copy_metadata(method, original, hook)
    return method


def _guarded_class(base: Any) -> type:
    """``base``'s subclass (same name) with the I/O methods of ``FILE_METHODS`` guarded."""

    def close(self: Any) -> None:
        self._asyncguard_closing = True
        try:
            base.close(self)
        finally:
            self._asyncguard_closing = False

    def __repr__(self: Any) -> str:  # noqa: N807
        # ``<_io.TextIOWrapper name='a.txt' ...>`` as before; C uses the type's bare name
        text: str = base.__repr__(self)
        if text.startswith(f"<{base.__name__}"):
            text = "<_io." + text[1:]
        return text

    namespace: dict[str, Any] = {
        "__module__": __name__,
        "__qualname__": base.__name__,
        "__doc__": base.__doc__,
        "_asyncguard_closing": False,
        "_asyncguard_iterating": False,
        "close": close,
        "__repr__": __repr__,
    }
    for name in FILE_METHODS[base.__name__]:
        if name == "flush":
            check = _text_writable if base is io.TextIOWrapper else _buffer_dirty
        else:
            check = _is_open
        namespace[name] = _guarded_method(base, name, check)
    return type(base.__name__, (base,), namespace)


FileIO = _guarded_class(io.FileIO)
BufferedReader = _guarded_class(io.BufferedReader)
BufferedWriter = _guarded_class(io.BufferedWriter)
BufferedRandom = _guarded_class(io.BufferedRandom)
TextIOWrapper = _guarded_class(io.TextIOWrapper)


# -- open() ----------------------------------------------------------------------------------


def _bind(
    file: Any,
    mode: Any = "r",
    buffering: Any = -1,
    encoding: Any = None,
    errors: Any = None,
    newline: Any = None,
    closefd: Any = True,
    opener: Any = None,
) -> tuple[Any, ...]:
    return file, mode, buffering, encoding, errors, newline, closefd, opener


def _raw_mode(mode: Any, buffering: Any, encoding: Any, errors: Any, newline: Any) -> str | None:
    """The ``FileIO`` mode for a plain valid call, else ``None`` (left to the original)."""
    if not isinstance(mode, str) or not isinstance(buffering, int):
        return None
    modes = set(mode)
    kinds = modes & set("rwax")
    if len(modes) != len(mode) or not modes <= set("rwaxb+t") or len(kinds) != 1:
        return None
    if not all(value is None or isinstance(value, str) for value in (encoding, errors, newline)):
        return None
    if newline not in _NEWLINES:
        return None
    if "b" in modes:
        if "t" in modes or (encoding, errors, newline) != (None, None, None):
            return None
    elif buffering == 0:
        return None  # "can't have unbuffered text I/O"
    return kinds.pop() + ("+" if "+" in modes else "")


def stacklevel() -> int:
    """``warnings`` stack level, seen from the caller, of the first frame outside asyncguard."""
    frame: FrameType | None = sys._getframe(1)
    level = 1
    while frame is not None and _frames.is_internal(frame):
        frame = frame.f_back
        level += 1
    return level


def open_file(original: Callable[..., Any], args: Args, kwargs: Kwargs) -> Any:
    """``open(*args, **kwargs)`` with its outermost layer guarded."""
    __tracebackhide__ = __traceback_hide__ = True
    try:
        file, mode, buffering, encoding, errors, newline, closefd, opener = _bind(*args, **kwargs)
    except TypeError:
        return original(*args, **kwargs)
    if isinstance(file, int) or not isinstance(file, (str, bytes, os.PathLike)):
        return original(*args, **kwargs)
    try:
        file = os.fspath(file)  # as _io.open: ``f.name`` is the str, not the Path
    except TypeError:
        return original(*args, **kwargs)
    raw_mode = _raw_mode(mode, buffering, encoding, errors, newline)
    if raw_mode is None:
        return original(*args, **kwargs)
    binary = "b" in mode
    if binary and buffering == 1:
        warnings.warn(_LINE_BUFFERING_WARNING, RuntimeWarning, stacklevel())
    if buffering == 0:
        return FileIO(file, raw_mode, closefd, opener=opener)
    raw = io.FileIO(file, raw_mode, closefd, opener=opener)
    result: Any = raw
    try:
        line_buffering = False
        if buffering == 1 or (buffering < 0 and raw.isatty()):
            buffering = -1
            line_buffering = True
        if buffering < 0:
            buffering = getattr(raw, "_blksize", io.DEFAULT_BUFFER_SIZE)
        plain: type
        guarded: type
        if "+" in raw_mode:
            plain, guarded = io.BufferedRandom, BufferedRandom
        elif "r" in raw_mode:
            plain, guarded = io.BufferedReader, BufferedReader
        else:
            plain, guarded = io.BufferedWriter, BufferedWriter
        if binary:
            result = guarded(raw, buffering)
            return result
        result = plain(raw, buffering)
        if encoding is None and sys.flags.warn_default_encoding:
            encoding = _io.text_encoding(None, stacklevel())
        text = TextIOWrapper(result, encoding, errors, newline, line_buffering)
        result = text
        text.mode = mode
        return text
    except BaseException:
        result.close()
        raise
