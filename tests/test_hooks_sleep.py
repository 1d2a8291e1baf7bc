from __future__ import annotations

import time
from time import sleep as early_bound_sleep

from conftest import expect_clean_off_loop, expect_clean_on_loop, expect_violation


def test_time_sleep(loop_kind: str, mode: str) -> None:
    def blocking() -> None:
        time.sleep(0.01)

    violation = expect_violation(loop_kind, mode, blocking, "time.sleep", category="sleep")
    assert violation.call_expr == "time.sleep(0.01)"
    assert "use `await asyncio.sleep(0.01)`" in violation.message()
    if mode == "warn":
        assert violation.duration is not None and violation.duration >= 0.009


def test_sleep_bound_before_install(loop_kind: str, mode: str) -> None:
    def blocking() -> None:
        early_bound_sleep(0.01)

    expect_violation(loop_kind, mode, blocking, "time.sleep")


def test_sleep_zero_only_yields(loop_kind: str) -> None:
    expect_clean_on_loop(loop_kind, lambda: time.sleep(0))


def test_sleep_off_loop() -> None:
    expect_clean_off_loop(lambda: time.sleep(0.001))
