"""allow_blocking (contextvar: per task, survives await, no leaks) and allow rules."""

from __future__ import annotations

import asyncio
import time

import pytest

import asyncguard
from conftest import LOOP_KINDS, run_on


@pytest.mark.parametrize("loop_kind", LOOP_KINDS)
def test_allow_blocking_context_manager(loop_kind: str) -> None:
    async def main() -> None:
        with asyncguard.allow_blocking(reason="legacy SDK"):
            time.sleep(0.001)
            await asyncio.sleep(0)  # survives await
            time.sleep(0.001)

    with asyncguard.guarded() as guard:
        run_on(loop_kind, main)
    assert guard.violations == []


def test_allow_blocking_async_context_manager() -> None:
    async def main() -> None:
        async with asyncguard.allow_blocking():
            time.sleep(0.001)

    with asyncguard.guarded() as guard:
        run_on("main", main)
    assert guard.violations == []


def test_allow_blocking_decorates_sync_and_async_functions() -> None:
    @asyncguard.allow_blocking("time.sleep")
    def legacy() -> str:
        time.sleep(0.001)
        return "done"

    @asyncguard.allow_blocking()
    async def legacy_async() -> str:
        time.sleep(0.001)
        await asyncio.sleep(0)
        time.sleep(0.001)
        return "done"

    async def main() -> tuple[str, str]:
        return legacy(), await legacy_async()

    with asyncguard.guarded() as guard:
        assert run_on("main", main) == ("done", "done")
    assert guard.violations == []
    assert legacy.__name__ == "legacy"


def test_allow_blocking_does_not_leak_into_other_tasks() -> None:
    started = asyncio.Event

    async def allowed(gate: asyncio.Event) -> None:
        with asyncguard.allow_blocking():
            gate.set()
            await asyncio.sleep(0.01)  # the other task runs while this one is inside the block

    async def other(gate: asyncio.Event) -> None:
        await gate.wait()
        try:
            time.sleep(0.001)
        except asyncguard.BlockingCallError:
            pass

    async def main() -> None:
        gate = started()
        await asyncio.gather(allowed(gate), other(gate))

    with asyncguard.guarded() as guard:
        run_on("main", main)
    assert guard.calls == ["time.sleep"]
    assert guard.violations[0].location[2].endswith("other")


def test_allow_blocking_ends_with_the_block() -> None:
    async def main() -> None:
        with asyncguard.allow_blocking():
            time.sleep(0.001)
        time.sleep(0.001)

    with asyncguard.guarded(mode="warn") as guard:
        run_on("main", main)
    assert guard.calls == ["time.sleep"]


def test_allow_blocking_specific_keys_only() -> None:
    async def main() -> None:
        with asyncguard.allow_blocking("os.*"):
            with asyncguard.allow_blocking("time.sleep"):  # nested: union of both
                time.sleep(0.001)
        with asyncguard.allow_blocking("os.*"):
            time.sleep(0.001)

    with asyncguard.guarded(mode="warn") as guard:
        run_on("main", main)
    assert guard.calls == ["time.sleep"]


def test_allow_blocking_reused_instance_across_tasks() -> None:
    allow = asyncguard.allow_blocking()

    async def worker() -> None:
        with allow:
            await asyncio.sleep(0.001)
            time.sleep(0.001)

    async def main() -> None:
        await asyncio.gather(*(worker() for _ in range(5)))

    with asyncguard.guarded() as guard:
        run_on("main", main)
    assert guard.violations == []


def test_allow_blocking_unknown_key_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"unknown call key 'time.slep'; did you mean 'time.sleep"):
        asyncguard.allow_blocking("time.slep")
    with pytest.raises(ValueError, match="matches no known call key"):
        asyncguard.allow_blocking("nothing.*")


def test_allow_rule_by_call_key() -> None:
    with asyncguard.guarded(allow=["time.sleep"]) as guard:
        run_on("main", _blocks)
    assert guard.violations == []


def test_allow_rule_by_module() -> None:
    with asyncguard.guarded(allow=[f"time.sleep in {__name__}"]) as guard:
        run_on("main", _blocks)
    assert guard.violations == []


def test_allow_rule_by_function() -> None:
    with asyncguard.guarded(allow=[f"* in {__name__}._blocks"]) as guard:
        run_on("main", _blocks)
    assert guard.violations == []


def test_allow_rule_for_another_module_does_not_apply() -> None:
    with asyncguard.guarded(mode="warn", allow=["time.sleep in some.other.module"]) as guard:
        run_on("main", _blocks)
    assert guard.calls == ["time.sleep"]


async def _blocks() -> None:
    time.sleep(0.001)
