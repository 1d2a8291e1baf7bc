"""File I/O: ``open()``, reads and writes of files opened on the loop, ``os`` file operations,
``pathlib.Path`` helpers, ``shutil`` and ``glob``.

Call keys:

- ``"open"`` for ``builtins.open`` (``io.open`` is the same object; names bound to it before
  install, such as ``tokenize``'s, are swapped too) and for the C ``open`` audit event;
- ``"os.<name>"``, ``"shutil.<name>"``, ``"glob.<name>"``, ``"pathlib.Path.<method>"``;
- ``"io.<Class>.<method>"`` for I/O on a file *opened on a loop thread*: ``open()`` there returns
  the usual layers built from Python subclasses of ``io.FileIO``/``io.Buffered*``/
  ``io.TextIOWrapper`` whose I/O methods are guarded (``_files_io``).  ``<Class>`` is the public
  ``io`` class of the object the user holds; iteration (``for line in f``) is ``__next__``.  Only
  the outermost layer is guarded (``f.buffer``/``f.raw`` are the plain C objects), so one user
  call is one report.  Files opened off the loop are untouched and cost nothing; files opened
  from a descriptor (``open(fd)``, ``os.fdopen``, subprocess pipes) are neither flagged nor
  guarded: they are often pipes that asyncio drives without blocking.

A call that was judged (raised, warned, allowed or exempt) runs with blocking allowed, so the
hooked calls it makes itself (``Path.read_text`` -> ``open`` -> ``read``, ``shutil.copytree`` ->
``os.mkdir``, ``os.walk`` -> ``os.scandir``) are never reported again under another key.
Generators (``os.walk``, ``Path.glob``, ``glob.iglob``...) are judged when called, before any
work is done; their iteration runs with blocking allowed (in warn mode the duration reported
covers the call, not the iteration).

Not hooked: ``os.path`` helpers (they call ``os.stat``, which is, and the location still points
at the user's line); descriptor-level calls (``os.read``/``os.write``/``os.fstat``, ``os.stat``
of an ``int``): they mostly serve pipes and sockets, and asyncio/subprocess internals use them.
"""

from __future__ import annotations

import io
from typing import Any

from .. import _wording
from .._format import positional, short
from .._spec import AuditHook, Family, Format, Hook, WouldBlock
from . import _files_wrap
from ._files_io import CATEGORY, FILE_METHODS

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)
__asyncguard_work__ = True  # the guard judging or reporting a call (_frames)

OPEN_HINT = (
    "open and read the file off the loop: `await asyncio.to_thread(path.read_text)` / "
    "`await sync_to_async(fn)()` (or anyio.Path / aiofiles)"
)

Args = tuple[Any, ...]
Kwargs = dict[str, Any]

# -- predicates and formats ------------------------------------------------------------------


def _first(args: Args, kwargs: Kwargs, name: str) -> Any:
    return args[0] if args else kwargs.get(name)


def _path_not_fd(name: str) -> WouldBlock:
    """An ``int`` is an open descriptor: ``os.stat(fd)``/``open(fd)`` walk no path."""
    return lambda args, kwargs: not isinstance(_first(args, kwargs, name), int)


def _fmt_open(args: Args, kwargs: Kwargs) -> str:
    shown = [short(_first(args, kwargs, "file"))]
    mode = args[1] if len(args) > 1 else kwargs.get("mode")
    if mode is not None:
        shown.append(short(mode))
    return ", ".join(shown)


def _fmt_path(extra: int = 0) -> Format:
    """``Path('a').rename('b')`` shows as ``pathlib.Path.rename('a', 'b')``; contents (the
    argument of ``write_text``) are never shown."""

    def fmt(args: Args, kwargs: Kwargs) -> str:
        return positional(args, limit=1 + extra)

    return fmt


def _in_memory(args: Args, kwargs: Kwargs) -> bool:
    streams = [*args[:2], *(kwargs[k] for k in ("fsrc", "fdst") if k in kwargs)]
    return all(isinstance(s, (io.BytesIO, io.StringIO)) for s in streams)


def _fmt_streams(args: Args, kwargs: Kwargs) -> str:
    streams = [*args[:2], *(kwargs[k] for k in ("fsrc", "fdst") if k in kwargs)]
    return ", ".join(short(getattr(s, "name", f"<{type(s).__name__}>")) for s in streams)


# -- the hooks -------------------------------------------------------------------------------


_CALL = _files_wrap.guarded_call
_ITER = _files_wrap.guarded_iterator


def _hook(
    module: str,
    attr: str,
    *,
    iterator: bool = False,
    would_block: WouldBlock | None = None,
    fmt: Format | None = None,
    method: bool = False,
    optional: bool = False,
    hint: str = _wording.FILE,
    factory: Any = None,
) -> Hook:
    return Hook(
        module,
        attr,
        f"{module}.{attr}",
        CATEGORY,
        hint,
        would_block=would_block,
        fmt=fmt,
        method=method,
        factory=factory or (_ITER if iterator else _CALL),
        optional=optional,
    )


_OS = (
    _hook("os", "stat", would_block=_path_not_fd("path")),
    _hook("os", "lstat", would_block=_path_not_fd("path")),
    _hook("os", "listdir"),
    _hook("os", "scandir"),
    _hook("os", "walk", iterator=True),
    _hook("os", "fwalk", iterator=True, optional=True),
    _hook("os", "open"),
    _hook("os", "mkdir"),
    _hook("os", "makedirs"),
    _hook("os", "remove"),
    _hook("os", "unlink"),
    _hook("os", "rmdir"),
    _hook("os", "removedirs"),
    _hook("os", "rename"),
    _hook("os", "renames"),
    _hook("os", "replace"),
    _hook("os", "access"),
    _hook("os", "chmod"),
    _hook("os", "chown", optional=True),
    _hook("os", "link", optional=True),
    _hook("os", "symlink", optional=True),
    _hook("os", "readlink", optional=True),
    _hook("os", "truncate", optional=True),
    _hook("os", "utime"),
    _hook("os", "fsync"),
    _hook("os", "fdatasync", optional=True),
    _hook("os", "statvfs", optional=True),
)

# (method, shown arguments after the path, returns a lazy iterator, only on some versions)
_PATH_METHODS: tuple[tuple[str, int, bool, bool], ...] = (
    ("open", 1, False, False),
    ("read_text", 0, False, False),
    ("read_bytes", 0, False, False),
    ("write_text", 0, False, False),
    ("write_bytes", 0, False, False),
    ("touch", 0, False, False),
    ("mkdir", 0, False, False),
    ("unlink", 0, False, False),
    ("rmdir", 0, False, False),
    ("rename", 1, False, False),
    ("replace", 1, False, False),
    ("symlink_to", 1, False, False),
    ("hardlink_to", 1, False, True),
    ("readlink", 0, False, True),
    ("chmod", 1, False, False),
    ("stat", 0, False, False),
    ("lstat", 0, False, False),
    ("exists", 0, False, False),
    ("is_file", 0, False, False),
    ("is_dir", 0, False, False),
    ("is_symlink", 0, False, False),
    ("samefile", 1, False, False),
    ("resolve", 0, False, False),
    ("iterdir", 0, True, False),
    ("glob", 1, True, False),
    ("rglob", 1, True, False),
    ("walk", 0, True, True),
)

_PATHLIB = tuple(
    _hook(
        "pathlib",
        f"Path.{name}",
        iterator=iterator,
        fmt=_fmt_path(extra),
        method=True,
        optional=optional,
        hint=OPEN_HINT if name in ("open", "read_text", "read_bytes") else _wording.FILE,
        factory=_files_wrap.guarded_path_open if name == "open" else None,
    )
    for name, extra, iterator, optional in _PATH_METHODS
)

_SHUTIL = (
    _hook("shutil", "copyfile"),
    _hook("shutil", "copy"),
    _hook("shutil", "copy2"),
    _hook("shutil", "copyfileobj", would_block=lambda a, k: not _in_memory(a, k), fmt=_fmt_streams),
    _hook("shutil", "copymode"),
    _hook("shutil", "copystat"),
    _hook("shutil", "copytree"),
    _hook("shutil", "move"),
    _hook("shutil", "rmtree"),
    _hook("shutil", "chown", optional=True),
    _hook("shutil", "disk_usage"),
    _hook("shutil", "which"),
    _hook("shutil", "make_archive"),
    _hook("shutil", "unpack_archive"),
)

_GLOB = (
    _hook("glob", "glob"),
    _hook("glob", "iglob", iterator=True),
)

_OPEN = Hook(
    "builtins",
    "open",
    "open",
    CATEGORY,
    OPEN_HINT,
    would_block=_path_not_fd("file"),
    fmt=_fmt_open,
    factory=_files_wrap.guarded_open,
)


# -- audit events raised in C (and by stdlib Python code) ------------------------------------


def _audit(event: str, shown: int = 1) -> AuditHook:
    """An event whose first ``shown`` arguments are the paths (then modes, descriptors...)."""
    return AuditHook(
        event,
        event,
        CATEGORY,
        _wording.FILE,
        fmt=lambda args: ", ".join(short(arg) for arg in args[:shown]),
    )


def _opens_a_path(args: Args) -> bool:
    """Not a descriptor, nor a pseudo file name: on 3.13 a failing ``compile()`` (``ast.parse``
    in ``traceback``'s caret anchors) tries to open ``'<unknown>'`` to quote the bad line."""
    path = args[0] if args else None
    if isinstance(path, int):
        return False
    return not (isinstance(path, str) and path.startswith("<") and path.endswith(">"))


def _fmt_open_event(args: Args) -> str:
    # ("path", "mode" or None for os.open, flags)
    shown = [short(args[0])] if args else []
    if len(args) > 1 and args[1] is not None:
        shown.append(short(args[1]))
    return ", ".join(shown)


_AUDIT = (
    AuditHook(
        "open",
        "open",
        CATEGORY,
        OPEN_HINT,
        would_block=_opens_a_path,
        fmt=_fmt_open_event,
    ),
    _audit("os.listdir"),
    _audit("os.scandir"),
    _audit("os.mkdir"),
    _audit("os.remove"),  # os.remove and os.unlink
    _audit("os.rmdir"),
    _audit("os.rename", 2),  # os.rename and os.replace
    _audit("os.chmod"),
    _audit("os.chown"),
    _audit("os.link", 2),
    _audit("os.symlink", 2),
    _audit("os.truncate"),
    _audit("os.utime"),
    _audit("shutil.copyfile", 2),
    _audit("shutil.copymode", 2),
    _audit("shutil.copystat", 2),
    _audit("shutil.copytree", 2),
    _audit("shutil.move", 2),
    _audit("shutil.rmtree"),
    _audit("shutil.chown"),
    _audit("shutil.make_archive"),
    _audit("shutil.unpack_archive"),
    _audit("glob.glob"),  # raised with "glob.glob/2" by every call: watch one of them
)

FAMILY = Family(
    name="files",
    description="open() and reads/writes of files opened on the loop, os/pathlib/shutil/glob",
    hooks=(_OPEN, *_OS, *_PATHLIB, *_SHUTIL, *_GLOB),
    audit=_AUDIT,
    extra=tuple(
        (f"io.{cls}.{name}", CATEGORY, _wording.FILE)
        for cls, names in FILE_METHODS.items()
        for name in names
    ),
)
