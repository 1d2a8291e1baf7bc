"""Public API: install/uninstall/guarded, options and bad input, rollback, callbacks, rules."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import importlib.util
import logging
import pickle
import re
import time

import pytest

import asyncguard
from asyncguard import _frames, _patch
from asyncguard._hooks import catalog
from asyncguard._spec import Family, Hook
from conftest import run_on


def test_public_api_is_short() -> None:
    assert set(asyncguard.__all__) >= {
        "install",
        "uninstall",
        "guarded",
        "allow_blocking",
        "BlockingCallError",
        "Violation",
    }
    assert all(not name.startswith("_") for name in asyncguard.__all__)


def test_import_does_not_import_django_or_pytest() -> None:
    import subprocess
    import sys

    code = "import sys, asyncguard; print('django' in sys.modules, 'pytest' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_unknown_mode_names_value_and_choices() -> None:
    choices = r"'raise', 'warn', 'offload', 'off'"
    with pytest.raises(ValueError, match=r"^mode = 'loud' is not valid: choose one of " + choices):
        asyncguard.install(mode="loud")
    assert asyncguard._guard.current() is None


def test_unknown_option_names_it() -> None:
    with pytest.raises(ValueError, match=r"unknown asyncguard option 'alow'.*'allow'"):
        asyncguard.install(alow=["time.sleep"])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"min_duration": -1}, "min_duration = -1 is not valid: seconds >= 0"),
        ({"min_duration": "fast"}, "min_duration = 'fast' is not valid: seconds >= 0"),
        ({"on_violation": [42]}, "on_violation = [42] is not valid: 42 is not callable"),
        ({"exclude": ["sleeep"]}, "unknown hook family 'sleeep'"),
        (
            {"allow": ["time.sleeep"]},
            "unknown call key in allow rule 'time.sleeep'; did you mean 'time.sleep'",
        ),
        ({"allow": ["time.sleep in "]}, "has nothing after 'in'"),
        ({"allow": [3]}, "allow rule must be a string"),
    ],
)
def test_bad_options(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        asyncguard.install(**options)  # type: ignore[arg-type]


def test_install_twice_reconfigures_the_same_guard() -> None:
    guard = asyncguard.install(mode="raise")
    again = asyncguard.install(mode="warn", allow=["time.sleep"])
    assert again is guard
    assert guard.mode == "warn"
    assert [rule.source for rule in guard.rules] == ["time.sleep"]


def test_bad_reconfigure_keeps_previous_settings() -> None:
    guard = asyncguard.install(mode="warn")
    with pytest.raises(ValueError):
        asyncguard.install(mode="nope")
    assert guard.mode == "warn" and guard.installed


def test_exclude_family_unpatches_it() -> None:
    original = time.sleep
    asyncguard.install()
    assert time.sleep is not original
    asyncguard.install(exclude=["sleep"])
    assert time.sleep is original
    asyncguard.install(exclude=[])
    assert time.sleep is not original


def _hook_targets() -> list[Hook]:
    return catalog.hooks()


@pytest.mark.parametrize("hook", _hook_targets(), ids=lambda h: f"{h.module}.{h.attr}")
def test_uninstall_restores_identical_object(hook: Hook, request: pytest.FixtureRequest) -> None:
    if hook.module.startswith("django.") and importlib.util.find_spec("django") is not None:
        request.getfixturevalue("django_project")  # Django modules need configured settings
    try:
        module = importlib.import_module(hook.module)
    except ImportError:
        pytest.skip(f"{hook.module} is not installed")
    except Exception as exc:  # Django modules that need configured settings
        pytest.skip(f"{hook.module} cannot be imported here: {exc}")
    owner: object = module
    *path, name = hook.attr.split(".")
    for part in path:
        owner = getattr(owner, part, None)
        if owner is None:
            assert hook.optional
            pytest.skip(f"{hook.module}.{'.'.join(path)} does not exist on this platform")
    if not hasattr(owner, name):
        assert hook.optional
        pytest.skip(f"{hook.module}.{hook.attr} does not exist on this platform")
    had_own = name in vars(owner)
    before = vars(owner)[name] if had_own else getattr(owner, name)
    asyncguard.install()
    assert (vars(owner).get(name) if had_own else getattr(owner, name)) is not before
    asyncguard.uninstall()
    if had_own:
        assert vars(owner)[name] is before
    else:
        assert name not in vars(owner)
        assert getattr(owner, name) is before


def test_uninstall_restores_early_bound_names() -> None:
    import test_hooks_sleep

    before = test_hooks_sleep.early_bound_sleep
    asyncguard.install()
    assert test_hooks_sleep.early_bound_sleep is time.sleep
    asyncguard.uninstall()
    assert test_hooks_sleep.early_bound_sleep is before
    assert _patch.patched() == []


def test_partial_install_failure_rolls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    original = time.sleep
    broken = Family(
        name="broken",
        description="a hook whose target does not exist",
        hooks=(Hook("time", "no_such_function", "time.nope", "sleep", "fix it"),),
    )
    monkeypatch.setattr(catalog, "FAMILIES", (*catalog.FAMILIES, broken))
    with pytest.raises(AttributeError, match=r"cannot hook time\.no_such_function"):
        asyncguard.install()
    assert time.sleep is original
    assert _patch.patched() == []
    assert asyncguard._guard.current() is None


def test_violation_is_a_frozen_dataclass_with_the_documented_fields() -> None:
    fields = {f.name for f in dataclasses.fields(asyncguard.Violation)}
    assert fields >= {
        "call",
        "category",
        "location",
        "stack",
        "duration",
        "thread",
        "task",
        "request",
        "hint",
    }
    with asyncguard.guarded(mode="warn") as guard:
        run_on("main", _sleep_briefly)
    violation = guard.violations[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        violation.call = "x"  # type: ignore[misc]
    assert violation.stack[-1].lineno == violation.location[1]
    assert violation.stack[-1].filename == __file__


async def _sleep_briefly() -> None:
    time.sleep(0.001)


def test_blocking_call_error_pickles() -> None:
    async def main() -> asyncguard.BlockingCallError:
        try:
            time.sleep(0.01)
        except asyncguard.BlockingCallError as exc:
            return exc
        raise AssertionError("not raised")

    with asyncguard.guarded():
        error = run_on("main", main)
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == str(error)
    assert again.violation.call == "time.sleep"
    assert isinstance(error, Exception)


def test_swallowed_error_is_still_collected() -> None:
    async def main() -> None:
        try:
            time.sleep(0.01)
        except Exception:
            pass

    with asyncguard.guarded() as guard:
        run_on("main", main)
    assert guard.calls == ["time.sleep"]


def test_violations_in_fire_and_forget_tasks_and_callbacks_are_collected() -> None:
    def callback() -> None:
        try:
            time.sleep(0.001)
        except asyncguard.BlockingCallError:
            pass

    async def forgotten() -> None:
        time.sleep(0.001)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.call_soon(callback)
        task = asyncio.ensure_future(forgotten())
        await asyncio.sleep(0.01)
        assert isinstance(task.exception(), asyncguard.BlockingCallError)

    with asyncguard.guarded() as guard:
        run_on("main", main)
    assert guard.calls == ["time.sleep", "time.sleep"]
    assert guard.violations[0].task is None  # a bare callback runs in no task


def test_guarded_nested_restores_previous_configuration() -> None:
    outer_guard = asyncguard.install(mode="raise")
    with asyncguard.guarded(mode="warn") as inner:
        assert outer_guard.mode == "warn"
        run_on("main", _sleep_briefly)
    assert outer_guard.mode == "raise" and outer_guard.installed
    assert inner.calls == ["time.sleep"]


def test_guarded_uninstalls_what_it_installed() -> None:
    original = time.sleep
    with asyncguard.guarded():
        assert time.sleep is not original
    assert time.sleep is original


def test_off_mode_reports_nothing() -> None:
    with asyncguard.guarded(mode="off") as guard:
        run_on("main", _sleep_briefly)
    assert guard.violations == []


def test_on_violation_callbacks_receive_each_violation() -> None:
    seen: list[asyncguard.Violation] = []
    with asyncguard.guarded(mode="warn", on_violation=seen.append):
        run_on("main", _sleep_briefly)
    assert [v.call for v in seen] == ["time.sleep"]


def test_broken_callback_is_logged_once_and_the_call_proceeds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(violation: asyncguard.Violation) -> None:
        raise RuntimeError("sink down")

    async def main() -> None:
        time.sleep(0.001)
        time.sleep(0.001)

    with caplog.at_level(logging.ERROR, logger="asyncguard"):
        with asyncguard.guarded(mode="warn", on_violation=broken) as guard:
            run_on("main", main)
    assert guard.calls == ["time.sleep", "time.sleep"]
    errors = [r for r in caplog.records if "internal error" in r.getMessage()]
    assert len(errors) == 1
    assert "sink down" in errors[0].getMessage()


def test_internal_error_in_warn_mode_lets_the_call_proceed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(frame: object) -> object:
        raise RuntimeError("bug in the guard")

    monkeypatch.setattr(_frames, "user_location", explode)

    async def main() -> float:
        start = time.perf_counter()
        time.sleep(0.01)
        time.sleep(0.01)
        return time.perf_counter() - start

    with caplog.at_level(logging.ERROR, logger="asyncguard"):
        with asyncguard.guarded(mode="warn") as guard:
            elapsed = run_on("main", main)
    assert elapsed >= 0.02
    assert guard.violations == []
    assert len([r for r in caplog.records if "bug in the guard" in r.getMessage()]) == 1


def test_warn_logs_through_the_asyncguard_logger(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="asyncguard"), asyncguard.guarded(mode="warn"):
        run_on("main", _sleep_briefly)
    (record,) = caplog.records
    assert record.name == "asyncguard"
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith("time.sleep(0.001) blocked the event loop for ")
    assert record.asyncguard_violation.call == "time.sleep"  # type: ignore[attr-defined]


def test_logging_handler_that_blocks_does_not_reenter_the_guard(tmp_path: object) -> None:
    class BlockingHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            time.sleep(0.001)  # a handler doing blocking work on the loop thread

    handler = BlockingHandler()
    logger = logging.getLogger("asyncguard")
    logger.addHandler(handler)
    try:
        with asyncguard.guarded(mode="warn") as guard:
            run_on("main", _sleep_briefly)
    finally:
        logger.removeHandler(handler)
    assert guard.calls == ["time.sleep"]


def test_known_calls_lists_keys() -> None:
    keys = asyncguard.known_calls()
    assert "time.sleep" in keys
    assert keys == sorted(keys)
