from __future__ import annotations

import getpass
import io
import os
import sys
import warnings
from builtins import input as early_bound_input

import pytest

import asyncguard
from conftest import expect_clean_off_loop, expect_violation, run_on

# a reference no module global holds: only the "builtins.input" audit event sees calls to it
HIDDEN = {"input": input}


@pytest.fixture
def stdin(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """``input()`` reads ``sys.stdin``: a line is waiting there."""
    stream = io.StringIO("typed\n")
    monkeypatch.setattr(sys, "stdin", stream)
    return stream


def _terminal_attached() -> bool:
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return False
    os.close(fd)
    return True


def test_input(loop_kind: str, mode: str, stdin: io.StringIO) -> None:
    lines: list[str] = []

    def blocking() -> None:
        lines.append(input("name? "))

    violation = expect_violation(loop_kind, mode, blocking, "input", category="console")
    assert violation.call_expr == "input('name? ')"
    assert "read input before starting the loop" in violation.message()
    if mode == "raise":
        assert lines == []
        assert stdin.read() == "typed\n"  # raised before reading
    else:
        assert lines == ["typed"]


def test_input_bound_before_install(loop_kind: str, mode: str, stdin: io.StringIO) -> None:
    def blocking() -> None:
        early_bound_input()

    violation = expect_violation(loop_kind, mode, blocking, "input")
    assert violation.call_expr == "input()"


def test_input_seen_by_the_audit_hook(loop_kind: str, stdin: io.StringIO) -> None:
    def blocking() -> None:
        HIDDEN["input"]("pin? ")

    violation = expect_violation(loop_kind, "raise", blocking, "input")
    assert violation.call_expr == "input('pin? ')"
    assert stdin.read() == "typed\n"


def test_input_audit_hook_warn_mode(loop_kind: str, stdin: io.StringIO) -> None:
    async def main() -> str:
        return str(HIDDEN["input"]())

    with asyncguard.guarded(mode="warn") as guard:
        assert run_on(loop_kind, main) == "typed"
    assert guard.calls == ["input"]


def test_input_off_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("one\ntwo\n"))
    lines: list[str] = []
    expect_clean_off_loop(lambda: lines.append(input()))
    expect_clean_off_loop(lambda: lines.append(input()), mode="warn")
    assert lines == ["one", "two"]


def test_getpass(loop_kind: str, mode: str, stdin: io.StringIO) -> None:
    if mode == "warn" and _terminal_attached():
        pytest.skip("a terminal is attached: getpass would wait for it")
    secrets: list[str] = []

    def blocking() -> None:
        secrets.append(getpass.getpass("password: "))

    with warnings.catch_warnings():
        # no terminal: getpass falls back to sys.stdin and says it cannot hide the echo
        warnings.simplefilter("ignore", getpass.GetPassWarning)
        violation = expect_violation(loop_kind, mode, blocking, "getpass.getpass")
    assert violation.call_expr == "getpass.getpass('password: ')"
    assert "ask for secrets before starting the loop" in violation.message()
    if mode == "raise":
        assert secrets == []
        assert stdin.read() == "typed\n"
    else:
        assert secrets == ["typed"]


def test_uninstall_restores_input() -> None:
    import builtins

    original = builtins.input
    with asyncguard.guarded():
        assert builtins.input is not original
        assert getattr(getpass.getpass, "__asyncguard_hook__", None) is not None
    assert builtins.input is original
    assert getattr(getpass.getpass, "__asyncguard_hook__", None) is None
