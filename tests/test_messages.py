"""Messages speak to the user: what was called, where (file:line, function, task), the fix."""

from __future__ import annotations

import asyncio
import re
import time

import pytest

import asyncguard
from conftest import call_line, run_on


def dashboard() -> None:
    time.sleep(0.05)


def _message(mode: str, loop_kind: str = "main") -> str:
    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        task.set_name("dashboard-request")
        try:
            dashboard()
        except asyncguard.BlockingCallError:
            pass

    with asyncguard.guarded(mode=mode) as guard:
        run_on(loop_kind, main)
    (violation,) = guard.violations
    return violation.message()


def test_raise_message_names_call_place_task_thread_and_fix() -> None:
    line = call_line(dashboard)
    assert _message("raise") == (
        f"time.sleep(0.05) would block the event loop in tests/test_messages.py:{line} "
        "(dashboard), task 'dashboard-request', thread 'MainThread' — "
        "use `await asyncio.sleep(0.05)` instead"
    )


def test_warn_message_has_the_measured_duration() -> None:
    message = _message("warn")
    assert re.match(
        r"time\.sleep\(0\.05\) blocked the event loop for (\d+\.\d) ms in "
        r"tests/test_messages\.py:\d+ \(dashboard\), task 'dashboard-request'",
        message,
    ), message
    duration = float(message.split(" for ")[1].split(" ms")[0])
    assert duration >= 50.0


def test_message_on_a_worker_thread_loop_names_that_thread() -> None:
    assert "thread 'loop-worker'" in _message("raise", "thread")


def test_call_key_in_message_is_what_allow_rules_accept() -> None:
    message = _message("raise")
    key = message.split("(")[0]
    assert key in asyncguard.known_calls()
    asyncguard.allow_blocking(key)  # accepted as is


def test_callback_outside_a_task_has_no_task() -> None:
    async def main() -> None:
        asyncio.get_running_loop().call_soon(_swallow)
        await asyncio.sleep(0.01)

    with asyncguard.guarded() as guard:
        run_on("main", main)
    (violation,) = guard.violations
    assert violation.task is None
    assert "task" not in violation.message().split(" — ")[0].split(", ", 1)[1]


def _swallow() -> None:
    try:
        time.sleep(0.01)
    except asyncguard.BlockingCallError:
        pass


def test_methods_show_class_and_method() -> None:
    class OrderView:
        def get(self) -> None:
            time.sleep(0.01)

    async def main() -> None:
        OrderView().get()

    with asyncguard.guarded(mode="warn") as guard:
        run_on("main", main)
    function = guard.violations[0].location[2]
    # Python 3.10 has no co_qualname
    assert function in ("test_methods_show_class_and_method.OrderView.get", "get")


@pytest.mark.parametrize("value", ["https://user:pw@api.example/v1/items?token=SECRET#frag"])
def test_url_query_strings_never_reach_messages(value: str) -> None:
    from asyncguard._format import short

    assert "SECRET" not in short(value) and "pw" not in short(value)
    assert short(value) == "'https://api.example/v1/items?…'"
    assert short("http://localhost:8000/x") == "'http://localhost:8000/x'"
