from __future__ import annotations

import asyncio
import contextlib
import os
import posix
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from subprocess import run as early_bound_run
from typing import Any

import pytest

import asyncguard
from asyncguard._format import short
from conftest import expect_clean_off_loop, expect_clean_on_loop, expect_violation, run_on

PY = sys.executable
QUICK = [PY, "-c", "pass"]
# a child that runs until its stdin is closed, then lingers a little
UNTIL_EOF = [PY, "-c", "import sys, time; sys.stdout.write(sys.stdin.read()); time.sleep(0.05)"]

# Every "subprocess.Popen" audit event seen while recording: the event is raised before the
# fork/spawn, so none means no child was ever started.
_spawn_events: list[tuple[Any, ...]] = []
_recording: list[bool] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _recording and event in ("subprocess.Popen", "os.posix_spawn", "os.fork"):
        _spawn_events.append((event, *args))


sys.addaudithook(_audit)


@pytest.fixture
def record_spawns() -> Iterator[list[tuple[Any, ...]]]:
    _spawn_events.clear()
    _recording.append(True)
    try:
        yield _spawn_events
    finally:
        _recording.clear()


def spawn_raw() -> int:
    """A child the tests reap themselves (a Popen would not know it was reaped)."""
    return os.posix_spawn(PY, QUICK, os.environ)


def reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):  # already reaped by the call under test
        os.waitpid(pid, 0)


# -- subprocess.Popen -------------------------------------------------------------------------


def test_popen_raises_before_the_fork(
    loop_kind: str, mode: str, tmp_path: Path, record_spawns: list[tuple[Any, ...]]
) -> None:
    marker = tmp_path / "child-ran"
    # argv[0] is a short name and `executable` the interpreter: the message abridges the
    # argument list to 60 characters, and sys.executable (in the checkout's .nox venv) and
    # tmp_path can be that long on their own
    argv = ["python", "-c", f"open({str(marker)!r}, 'w').close()"]
    procs: list[subprocess.Popen[bytes]] = []

    def blocking() -> None:
        procs.append(subprocess.Popen(argv, executable=PY))

    try:
        violation = expect_violation(
            loop_kind, mode, blocking, "subprocess.Popen", category="subprocess"
        )
        assert violation.call_expr.startswith("subprocess.Popen(['python', '-c', \"open(")
        assert violation.call_expr == f"subprocess.Popen({short(argv)})"
        assert "asyncio.create_subprocess_exec" in violation.message()
        if mode == "raise":
            assert procs == []
            assert record_spawns == []  # no fork, no spawn: nothing was started
            assert not marker.exists()
        else:
            assert procs[0].wait() == 0
            assert marker.exists()
            assert record_spawns  # the control: this command does start a child
    finally:
        for proc in procs:  # even after a failed assertion: no child left to Popen.__del__
            proc.wait()


def test_popen_context_manager_and_subclass(loop_kind: str, mode: str) -> None:
    class MyPopen(subprocess.Popen[bytes]):
        pass

    procs: list[subprocess.Popen[bytes]] = []

    def blocking() -> None:
        procs.append(MyPopen(QUICK))

    try:
        expect_violation(loop_kind, mode, blocking, "subprocess.Popen")
    finally:
        for proc in procs:
            proc.wait()


@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("run", QUICK),
        ("call", QUICK),
        ("check_call", QUICK),
        ("check_output", QUICK),
        ("getoutput", "exit 0"),
        ("getstatusoutput", "exit 0"),
    ],
)
def test_subprocess_functions(loop_kind: str, mode: str, name: str, command: Any) -> None:
    def blocking() -> None:
        getattr(subprocess, name)(command)

    violation = expect_violation(loop_kind, mode, blocking, f"subprocess.{name}")
    assert violation.call_expr == f"subprocess.{name}({short(command)})"


def test_run_message(loop_kind: str) -> None:
    def blocking() -> None:
        subprocess.run(["true", "--flag"], check=False)

    violation = expect_violation(loop_kind, "raise", blocking, "subprocess.run")
    assert violation.call_expr == "subprocess.run(['true', '--flag'])"
    assert violation.message().startswith(
        "subprocess.run(['true', '--flag']) would block the event loop in "
    )
    assert "use `await asyncio.create_subprocess_exec(...)`" in violation.message()


def test_run_bound_before_install(loop_kind: str, mode: str) -> None:
    def blocking() -> None:
        early_bound_run(QUICK)

    expect_violation(loop_kind, mode, blocking, "subprocess.run")


def test_inner_calls_ride_along_with_an_allowed_call(loop_kind: str) -> None:
    """Allowing ``subprocess.run`` allows the Popen/wait/os.posix_spawn it makes itself."""

    def call() -> None:
        with asyncguard.allow_blocking("subprocess.run"):
            subprocess.run(QUICK, capture_output=True)

    expect_clean_on_loop(loop_kind, call)


def test_allow_rule_covers_inner_calls(loop_kind: str) -> None:
    async def main() -> None:
        subprocess.check_output(QUICK)

    with asyncguard.guarded(mode="raise", allow=["subprocess.check_output"]) as guard:
        run_on(loop_kind, main)
    assert guard.violations == []


# -- Popen.wait / communicate: only a running child makes them wait -----------------------------


def test_popen_wait_on_running_child(loop_kind: str, mode: str) -> None:
    proc = subprocess.Popen(UNTIL_EOF, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)

    def blocking() -> None:
        with asyncguard.allow_blocking():
            proc.stdin.close()  # type: ignore[union-attr]
        proc.wait()  # <- blocks

    try:
        violation = expect_violation(loop_kind, mode, blocking, "subprocess.Popen.wait")
        assert violation.call_expr == "subprocess.Popen.wait()"
    finally:
        proc.wait()


def test_popen_communicate_on_running_child(loop_kind: str, mode: str) -> None:
    proc = subprocess.Popen(UNTIL_EOF, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    results: list[Any] = []

    def blocking() -> None:
        results.append(proc.communicate(b"data"))

    try:
        expect_violation(loop_kind, mode, blocking, "subprocess.Popen.communicate")
    finally:
        if mode == "raise":
            results.append(proc.communicate(b"data"))
    assert results == [(b"data", None)]


def test_popen_finished_child_is_not_blocking(loop_kind: str) -> None:
    proc = subprocess.Popen(QUICK, stdout=subprocess.PIPE)
    proc.wait()

    def call() -> None:
        assert proc.wait() == 0
        assert proc.communicate() == (b"", None)

    expect_clean_on_loop(loop_kind, call)


def test_popen_finished_but_not_yet_reaped_is_not_blocking(loop_kind: str) -> None:
    proc = subprocess.Popen(QUICK)
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # exited, still a zombie

    expect_clean_on_loop(loop_kind, lambda: proc.wait())
    assert proc.returncode == 0


def test_popen_wait_timeout_zero_is_a_poll(loop_kind: str) -> None:
    proc = subprocess.Popen(UNTIL_EOF, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)

    def call() -> None:
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=0)

    try:
        expect_clean_on_loop(loop_kind, call)
    finally:
        proc.communicate()


def test_popen_with_block_waits(loop_kind: str, mode: str) -> None:
    def blocking() -> None:
        with asyncguard.allow_blocking("subprocess.Popen"):
            proc = subprocess.Popen(UNTIL_EOF, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        with asyncguard.allow_blocking():
            proc.stdin.close()  # type: ignore[union-attr]
        try:
            with proc:  # <- blocks
                pass
        finally:
            with asyncguard.allow_blocking():
                proc.wait()

    expect_violation(loop_kind, mode, blocking, "subprocess.Popen.wait")


# -- os.system, os.popen, os.posix_spawn*, os.spawn* ---------------------------------------------


def test_os_system(loop_kind: str, mode: str) -> None:
    def blocking() -> None:
        assert os.system("exit 0") == 0

    violation = expect_violation(loop_kind, mode, blocking, "os.system", category="subprocess")
    assert violation.call_expr == "os.system('exit 0')"


def test_os_popen(loop_kind: str, mode: str) -> None:
    streams: list[Any] = []

    def blocking() -> None:
        streams.append(os.popen("echo hi"))

    try:
        violation = expect_violation(loop_kind, mode, blocking, "os.popen")
        assert violation.call_expr == "os.popen('echo hi')"
        for stream in streams:
            assert stream.read() == "hi\n"
            assert stream.close() is None
    finally:
        for stream in streams:  # (closed already, unless an assertion failed)
            stream.close()


@pytest.mark.parametrize("name", ["posix_spawn", "posix_spawnp"])
def test_os_posix_spawn(loop_kind: str, mode: str, name: str) -> None:
    pids: list[int] = []

    def blocking() -> None:
        pids.append(getattr(os, name)(PY, QUICK, os.environ))

    try:
        violation = expect_violation(loop_kind, mode, blocking, f"os.{name}")
        # the program's path, abridged like every argument (sys.executable can be long)
        assert violation.call_expr == f"os.{name}({short(PY)})"
    finally:
        for pid in pids:
            reap(pid)


def test_os_spawnv(loop_kind: str, mode: str) -> None:
    def blocking() -> None:
        assert os.spawnv(os.P_WAIT, PY, QUICK) == 0

    with warnings.catch_warnings():
        # 3.12+: fork() in a process with threads (the loop-worker) warns
        warnings.simplefilter("ignore", DeprecationWarning)
        violation = expect_violation(loop_kind, mode, blocking, "os.spawnv")
    assert violation.call_expr == f"os.spawnv({short(PY)})"


def test_os_spawnlp(loop_kind: str, mode: str) -> None:
    def blocking() -> None:
        assert os.spawnlp(os.P_WAIT, "true", "true") == 0

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        violation = expect_violation(loop_kind, mode, blocking, "os.spawnlp")
    assert violation.call_expr == "os.spawnlp('true')"


def test_os_system_seen_by_the_audit_hook(loop_kind: str) -> None:
    """``posix.system`` is the C function itself: no attribute hook, the audit event sees it."""

    def blocking() -> None:
        posix.system("exit 0")

    violation = expect_violation(loop_kind, "raise", blocking, "os.system")
    assert violation.call_expr == "os.system('exit 0')"


def test_audit_hook_warn_mode(loop_kind: str) -> None:
    async def main() -> None:
        assert posix.system("exit 0") == 0

    with asyncguard.guarded(mode="warn") as guard:
        run_on(loop_kind, main)
    assert guard.calls == ["os.system"]
    assert guard.violations[0].location[2].endswith("main")


# -- os.wait* ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["wait", "waitpid", "wait3", "wait4", "waitid"])
def test_os_wait(loop_kind: str, mode: str, name: str) -> None:
    pid = spawn_raw()

    def wait() -> None:
        os.wait()

    def waitpid() -> None:
        os.waitpid(pid, 0)

    def wait3() -> None:
        os.wait3(0)

    def wait4() -> None:
        os.wait4(pid, 0)

    def waitid() -> None:
        os.waitid(os.P_PID, pid, os.WEXITED)

    blocking = {"wait": wait, "waitpid": waitpid, "wait3": wait3, "wait4": wait4}.get(name, waitid)
    try:
        violation = expect_violation(loop_kind, mode, blocking, f"os.{name}")
        assert "os.WNOHANG" in violation.message()
    finally:
        reap(pid)


@pytest.mark.parametrize("name", ["waitpid", "wait3", "wait4", "waitid"])
def test_os_wait_wnohang_is_not_blocking(loop_kind: str, name: str) -> None:
    proc = subprocess.Popen(UNTIL_EOF, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    pid = proc.pid

    def call() -> None:
        if name == "waitpid":
            assert os.waitpid(pid, os.WNOHANG) == (0, 0)
        elif name == "wait3":
            os.wait3(os.WNOHANG)
        elif name == "wait4":
            assert os.wait4(pid, os.WNOHANG)[0] == 0
        else:
            assert os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG) is None

    try:
        expect_clean_on_loop(loop_kind, call)
    finally:
        proc.communicate()


# -- asyncio's own subprocesses, and off the loop ------------------------------------------------


def test_asyncio_subprocess_is_not_flagged(loop_kind: str) -> None:
    async def main() -> None:
        proc = await asyncio.create_subprocess_exec(PY, "-c", "print('hi')", stdout=subprocess.PIPE)
        assert await proc.communicate() == (b"hi\n", None)
        shell = await asyncio.create_subprocess_shell("exit 3")
        assert await shell.wait() == 3

    with asyncguard.guarded(mode="raise") as guard:
        run_on(loop_kind, main)
    assert guard.violations == []


def test_off_loop_is_not_flagged() -> None:
    def call() -> None:
        subprocess.run(QUICK, check=True)
        assert subprocess.check_output([PY, "-c", "print(1)"]) == b"1\n"
        proc = subprocess.Popen(QUICK)
        assert proc.wait() == 0
        assert os.system("exit 0") == 0
        with os.popen("echo hi") as stream:
            assert stream.read() == "hi\n"
        pid = spawn_raw()
        assert os.waitpid(pid, 0)[0] == pid

    expect_clean_off_loop(call)
    expect_clean_off_loop(call, mode="warn")


def test_uninstall_restores_originals() -> None:
    originals = (subprocess.Popen.__init__, subprocess.run, os.system, os.waitpid, os.popen)
    with asyncguard.guarded():
        assert subprocess.run is not originals[1]
        assert getattr(os.waitpid, "__asyncguard_hook__", None) is not None
    assert (subprocess.Popen.__init__, subprocess.run, os.system, os.waitpid, os.popen) == originals
    assert "__init__" in vars(subprocess.Popen)
