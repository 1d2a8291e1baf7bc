"""Wrappers for the files family (see ``files``): the generic wrapper's shape, except that a
call, once judged, runs with blocking allowed, and that iterators and files it returns on a loop
thread stay covered by that judgement (iterators) or are guarded themselves (files)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

from .._allowed import ALL, allowed_var
from .._judge import on_loop_call
from .._loop import get_running_loop
from .._spec import Hook, copy_metadata
from ._files_io import C_OPEN, open_file, stacklevel

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)
__asyncguard_work__ = True  # the guard judging or reporting a call (_frames)


class AllowedIterator:
    """The iterator a judged call returned (``os.walk``, ``Path.glob``): the call was judged
    before any work, so its lazy work runs with blocking allowed."""

    __slots__ = ("_iterator",)

    def __init__(self, iterator: Iterator[Any]) -> None:
        self._iterator = iterator

    def __iter__(self) -> AllowedIterator:
        return self

    def __next__(self) -> Any:
        __tracebackhide__ = __traceback_hide__ = True
        token = allowed_var.set(ALL)
        try:
            return next(self._iterator)
        finally:
            allowed_var.reset(token)

    def __getattr__(self, name: str) -> Any:  # send/throw/close of a generator
        return getattr(self._iterator, name)

    def __repr__(self) -> str:
        return repr(self._iterator)


def _finish(wrapper: Callable[..., Any], original: Any, hook: Hook) -> Callable[..., Any]:
    # ``shutil.rmtree.avoids_symlink_attacks`` and the like must survive the wrapping
    with contextlib.suppress(TypeError):  # builtins have no __dict__
        wrapper.__dict__.update(vars(original))
    copy_metadata(wrapper, original, hook)
    return wrapper


def _build(
    hook: Hook, original: Callable[..., Any], judged: Callable[..., Any], *, iterate: bool
) -> Callable[..., Any]:

    running_loop = get_running_loop
    allowed = allowed_var.get

    if iterate:

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            __tracebackhide__ = __traceback_hide__ = True
            if running_loop() is None:
                return original(*args, **kwargs)
            if allowed() is ALL:
                result = judged(*args, **kwargs)
            else:
                result = on_loop_call(hook, judged, args, kwargs)
            return AllowedIterator(result) if isinstance(result, Iterator) else result

    elif hook.key == "os.stat":
        # the hottest file hook: an exact signature lets the call be specialised
        # (-60 ns off the loop on 3.11, measured by bench/overhead.py)
        def wrapper(  # type: ignore[misc]
            path: Any, *, dir_fd: Any = None, follow_symlinks: Any = True
        ) -> Any:
            __tracebackhide__ = __traceback_hide__ = True
            if running_loop() is None or allowed() is ALL:
                if dir_fd is None and follow_symlinks is True:
                    return original(path)
                return original(path, dir_fd=dir_fd, follow_symlinks=follow_symlinks)
            if dir_fd is None and follow_symlinks is True:  # the defaults: no keywords to parse
                return on_loop_call(hook, judged, (path,), {})
            kwargs = {"dir_fd": dir_fd, "follow_symlinks": follow_symlinks}
            return on_loop_call(hook, judged, (path,), kwargs)

    else:

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            __tracebackhide__ = __traceback_hide__ = True
            if running_loop() is None:
                return original(*args, **kwargs)
            if allowed() is ALL:
                return judged(*args, **kwargs)
            return on_loop_call(hook, judged, args, kwargs)

    return _finish(wrapper, original, hook)


def guarded_call(hook: Hook, original: Callable[..., Any]) -> Callable[..., Any]:
    return _build(hook, original, original, iterate=False)


def guarded_iterator(hook: Hook, original: Callable[..., Any]) -> Callable[..., Any]:
    return _build(hook, original, original, iterate=True)


def guarded_open(hook: Hook, original: Callable[..., Any]) -> Callable[..., Any]:
    """``builtins.open``: on a loop thread, the file it returns is guarded (``_files_io``)."""

    def judged(*args: Any, **kwargs: Any) -> Any:
        return open_file(original, args, kwargs)

    return _build(hook, original, judged, iterate=False)


def guarded_path_open(hook: Hook, original: Callable[..., Any]) -> Callable[..., Any]:
    """``pathlib.Path.open``: from 3.11 it calls ``io.open`` (ours); 3.10 calls the C function
    through an accessor bound at import, so it is rebuilt here on top of the guarded open."""
    if sys.version_info >= (3, 11):
        return guarded_call(hook, original)
    import _io

    def judged(
        self: Any,
        mode: str = "r",
        buffering: int = -1,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
    ) -> Any:
        if "b" not in mode:
            encoding = _io.text_encoding(encoding, stacklevel())
        return open_file(C_OPEN, (self, mode, buffering, encoding, errors, newline), {})

    return _build(hook, original, judged, iterate=False)
