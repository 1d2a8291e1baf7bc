from __future__ import annotations

import _io
import builtins
import codecs
import functools
import glob
import importlib
import io
import linecache
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from io import open as early_bound_open
from pathlib import Path
from typing import Any

import pytest

import asyncguard
from asyncguard._format import short
from asyncguard._hooks import files
from conftest import (
    call_line,
    expect_clean_off_loop,
    expect_clean_on_loop,
    expect_violation,
    run_on,
)

BUILTIN_OPEN = builtins.open
# the C module behind ``os``: its functions are the originals, and install swaps no names in
# builtin modules, so only the audit events see calls through it
posix: Any = sys.modules.get("posix") or sys.modules["nt"]
# originals no module global holds, so no swap reaches them either
HIDDEN = {"iglob": glob.iglob, "copyfile": shutil.copyfile, "rmtree": shutil.rmtree}


@dataclass
class Tree:
    """A directory of real files, and open descriptors/streams made before any loop runs."""

    d: Path
    fd: int
    src: io.BufferedReader
    dst: io.BufferedWriter

    @property
    def a(self) -> Path:
        return self.d / "a.txt"

    @property
    def o(self) -> Path:
        return self.d / "o"

    @property
    def sub(self) -> Path:
        return self.d / "sub"

    @property
    def zip(self) -> Path:
        return self.d / "arch.zip"


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[Tree]:
    d = tmp_path / "tree"
    (d / "sub").mkdir(parents=True)
    (d / "empty").mkdir()
    (d / "a.txt").write_text("hello\nworld\n")
    (d / "b.bin").write_bytes(b"\x00\x01\x02\x03\n\x04\x05")
    (d / "sub" / "c.txt").write_text("c\n")
    (d / "link").symlink_to(d / "a.txt")
    shutil.make_archive(str(d / "arch"), "zip", root_dir=d / "sub")
    fd = os.open(d / "b.bin", os.O_RDWR)
    src = open(d / "b.bin", "rb")  # noqa: SIM115 - closed at teardown
    dst = open(d / "copy.bin", "wb")  # noqa: SIM115
    yield Tree(d, fd, src, dst)
    os.close(fd)
    src.close()
    dst.close()


Call = Callable[[Tree], Any]


def case(key: str, call: Call, *, skip: bool = False) -> Any:
    marks = [pytest.mark.skip(reason=f"{key} does not exist here")] if skip else []
    return pytest.param(key, call, id=key, marks=marks)


def _missing(owner: object, name: str) -> bool:
    return not hasattr(owner, name)


# One lambda per line: the violation must point at that line (``# <- blocks``).
CALLS = [
    case("open", lambda t: open(t.a).close()),  # <- blocks
    case("os.stat", lambda t: os.stat(t.a)),  # <- blocks
    case("os.lstat", lambda t: os.lstat(t.d / "link")),  # <- blocks
    case("os.listdir", lambda t: os.listdir(t.d)),  # <- blocks
    case("os.scandir", lambda t: os.scandir(t.d).close()),  # <- blocks
    case("os.walk", lambda t: list(os.walk(t.d))),  # <- blocks
    case("os.fwalk", lambda t: list(os.fwalk(t.d)), skip=_missing(os, "fwalk")),  # <- blocks
    case("os.open", lambda t: os.close(os.open(t.a, os.O_RDONLY))),  # <- blocks
    case("os.mkdir", lambda t: os.mkdir(t.d / "new")),  # <- blocks
    case("os.makedirs", lambda t: os.makedirs(t.d / "x" / "y")),  # <- blocks
    case("os.remove", lambda t: os.remove(t.a)),  # <- blocks
    case("os.unlink", lambda t: os.unlink(t.a)),  # <- blocks
    case("os.rmdir", lambda t: os.rmdir(t.d / "empty")),  # <- blocks
    case("os.removedirs", lambda t: os.removedirs(t.d / "empty")),  # <- blocks
    case("os.rename", lambda t: os.rename(t.a, t.d / "z.txt")),  # <- blocks
    case("os.renames", lambda t: os.renames(t.a, t.d / "n" / "z.txt")),  # <- blocks
    case("os.replace", lambda t: os.replace(t.a, t.d / "b.bin")),  # <- blocks
    case("os.access", lambda t: os.access(t.a, os.R_OK)),  # <- blocks
    case("os.chmod", lambda t: os.chmod(t.a, 0o644)),  # <- blocks
    case("os.chown", lambda t: os.chown(t.a, -1, -1), skip=_missing(os, "chown")),  # <- blocks
    case("os.link", lambda t: os.link(t.a, t.d / "hard")),  # <- blocks
    case("os.symlink", lambda t: os.symlink(t.a, t.d / "soft")),  # <- blocks
    case("os.readlink", lambda t: os.readlink(t.d / "link")),  # <- blocks
    case("os.truncate", lambda t: os.truncate(t.a, 0)),  # <- blocks
    case("os.utime", lambda t: os.utime(t.a)),  # <- blocks
    case("os.fsync", lambda t: os.fsync(t.fd)),  # <- blocks
    case("os.fdatasync", lambda t: os.fdatasync(t.fd), skip=_missing(os, "fdatasync")),  # <- blocks
    case("os.statvfs", lambda t: os.statvfs(t.d), skip=_missing(os, "statvfs")),  # <- blocks
    case("pathlib.Path.open", lambda t: (t.a).open().close()),  # <- blocks
    case("pathlib.Path.read_text", lambda t: (t.a).read_text()),  # <- blocks
    case("pathlib.Path.read_bytes", lambda t: (t.a).read_bytes()),  # <- blocks
    case("pathlib.Path.write_text", lambda t: (t.d / "w.txt").write_text("x")),  # <- blocks
    case("pathlib.Path.write_bytes", lambda t: (t.d / "w.bin").write_bytes(b"x")),  # <- blocks
    case("pathlib.Path.touch", lambda t: (t.d / "new").touch()),  # <- blocks
    case("pathlib.Path.mkdir", lambda t: (t.d / "new").mkdir()),  # <- blocks
    case("pathlib.Path.unlink", lambda t: (t.a).unlink()),  # <- blocks
    case("pathlib.Path.rmdir", lambda t: (t.d / "empty").rmdir()),  # <- blocks
    case("pathlib.Path.rename", lambda t: (t.a).rename(t.d / "z.txt")),  # <- blocks
    case("pathlib.Path.replace", lambda t: (t.a).replace(t.d / "b.bin")),  # <- blocks
    case("pathlib.Path.symlink_to", lambda t: (t.d / "s").symlink_to(t.a)),  # <- blocks
    case("pathlib.Path.hardlink_to", lambda t: (t.d / "h").hardlink_to(t.a)),  # <- blocks
    case("pathlib.Path.readlink", lambda t: (t.d / "link").readlink()),  # <- blocks
    case("pathlib.Path.chmod", lambda t: (t.a).chmod(0o644)),  # <- blocks
    case("pathlib.Path.stat", lambda t: (t.a).stat()),  # <- blocks
    case("pathlib.Path.lstat", lambda t: (t.d / "link").lstat()),  # <- blocks
    case("pathlib.Path.exists", lambda t: (t.a).exists()),  # <- blocks
    case("pathlib.Path.is_file", lambda t: (t.a).is_file()),  # <- blocks
    case("pathlib.Path.is_dir", lambda t: t.d.is_dir()),  # <- blocks
    case("pathlib.Path.is_symlink", lambda t: (t.d / "link").is_symlink()),  # <- blocks
    case("pathlib.Path.samefile", lambda t: (t.d / "link").samefile(t.a)),  # <- blocks
    case("pathlib.Path.resolve", lambda t: (t.d / "link").resolve()),  # <- blocks
    case("pathlib.Path.iterdir", lambda t: list(t.d.iterdir())),  # <- blocks
    case("pathlib.Path.glob", lambda t: sorted(t.d.glob("*.txt"))),  # <- blocks
    case("pathlib.Path.rglob", lambda t: sorted(t.d.rglob("*.txt"))),  # <- blocks
    case("pathlib.Path.walk", lambda t: list(t.d.walk()), skip=_missing(Path, "walk")),  # <- blocks
    case("shutil.copyfile", lambda t: shutil.copyfile(t.a, t.d / "c")),  # <- blocks
    case("shutil.copy", lambda t: shutil.copy(t.a, t.d / "c")),  # <- blocks
    case("shutil.copy2", lambda t: shutil.copy2(t.a, t.d / "c")),  # <- blocks
    case("shutil.copyfileobj", lambda t: shutil.copyfileobj(t.src, t.dst)),  # <- blocks
    case("shutil.copymode", lambda t: shutil.copymode(t.a, t.d / "b.bin")),  # <- blocks
    case("shutil.copystat", lambda t: shutil.copystat(t.a, t.d / "b.bin")),  # <- blocks
    case("shutil.copytree", lambda t: shutil.copytree(t.d / "sub", t.d / "sub2")),  # <- blocks
    case("shutil.move", lambda t: shutil.move(t.d / "sub", t.d / "moved")),  # <- blocks
    case("shutil.rmtree", lambda t: shutil.rmtree(t.d / "sub")),  # <- blocks
    case("shutil.chown", lambda t: shutil.chown(t.a, user=os.getuid())),  # <- blocks
    case("shutil.disk_usage", lambda t: shutil.disk_usage(t.d)),  # <- blocks
    case("shutil.which", lambda t: shutil.which("sh")),  # <- blocks
    case("shutil.make_archive", lambda t: shutil.make_archive(str(t.o), "zip", t.sub)),  # <- blocks
    case("shutil.unpack_archive", lambda t: shutil.unpack_archive(t.zip, t.d / "u")),  # <- blocks
    case("glob.glob", lambda t: glob.glob(str(t.d / "*"))),  # <- blocks
    case("glob.iglob", lambda t: list(glob.iglob(str(t.d / "**"), recursive=True))),  # <- blocks
]

OPEN_VARIANTS = [
    pytest.param(lambda t: open(str(t.a), "rb").close(), id="str-rb"),  # <- blocks
    pytest.param(lambda t: open(t.d / "new.txt", "w").close(), id="write"),  # <- blocks
    pytest.param(lambda t: open(t.a, "a", buffering=1).close(), id="append"),  # <- blocks
    pytest.param(lambda t: open(t.a, "rb", buffering=0).close(), id="unbuffered"),  # <- blocks
    pytest.param(lambda t: io.open(t.a).close(), id="io.open"),  # <- blocks  # noqa: UP020
    pytest.param(lambda t: early_bound_open(t.a).close(), id="early"),  # <- blocks  # noqa: UP020
    pytest.param(lambda t: codecs.open(str(t.a)).close(), id="codecs.open"),  # <- blocks
]


def _run(call: Call, t: Tree) -> Callable[[], Any]:
    return functools.partial(call, t)


@pytest.mark.parametrize(("key", "call"), CALLS)
def test_file_calls(loop_kind: str, mode: str, tree: Tree, key: str, call: Call) -> None:
    violation = expect_violation(
        loop_kind, mode, _run(call, tree), key, line_of=call, category="file"
    )
    assert violation.call_expr.startswith(f"{key}(")
    assert "off the loop" in violation.hint


@pytest.mark.parametrize(("key", "call"), CALLS)
def test_file_calls_off_loop(tree: Tree, key: str, call: Call) -> None:
    expect_clean_off_loop(_run(call, tree))


@pytest.mark.parametrize("call", OPEN_VARIANTS)
def test_open_variants(loop_kind: str, mode: str, tree: Tree, call: Call) -> None:
    expect_violation(loop_kind, mode, _run(call, tree), "open", line_of=call)


def test_open_message(tree: Tree) -> None:
    path = tree.d / "a.txt"

    def blocking() -> None:
        open(path, "rb").close()

    violation = expect_violation("main", "raise", blocking, "open")
    assert violation.call_expr == f"open({short(path)}, 'rb')"
    assert "`await asyncio.to_thread(path.read_text)`" in violation.message()
    assert "aiofiles" in violation.message()


def test_messages_hide_contents(tree: Tree) -> None:
    path = tree.d / "secret.txt"

    def blocking() -> None:
        path.write_text("hunter2")

    violation = expect_violation("main", "raise", blocking, "pathlib.Path.write_text")
    assert "hunter2" not in violation.message()
    assert violation.call_expr == f"pathlib.Path.write_text({short(path)}, …)"


def test_os_call_message(tree: Tree) -> None:
    def blocking() -> None:
        os.rename(tree.d / "a.txt", tree.d / "z.txt")

    violation = expect_violation("main", "raise", blocking, "os.rename")
    assert violation.call_expr == f"os.rename({short(tree.a)}, {short(tree.d / 'z.txt')})"


# -- calls that never block ------------------------------------------------------------------


def test_descriptor_calls_not_flagged(loop_kind: str, tree: Tree) -> None:
    def calls() -> None:
        os.stat(tree.fd)
        with open(tree.fd, "rb", closefd=False) as f:
            assert type(f) is io.BufferedReader  # opened from a descriptor: not guarded
            f.read(1)
        with os.fdopen(tree.fd, "rb", buffering=0, closefd=False) as raw:
            raw.read(1)

    expect_clean_on_loop(loop_kind, calls)


def test_copyfileobj_in_memory_not_flagged(loop_kind: str) -> None:
    expect_clean_on_loop(loop_kind, lambda: shutil.copyfileobj(io.BytesIO(b"x"), io.BytesIO()))


def test_closed_file_raises_as_usual(loop_kind: str, tree: Tree) -> None:
    def calls() -> None:
        with asyncguard.allow_blocking("open"):
            f = open(tree.d / "a.txt")  # noqa: SIM115
        f.close()
        with pytest.raises(ValueError, match="closed file"):
            f.read()

    expect_clean_on_loop(loop_kind, calls)


# -- files opened on the loop ----------------------------------------------------------------

Op = Callable[[Any], Any]


def io_case(key: str, open_mode: str, op: Op, buffering: int = -1, dirty: bool = False) -> Any:
    return pytest.param(key, open_mode, buffering, dirty, op, id=f"{key}-{open_mode}")


def raw_case(key: str, open_mode: str, op: Op) -> Any:
    return io_case(key, open_mode, op, buffering=0)


IO_CALLS = [
    io_case("io.TextIOWrapper.read", "r", lambda f: f.read()),  # <- blocks
    io_case("io.TextIOWrapper.readline", "r", lambda f: f.readline()),  # <- blocks
    io_case("io.TextIOWrapper.readlines", "r", lambda f: f.readlines()),  # <- blocks
    io_case("io.TextIOWrapper.__next__", "r", lambda f: next(f)),  # <- blocks
    io_case("io.TextIOWrapper.__next__", "r+", lambda f: list(f)),  # <- blocks
    io_case("io.TextIOWrapper.write", "w", lambda f: f.write("x")),  # <- blocks
    io_case("io.TextIOWrapper.write", "a", lambda f: f.write("x")),  # <- blocks
    io_case("io.TextIOWrapper.writelines", "w", lambda f: f.writelines(["a", "b"])),  # <- blocks
    io_case("io.TextIOWrapper.flush", "w", lambda f: f.flush(), dirty=True),  # <- blocks
    io_case("io.BufferedReader.read", "rb", lambda f: f.read(3)),  # <- blocks
    io_case("io.BufferedReader.read1", "rb", lambda f: f.read1(3)),  # <- blocks
    io_case("io.BufferedReader.readinto", "rb", lambda f: f.readinto(bytearray(3))),  # <- blocks
    io_case("io.BufferedReader.readinto1", "rb", lambda f: f.readinto1(bytearray(3))),  # <- blocks
    io_case("io.BufferedReader.readline", "rb", lambda f: f.readline()),  # <- blocks
    io_case("io.BufferedReader.readlines", "rb", lambda f: f.readlines()),  # <- blocks
    io_case("io.BufferedReader.peek", "rb", lambda f: f.peek(1)),  # <- blocks
    io_case("io.BufferedReader.__next__", "rb", lambda f: list(f)),  # <- blocks
    io_case("io.BufferedWriter.write", "wb", lambda f: f.write(b"x")),  # <- blocks
    io_case("io.BufferedWriter.write", "xb", lambda f: f.write(b"x")),  # <- blocks
    io_case("io.BufferedWriter.writelines", "ab", lambda f: f.writelines([b"x"])),  # <- blocks
    io_case("io.BufferedWriter.flush", "wb", lambda f: f.flush(), dirty=True),  # <- blocks
    io_case("io.BufferedRandom.read", "r+b", lambda f: f.read()),  # <- blocks
    io_case("io.BufferedRandom.readline", "w+b", lambda f: f.readline()),  # <- blocks
    io_case("io.BufferedRandom.write", "r+b", lambda f: f.write(b"x")),  # <- blocks
    io_case("io.BufferedRandom.flush", "a+b", lambda f: f.flush(), dirty=True),  # <- blocks
    raw_case("io.FileIO.read", "rb", lambda f: f.read(2)),  # <- blocks
    raw_case("io.FileIO.readall", "rb", lambda f: f.readall()),  # <- blocks
    raw_case("io.FileIO.readinto", "rb", lambda f: f.readinto(bytearray(2))),  # <- blocks
    raw_case("io.FileIO.readline", "rb", lambda f: f.readline()),  # <- blocks
    raw_case("io.FileIO.readlines", "rb", lambda f: f.readlines()),  # <- blocks
    raw_case("io.FileIO.__next__", "rb", lambda f: next(f)),  # <- blocks
    raw_case("io.FileIO.write", "wb", lambda f: f.write(b"x")),  # <- blocks
    raw_case("io.FileIO.writelines", "r+b", lambda f: f.writelines([b"x"])),  # <- blocks
]


def _on_file_opened_on_the_loop(
    path: Path, open_mode: str, buffering: int, dirty: bool, op: Op
) -> None:
    with asyncguard.allow_blocking("open"):
        f = open(path, open_mode, buffering=buffering)  # noqa: SIM115
    with f:
        if dirty:
            with asyncguard.allow_blocking():
                f.write("x" if "b" not in open_mode else b"x")
        op(f)


@pytest.mark.parametrize(("key", "open_mode", "buffering", "dirty", "op"), IO_CALLS)
def test_io_on_a_file_opened_on_the_loop(
    loop_kind: str,
    mode: str,
    tree: Tree,
    key: str,
    open_mode: str,
    buffering: int,
    dirty: bool,
    op: Op,
) -> None:
    path = tree.d / ("x.txt" if "x" in open_mode else "a.txt")
    call = functools.partial(_on_file_opened_on_the_loop, path, open_mode, buffering, dirty, op)
    violation = expect_violation(loop_kind, mode, call, key, line_of=op, category="file")
    assert violation.call_expr == f"{key}({short(path)})"
    assert violation.hint.startswith("do file I/O off the loop")


def test_iteration_in_a_for_loop(loop_kind: str, mode: str, tree: Tree) -> None:
    path = tree.d / "a.txt"
    lines: list[str] = []

    def blocking() -> None:
        with asyncguard.allow_blocking("open"):
            f = open(path)  # noqa: SIM115
        with f:
            for line in f:  # <- blocks
                lines.append(line)
                break

    expect_violation(loop_kind, mode, blocking, "io.TextIOWrapper.__next__")
    assert lines == ([] if mode == "raise" else ["hello\n"])


def test_warn_open_then_read_reports_both(loop_kind: str, tree: Tree) -> None:
    path = tree.d / "a.txt"

    async def main() -> str:
        with open(path) as f:
            return f.read()

    with asyncguard.guarded(mode="warn", log=False) as guard:
        assert run_on(loop_kind, main) == "hello\nworld\n"
    assert guard.calls == ["open", "io.TextIOWrapper.read"]
    assert [v.location[1] for v in guard.violations] == [call_line(main), call_line(main) + 1]
    assert all(v.duration is not None for v in guard.violations)


def test_close_is_never_flagged(loop_kind: str, tree: Tree) -> None:
    async def main() -> None:
        for open_mode in ("w", "wb", "r+b", "a"):
            with asyncguard.allow_blocking():
                f = open(tree.d / "a.txt", open_mode)  # noqa: SIM115
                f.write("data" if "b" not in open_mode else b"data")  # pending in the buffer
            f.close()
        with asyncguard.allow_blocking():
            g = open(tree.d / "a.txt", "rb+")  # noqa: SIM115
        with g:
            g.flush()  # nothing to write

    with asyncguard.guarded(mode="raise") as guard:
        run_on(loop_kind, main)
    assert guard.violations == []
    assert (tree.d / "a.txt").read_text() == "datadata"


def test_files_opened_on_the_loop_used_off_the_loop(tree: Tree) -> None:
    box: dict[str, Any] = {}

    async def main() -> None:
        with asyncguard.allow_blocking("open"):
            box["file"] = open(tree.d / "a.txt")  # noqa: SIM115

    with asyncguard.guarded(mode="raise") as guard:
        run_on("main", main)
        with box["file"] as f:
            assert f.read() == "hello\nworld\n"
            assert type(f).__module__ == "asyncguard._hooks._files_io"
    assert guard.violations == []


def test_files_opened_off_the_loop_are_untouched(tree: Tree) -> None:
    with asyncguard.guarded(mode="raise"):
        for open_mode, cls in (("r", io.TextIOWrapper), ("rb", io.BufferedReader)):
            with open(tree.d / "a.txt", open_mode) as f:
                assert type(f) is cls


def test_allow_file_io_by_key(loop_kind: str, tree: Tree) -> None:
    async def main() -> str:
        with asyncguard.allow_blocking("open", "io.TextIOWrapper.read"):
            f = open(tree.d / "a.txt")  # noqa: SIM115
        with f, asyncguard.allow_blocking("io.TextIOWrapper.*"):
            return f.read()

    with asyncguard.guarded(mode="raise") as guard:
        assert run_on(loop_kind, main) == "hello\nworld\n"
    assert guard.violations == []


def test_path_open_returns_a_guarded_file(loop_kind: str, mode: str, tree: Tree) -> None:
    def blocking() -> None:
        with asyncguard.allow_blocking("pathlib.Path.open"):
            f = tree.a.open()
        with f:
            f.read()  # <- blocks

    expect_violation(loop_kind, mode, blocking, "io.TextIOWrapper.read")


def test_only_the_outer_layer_is_guarded(tree: Tree) -> None:
    async def main() -> list[type]:
        with asyncguard.allow_blocking("open"), open(tree.a, "r+") as f:
            return [type(f).__mro__[1], type(f.buffer), type(f.buffer.raw)]

    with asyncguard.guarded(mode="raise"):
        assert run_on("main", main) == [io.TextIOWrapper, io.BufferedRandom, io.FileIO]


def test_allow_rule_for_open_then_read_is_flagged(tree: Tree) -> None:
    def blocking() -> None:
        f = open(tree.d / "a.txt")  # noqa: SIM115
        with f:
            f.readline()  # <- blocks

    expect_violation("main", "raise", blocking, "io.TextIOWrapper.readline", allow=["open"])


def test_file_keys_are_known() -> None:
    known = set(asyncguard.known_calls())
    for cls, names in files.FILE_METHODS.items():
        for name in names:
            assert f"io.{cls}.{name}" in known
    assert {"open", "os.stat", "pathlib.Path.read_text", "shutil.copy", "glob.glob"} <= known


# -- the guarded file behaves like the real one ----------------------------------------------

OPEN_ARGS = [
    pytest.param("r", {}, id="r"),
    pytest.param("rt", {"encoding": "latin-1", "errors": "replace"}, id="rt-latin1"),
    pytest.param("r", {"newline": ""}, id="newline-empty"),
    pytest.param("r", {"newline": "\r\n"}, id="newline-crlf"),
    pytest.param("w", {"encoding": "utf-8"}, id="w"),
    pytest.param("a", {}, id="a"),
    pytest.param("r+", {}, id="r+"),
    pytest.param("w+", {"buffering": 1}, id="w+-line-buffered"),
    pytest.param("x", {}, id="x"),
    pytest.param("rb", {}, id="rb"),
    pytest.param("wb", {"buffering": 16}, id="wb-small-buffer"),
    pytest.param("ab", {}, id="ab"),
    pytest.param("r+b", {}, id="r+b"),
    pytest.param("rb", {"buffering": 0}, id="rb-unbuffered"),
    pytest.param("ab", {"buffering": 0}, id="ab-unbuffered"),
]


def _describe(f: Any) -> dict[str, Any]:
    layers = [f, getattr(f, "buffer", None), getattr(getattr(f, "buffer", f), "raw", None)]
    facts: dict[str, Any] = {
        "bases": [
            [
                c
                for c in (
                    io.FileIO,
                    io.BufferedReader,
                    io.BufferedWriter,
                    io.BufferedRandom,
                    io.TextIOWrapper,
                    io.TextIOBase,
                    io.BufferedIOBase,
                    io.RawIOBase,
                )
                if isinstance(layer, c)
            ]
            for layer in layers
        ],
        "repr": repr(f),
        "name": f.name,
        "mode": f.mode,
        "closed": f.closed,
        "readable": f.readable(),
        "writable": f.writable(),
        "seekable": f.seekable(),
        "tell": f.tell(),
    }
    for attr in ("encoding", "errors", "newlines", "line_buffering", "write_through"):
        facts[attr] = getattr(f, attr, None)
    return facts


def _exercise(f: Any, binary: bool) -> list[Any]:
    seen: list[Any] = []
    if f.readable():
        seen += [f.readline(), f.read(3), list(f), f.read()]
        f.seek(0)
        seen += [f.readlines()]
        if binary and hasattr(f, "peek"):
            f.seek(0)
            seen += [f.peek(1)[:1], f.read1(2)]
    if f.writable():
        seen += [f.write(b"one\r\ntwo\n" if binary else "one\r\ntwo\n")]
        seen += [f.writelines([b"3\n"] if binary else ["3\n"]), f.flush(), f.tell()]
    return seen


@pytest.mark.parametrize(("open_mode", "kwargs"), OPEN_ARGS)
def test_guarded_file_behaves_like_open(tree: Tree, open_mode: str, kwargs: dict[str, Any]) -> None:
    content = "héllo\r\nwörld\nlast\r".encode()
    binary = "b" in open_mode

    def run(path: Path) -> tuple[dict[str, Any], list[Any], bytes]:
        if "x" not in open_mode:
            path.write_bytes(content)
        with open(path, open_mode, **kwargs) as f:
            facts = _describe(f)
            facts["repr"] = facts["repr"].replace(str(path), "PATH")
            facts["name"] = str(facts["name"]).replace(str(path), "PATH")
            seen = _exercise(f, binary)
            facts["newlines-after"] = getattr(f, "newlines", None)
        return facts, seen, path.read_bytes()

    expected = run(tree.d / "plain")
    box: dict[str, Any] = {}

    async def main() -> None:
        with asyncguard.allow_blocking():
            box["got"] = run(tree.d / "guarded")
            with open(tree.d / "probe", "w" if "x" not in open_mode else "x") as probe:
                box["type"] = type(probe)

    with asyncguard.guarded(mode="raise") as guard:
        run_on("main", main)
    assert guard.violations == []
    assert box["got"] == expected
    assert box["type"].__module__ == "asyncguard._hooks._files_io"


def test_guarded_file_on_a_tty_is_line_buffered() -> None:
    openpty = getattr(os, "openpty", None)
    if openpty is None:
        pytest.skip("no pseudo-terminals here")
    master, slave = openpty()
    try:
        name = os.ttyname(slave)
        with open(name, "w") as plain:
            expected = (plain.line_buffering, plain.isatty())
        box: dict[str, Any] = {}

        async def main() -> None:
            with asyncguard.allow_blocking(), open(name, "w") as f:
                box["got"] = (f.line_buffering, f.isatty())
                f.write("hi\n")  # line buffering: written at once
                box["read"] = os.read(master, 100)

        with asyncguard.guarded(mode="raise"):
            run_on("main", main)
        assert box["got"] == expected == (True, True)
        assert box["read"].replace(b"\r", b"") == b"hi\n"
    finally:
        os.close(master)
        os.close(slave)


def test_opener_and_errors_of_open(loop_kind: str, tree: Tree) -> None:
    calls: list[str] = []

    def opener(path: str, flags: int) -> int:
        calls.append(path)
        return os.open(path, flags)  # inside the judged open(): not reported again

    async def main() -> None:
        with asyncguard.allow_blocking("open"):
            with open(str(tree.d / "a.txt"), opener=opener) as f:
                assert type(f).__module__ == "asyncguard._hooks._files_io"
            for args, error in (
                (("rw",), "must have exactly one of|can't have read/write/append mode"),
                (("rb",), "binary mode doesn't take an encoding argument"),
                (("r", 0), "can't have unbuffered text I/O"),
                (("r", -1, None, None, "x"), "illegal newline value"),
            ):
                kwargs = {"encoding": "utf-8"} if args == ("rb",) else {}
                with pytest.raises(ValueError, match=error):
                    open(tree.d / "a.txt", *args, **kwargs)  # noqa: SIM115
            with pytest.raises(FileNotFoundError):
                open(tree.d / "missing.txt")  # noqa: SIM115
            with pytest.raises(LookupError):
                open(tree.d / "a.txt", encoding="no-such-codec")  # noqa: SIM115
            with pytest.raises(TypeError):
                open(tree.d / "a.txt", buffering="big")  # type: ignore[call-overload]  # noqa: SIM115

    with asyncguard.guarded(mode="raise") as guard:
        run_on(loop_kind, main)
    assert guard.violations == []
    assert calls == [str(tree.d / "a.txt")]


def test_binary_line_buffering_warns_as_usual(tree: Tree) -> None:
    async def main() -> None:
        with (
            asyncguard.allow_blocking("open"),
            pytest.warns(RuntimeWarning, match="line buffering") as record,
        ):
            open(tree.d / "a.txt", "rb", buffering=1).close()
        assert record[0].filename == __file__

    with asyncguard.guarded(mode="raise") as guard:
        run_on("main", main)
    assert guard.violations == []


def test_encoding_warning_points_at_the_caller(tmp_path: Path) -> None:
    script = tmp_path / "enc.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import asyncio, sys, warnings
            sys.path.insert(0, {str(Path(__file__).parent)!r})
            import asyncguard

            async def main():
                with warnings.catch_warnings(record=True) as seen:
                    warnings.simplefilter("always")
                    with asyncguard.allow_blocking("open"):
                        f = open(__file__)
                    f.close()
                print(type(f).__module__, [(w.category.__name__, w.lineno) for w in seen])

            with asyncguard.guarded(mode="raise"):
                asyncio.run(main())
            """
        )
    )
    out = subprocess.run(
        [sys.executable, "-X", "warn_default_encoding", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["asyncguard._hooks._files_io", "[('EncodingWarning',", "10)]"]


# -- nested hooks report once ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "call"),
    [
        ("pathlib.Path.read_text", lambda t: (t.a).read_text()),
        ("pathlib.Path.glob", lambda t: sorted(t.d.glob("**/*"))),
        ("shutil.copytree", lambda t: shutil.copytree(t.d, t.d.parent / "copy")),
        ("shutil.rmtree", lambda t: shutil.rmtree(t.d)),
        ("os.walk", lambda t: [names for _, _, names in os.walk(t.d)]),
    ],
)
def test_allowed_call_allows_what_it_calls(tree: Tree, key: str, call: Call) -> None:
    async def main() -> None:
        with asyncguard.allow_blocking(key):
            result = call(tree)
        assert result is None or result

    with asyncguard.guarded(mode="raise") as guard:
        run_on("main", main)
    assert guard.violations == []


def test_allow_rule_covers_what_the_call_does(tree: Tree) -> None:
    async def main() -> None:
        shutil.copytree(tree.d, tree.d.parent / "copy")

    with asyncguard.guarded(mode="raise", allow=["shutil.copytree"]) as guard:
        run_on("main", main)
    assert guard.violations == []
    assert (tree.d.parent / "copy" / "sub" / "c.txt").read_text() == "c\n"


def test_lazy_iteration_outside_the_allowed_block(tree: Tree) -> None:
    async def main() -> list[str]:
        with asyncguard.allow_blocking("os.walk", "pathlib.Path.rglob"):
            walker = os.walk(tree.d)
            other = os.walk(tree.d)
            paths = tree.d.rglob("*")
        assert next(paths)
        assert next(other)
        other.close()  # a generator's methods are there
        return sorted(name for _, _, names in walker for name in names)

    with asyncguard.guarded(mode="raise") as guard:
        names = run_on("main", main)
    assert guard.violations == []
    assert "c.txt" in names


# -- audit events: calls no attribute hook sees ----------------------------------------------


def expect_audit(loop_kind: str, mode: str, call: Call, t: Tree, key: str) -> asyncguard.Violation:
    """Like ``expect_violation`` for a call only an audit hook sees: warn mode reports it
    before it runs, untimed."""
    raised: list[asyncguard.BlockingCallError] = []

    async def main() -> None:
        try:
            call(t)
        except asyncguard.BlockingCallError as exc:
            raised.append(exc)

    with asyncguard.guarded(mode=mode) as guard:
        run_on(loop_kind, main)
    assert guard.calls == [key], [v.message() for v in guard.violations]
    violation = guard.violations[0]
    assert violation.location[:2] == (call.__code__.co_filename, call_line(call))
    assert violation.duration is None
    assert violation.category == "file"
    assert [e.violation for e in raised] == ([violation] if mode == "raise" else [])
    return violation


AUDITED = [
    case("open", lambda t: _io.open(t.a).close()),  # <- blocks
    case("open", lambda t: io.FileIO(t.a).close()),  # <- blocks
    case("open", lambda t: os.close(posix.open(t.a, os.O_RDONLY))),  # <- blocks
    case("os.listdir", lambda t: posix.listdir(t.d)),  # <- blocks
    case("os.scandir", lambda t: posix.scandir(t.d).close()),  # <- blocks
    case("os.mkdir", lambda t: posix.mkdir(t.d / "new")),  # <- blocks
    case("os.remove", lambda t: posix.unlink(t.a)),  # <- blocks
    case("os.rmdir", lambda t: posix.rmdir(t.d / "empty")),  # <- blocks
    case("os.rename", lambda t: posix.replace(t.a, t.d / "z")),  # <- blocks
    case("os.chmod", lambda t: posix.chmod(t.a, 0o600)),  # <- blocks
    case("os.symlink", lambda t: posix.symlink(t.a, t.d / "s")),  # <- blocks
    case("os.link", lambda t: posix.link(t.a, t.d / "h")),  # <- blocks
    case("os.truncate", lambda t: posix.truncate(t.a, 1)),  # <- blocks
    case("os.utime", lambda t: posix.utime(t.a)),  # <- blocks
    case("glob.glob", lambda t: HIDDEN["iglob"](str(t.d / "*"))),  # <- blocks
]


@pytest.mark.parametrize(("key", "call"), AUDITED)
def test_audit_events(loop_kind: str, mode: str, tree: Tree, key: str, call: Call) -> None:
    violation = expect_audit(loop_kind, mode, call, tree, key)
    assert violation.args.startswith("'/")


@pytest.mark.parametrize(
    ("key", "call"),
    [
        case("shutil.copyfile", lambda t: HIDDEN["copyfile"](t.a, t.d / "c")),  # <- blocks
        case("shutil.rmtree", lambda t: HIDDEN["rmtree"](t.d / "sub")),  # <- blocks
    ],
)
def test_audit_events_of_python_functions(loop_kind: str, tree: Tree, key: str, call: Call) -> None:
    expect_audit(loop_kind, "raise", call, tree, key)  # raised before any of their work


def test_audit_open_of_a_descriptor_not_flagged(loop_kind: str, tree: Tree) -> None:
    expect_clean_on_loop(loop_kind, lambda: _io.open(tree.fd, "rb", closefd=False).close())


def test_audit_events_off_loop(tree: Tree) -> None:
    expect_clean_off_loop(lambda: (posix.listdir(tree.d), _io.open(tree.d / "a.txt").close()))


# -- the interpreter's own file reads are never flagged -------------------------------------


def test_first_import_of_a_module(
    loop_kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    name = f"files_fresh_{loop_kind}"
    package = tmp_path / name
    package.mkdir()
    (package / "__init__.py").write_text("from . import inner\nVALUE = inner.VALUE + 1\n")
    (package / "inner.py").write_text("VALUE = 41\n")
    sys.path.insert(0, str(tmp_path))

    async def main() -> int:
        return int(importlib.import_module(name).VALUE)

    try:
        with asyncguard.guarded(mode="raise") as guard:
            assert run_on(loop_kind, main) == 42
        assert guard.violations == []
        assert (package / "__pycache__").is_dir()  # the bytecode was written on the loop too
    finally:
        sys.path.remove(str(tmp_path))
        for module in (name, f"{name}.inner"):
            sys.modules.pop(module, None)


def test_linecache_and_traceback(loop_kind: str, tmp_path: Path) -> None:
    name = f"files_failing_{loop_kind}"
    (tmp_path / f"{name}.py").write_text("def fail():\n    raise ValueError('from the module')\n")
    sys.path.insert(0, str(tmp_path))
    try:
        module = importlib.import_module(name)  # imported off the loop: its lines not cached
        linecache.clearcache()

        async def main() -> str:
            assert "raise ValueError" in linecache.getline(module.__file__, 2)
            linecache.clearcache()
            try:
                module.fail()
            except ValueError:
                return traceback.format_exc()
            return ""

        with asyncguard.guarded(mode="raise") as guard:
            text = run_on(loop_kind, main)
        assert guard.violations == []
        assert "raise ValueError('from the module')" in text
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)


def test_compile_error_of_a_pseudo_file_not_flagged(loop_kind: str) -> None:
    def calls() -> None:
        # the parser opens the "file" to quote the bad line (3.13: traceback's caret anchors)
        with pytest.raises(SyntaxError):
            compile("(\n1 +\n)", "<unknown>", "exec")

    expect_clean_on_loop(loop_kind, calls)


def test_exclude_files_family(tree: Tree) -> None:
    async def main() -> str:
        return (tree.d / "a.txt").read_text()

    with asyncguard.guarded(mode="raise", exclude=["files"]) as guard:
        assert builtins.open is BUILTIN_OPEN
        assert run_on("main", main) == "hello\nworld\n"
    assert guard.violations == []


def test_uninstall_restores_open_and_pathlib() -> None:
    before = (open, io.open, early_bound_open, pathlib.Path.read_text)
    in_dict = "exists" in vars(pathlib.Path)
    asyncguard.install()
    try:
        assert io.open is open is not before[0]
        assert shutil.rmtree.avoids_symlink_attacks in (True, False)  # type: ignore[attr-defined]
    finally:
        asyncguard.uninstall()
    assert (open, io.open, early_bound_open, pathlib.Path.read_text) == before
    assert ("exists" in vars(pathlib.Path)) is in_dict
