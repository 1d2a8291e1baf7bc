"""allow_blocking (contextvar: per task, survives await, no leaks) and allow rules."""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest

import asyncguard
from asyncguard import _allow, _frames
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


def _naive_rules_allow(rules: tuple[_allow.AllowRule, ...], key: str, frame: Any) -> bool:
    """The rule semantics written plainly (no cache): what the cached matcher must answer."""
    candidates = [rule for rule in rules if rule.matches_call(key)]
    if any(rule.where is None for rule in candidates):
        return True
    return any(
        rule.matches_frame(module, qualname)
        for module, qualname in _frames.frame_names(frame)
        for rule in candidates
    )


_STACK_SOURCE = """
def outer(inner):
    return inner()

class Box:
    def method(self, inner):
        def nested():
            return inner()
        return nested()
"""


def _module_functions(name: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": name}
    exec(compile(_STACK_SOURCE, f"<{name}>", "exec"), namespace)
    return namespace


def test_cached_rule_matching_answers_as_the_plain_rules() -> None:
    """Per module, per function and last-match caches give the answers of the plain rules, for
    exact, module, function and wildcard rules, asked again and again on different stacks."""
    modules = {name: _module_functions(name) for name in ("app.legacy", "app.new", "other")}
    texts = [
        "os.stat in app.legacy.outer",
        "os.stat in app.legacy",
        "os.stat in app",
        "os.stat in app.legacy.Box.method.nested",
        "os.stat in app.*.outer",
        "os.stat in *.Box.method",
        "os.stat in oth?r",
        "os.* in app.new.Box.method",
        "time.sleep in app.legacy.outer",
        "os.stat in app.legacy.out",
    ]
    rule_sets = [tuple(_allow.AllowRule.parse(text) for text in texts[i : i + 2]) for i in range(9)]
    seen: list[tuple[str, bool, bool]] = []

    def probe(rules: tuple[_allow.AllowRule, ...], key: str) -> None:
        frame = sys._getframe(1)
        seen.append(
            (key, _allow.rules_allow(rules, key, frame), _naive_rules_allow(rules, key, frame))
        )
        plain = _frames.is_exempt(frame) or _naive_rules_allow(rules, key, frame)
        seen.append((key, _allow.exempt_or_allowed(rules, key, frame), plain))

    for _ in range(3):  # the second and third rounds are answered from the caches
        for rules in rule_sets:
            for key in ("os.stat", "time.sleep"):
                for outer_module, inner_module in itertools.product(modules.values(), repeat=2):
                    ask = functools.partial(probe, rules, key)
                    outer_module["outer"](ask)
                    box = inner_module["Box"]()
                    outer_module["outer"](functools.partial(box.method, ask))
    assert len(seen) > 1000
    assert [(key, cached) for key, cached, _ in seen] == [(key, plain) for key, _, plain in seen]
    assert any(cached for _, cached, _ in seen) and not all(cached for _, cached, _ in seen)


# -- stale rules -----------------------------------------------------------------------------------


def _sleep_here() -> None:
    time.sleep(0.001)


def test_guarded_lists_the_rules_that_matched_no_call() -> None:
    """Stale rules hide the next blocking call they name: the collector lists them."""
    rules = [
        f"time.sleep in {__name__}._sleep_here",  # matches
        "time.sleep in nowhere.legacy",  # the call is judged, this place is never on its stack
        "os.stat",  # no such call ran
        "stall in nowhere.reports",
    ]

    async def main() -> None:
        _sleep_here()

    with asyncguard.guarded(mode="raise", allow=rules) as guard:
        asyncio.run(main())
    assert guard.violations == []
    assert guard.unused_rules == rules[1:]


def test_a_rule_that_matched_before_the_block_must_match_again_in_it() -> None:
    rule = f"time.sleep in {__name__}._sleep_here"

    async def main() -> None:
        _sleep_here()

    with asyncguard.guarded(mode="raise", allow=[rule]) as first:
        asyncio.run(main())
    assert first.unused_rules == []
    with asyncguard.guarded(mode="raise", allow=[rule]) as second:
        pass
    assert second.unused_rules == [rule]


def test_stale_rules_are_logged_at_exit() -> None:
    code = textwrap.dedent(
        """
        import asyncio, time
        import asyncguard
        asyncguard.install("warn", allow=["time.sleep", "os.stat in old.module"])

        async def main():
            time.sleep(0.001)

        asyncio.run(main())
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNC_GUARD_")}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[-1] == (
        "WARNING asyncguard: 1 allow rule never matched a call: 'os.stat in old.module' — "
        "remove or fix them (a stale rule hides the next blocking call it names)"
    ), result.stderr


def test_a_rule_naming_a_missing_module_is_a_warning_at_install(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("WARNING", logger="asyncguard")
    rules = [
        "time.sleep in jsno.decoder",  # typo in the top-level name
        "time.sleep in json.decodr",  # typo in a submodule of an imported package
        "time.sleep in json.decoder.JSONDecoder.decode",  # module.qualname
        "time.sleep in json.loads",  # a function of the package itself
        "os.stat in myap.*",  # a pattern: not checked
    ]
    with asyncguard.guarded(mode="warn", allow=rules):
        pass
    said = [r.getMessage() for r in caplog.records if "cannot be found" in r.getMessage()]
    assert said == [
        "2 allow rules name a module that cannot be found: "
        "'time.sleep in jsno.decoder', 'time.sleep in json.decodr' — such a rule never allows "
        "anything; check the spelling"
    ]
