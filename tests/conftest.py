"""Shared fixtures: every hook is tested on a main-thread loop, a loop on a worker thread and
uvloop, in raise and in warn mode, and off the loop."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, NoReturn

import pytest

import asyncguard

pytest_plugins = ["services", "djangotest.fixtures"]

LOOP_KINDS = ["main", "thread", "uvloop"]


def run_on(kind: str, main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run ``main()`` to completion on a loop of the given kind; return or re-raise its result."""
    if kind == "main":
        return asyncio.run(main())
    if kind == "uvloop":
        try:
            import uvloop
        except ImportError:
            skip_service("uvloop is not installed (pip install uvloop)")
        return uvloop.run(main())
    if kind == "thread":
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["result"] = asyncio.run(main())
            except BaseException as exc:  # re-raised on the test thread
                box["error"] = exc

        thread = threading.Thread(target=target, name="loop-worker")
        thread.start()
        thread.join()
        if "error" in box:
            raise box["error"]
        return box.get("result")
    raise ValueError(kind)


@pytest.fixture(params=LOOP_KINDS)
def loop_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=["raise", "warn"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(autouse=True)
def _no_guard_left_over() -> Iterator[None]:
    yield
    asyncguard.uninstall()


def call_line(func: Callable[..., Any]) -> int:
    """The line of ``func`` marked ``# <- blocks`` (else its first body line)."""
    import inspect

    lines, start = inspect.getsourcelines(func)
    for offset, text in enumerate(lines):
        if "# <- blocks" in text:
            return start + offset
    return start + 1


def expect_violation(
    loop_kind: str,
    mode: str,
    call: Callable[[], Any],
    key: str,
    *,
    line_of: Callable[..., Any] | None = None,
    category: str | None = None,
    **options: Any,
) -> asyncguard.Violation:
    """Run ``call()`` on a loop under ``guarded(mode)``; assert exactly one violation ``key``
    located at the call's own line; return it.  In raise mode the call must raise
    ``BlockingCallError`` (the error's violation is the recorded one)."""
    raised: list[asyncguard.BlockingCallError] = []

    async def main() -> None:
        if mode == "raise":
            with pytest.raises(asyncguard.BlockingCallError) as info:
                call()
            raised.append(info.value)
        else:
            call()

    options.setdefault("stall_threshold", None)  # the hook is tested; stalls: test_watchdog
    with asyncguard.guarded(mode=mode, **options) as guard:
        run_on(loop_kind, main)
    keys = [v.call for v in guard.violations]
    assert keys == [key], f"expected one {key!r} violation, got {keys}: {guard.violations}"
    violation = guard.violations[0]
    source = line_of or call
    assert violation.location[0] == source.__code__.co_filename
    assert violation.location[1] == call_line(source), violation.message()
    assert violation.location[2].endswith(source.__name__)
    if category is not None:
        assert violation.category == category
    if mode == "raise":
        assert raised[0].violation is violation
        assert violation.duration is None
        assert str(raised[0]) == violation.message()
    else:
        assert violation.duration is not None and violation.duration >= 0
    assert violation.thread == ("loop-worker" if loop_kind == "thread" else "MainThread")
    assert violation.task is not None
    return violation


def expect_clean_off_loop(call: Callable[[], Any], mode: str = "raise") -> None:
    """The same call made with no loop running (on this thread) is never flagged."""
    with asyncguard.guarded(mode=mode) as guard:
        call()
    assert guard.violations == []


def expect_clean_on_loop(loop_kind: str, call: Callable[[], Any], mode: str = "raise") -> None:
    """``call()`` on a loop is not flagged (non-blocking use)."""

    async def main() -> None:
        call()

    with asyncguard.guarded(mode=mode, stall_threshold=None) as guard:
        run_on(loop_kind, main)
    assert guard.violations == [], [v.message() for v in guard.violations]


PY313 = sys.version_info >= (3, 13)


# A test whose real service (a server, a package that must be installable) is missing skips
# through `skip_service(reason)`; in CI (ASYNCGUARD_REQUIRE_SERVICES=1) such a skip is a
# failure, so CI never skips silently.  Skips for what a platform or Python version simply
# does not have (nntplib on 3.13) stay skips.
REQUIRE_SERVICES = os.environ.get("ASYNCGUARD_REQUIRE_SERVICES") == "1"
SERVICE_MARK = "[service missing]"


def skip_service(reason: str) -> NoReturn:
    pytest.skip(f"{SERVICE_MARK} {reason}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    report = outcome.get_result()
    if not (REQUIRE_SERVICES and report.skipped) or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if SERVICE_MARK in reason:
        report.outcome = "failed"
        report.longrepr = f"skipped in CI (ASYNCGUARD_REQUIRE_SERVICES=1): {reason}"
