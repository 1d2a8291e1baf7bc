"""The pytest plugin, black-box: each case writes a real test module (and ini, conftest, a tiny
Django project when needed) into a pytester directory and runs pytest on it in a subprocess,
with the plugin auto-loaded from its ``pytest11`` entry point as in a user's project.

Runner setups (pytest-asyncio, anyio, pytest-xdist, pytest-django) that are not installed are
skipped through ``skip_service``, so CI (ASYNCGUARD_REQUIRE_SERVICES=1) turns them into failures.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import textwrap

import pytest

import asyncguard
from asyncguard.pytest_plugin import AsyncGuardWarning
from conftest import skip_service

pytest_plugins = ["pytester"]

HINT = "use `await asyncio.sleep(0.01)` instead"
_SUMMARY = re.compile(r"^(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) \S+?::(\S+)(?: - .*)?$")


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # CI / BUILD_NUMBER make pytest print whole messages in the short summary, which would
    # repeat the violation lines these tests count
    guard_variables = [name for name in os.environ if name.startswith("ASYNC_GUARD_")]
    for name in (
        "DJANGO_SETTINGS_MODULE",
        "PYTEST_ADDOPTS",
        "CI",
        "BUILD_NUMBER",
        *guard_variables,
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "400")  # short summary lines are cut at the terminal width


def need(module: str, distribution: str) -> None:
    if importlib.util.find_spec(module) is None:
        skip_service(f"{distribution} is not installed (pip install {distribution})")


def write_module(pytester: pytest.Pytester, name: str, source: str) -> dict[str, int]:
    """Write ``name.py``; return the line of each ``# <- tag`` in it."""
    text = textwrap.dedent(source).strip()
    pytester.makepyfile(**{name: text})
    return {
        tag: lineno
        for lineno, line in enumerate(text.splitlines(), 1)
        for tag in re.findall(r"# <- (\w+)", line)
    }


def write_ini(pytester: pytest.Pytester, *lines: str) -> None:
    settings = list(lines)
    if importlib.util.find_spec("pytest_asyncio") is not None:
        # what every pytest-asyncio user sets; without it pytest-asyncio warns at startup
        settings.append("asyncio_default_fixture_loop_scope = function")
    pytester.makeini("[pytest]\n" + "\n".join(settings) + "\n")


def run(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, dict[str, str]]:
    """Run pytest in a subprocess; return the result and each test's outcome(s) by name
    (``"passed+error"`` for a test that passed and then errored in teardown)."""
    result = pytester.runpytest_subprocess("-rA", "-p", "no:cacheprovider", *args)
    output = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in output, output
    outcomes: dict[str, str] = {}
    for line in result.stdout.lines:
        match = _SUMMARY.match(line)
        if match:
            outcome, name = match.group(1).lower(), match.group(2)
            outcomes[name] = f"{outcomes[name]}+{outcome}" if name in outcomes else outcome
    return result, outcomes


def listed(result: pytest.RunResult, where: str) -> list[str]:
    """The failure-report lines (``  1. ...``) of the violations located at ``where``."""
    return [
        line
        for line in result.stdout.lines
        if re.match(r"^  \d+\. ", line) and f" in {where} (" in line
    ]


def fn(qualname: str) -> str:
    """How a function is named in messages: its qualified name (``test_x.main``) where code
    objects know it (3.11+), else its bare name."""
    return qualname if sys.version_info >= (3, 11) else qualname.rpartition(".")[2]


def violation_line(file: str, line: int, function: str, context: str, *, n: int = 1) -> str:
    """The fnmatch pattern of one violation in a failure report (raise mode)."""
    return (
        f"  {n}. time.sleep(0.01) would block the event loop in {file}:{line} ({fn(function)}), "
        f"{context} — {HINT}"
    )


# -- raise mode (the default) ---------------------------------------------------------------

RAISE_MODULE = """
    import asyncio
    import threading
    import time

    import pytest


    def test_sync_blocks():
        time.sleep(0.01)


    def test_clean_async():
        async def main():
            await asyncio.sleep(0)
            await asyncio.to_thread(time.sleep, 0.01)
            await asyncio.get_running_loop().run_in_executor(None, time.sleep, 0.01)

        asyncio.run(main())


    def test_uncaught():
        async def main():
            time.sleep(0.01)  # <- uncaught

        asyncio.run(main())


    def test_caught():
        async def main():
            try:
                time.sleep(0.01)  # <- caught
            except Exception:
                pass

        asyncio.run(main())


    def test_fire_and_forget():
        async def forgotten():
            time.sleep(0.01)  # <- forgotten

        async def main():
            task = asyncio.get_running_loop().create_task(forgotten(), name="forgotten")
            await asyncio.sleep(0.01)
            task.exception()  # retrieved: only asyncguard can tell

        asyncio.run(main())


    def test_call_soon():
        def callback():
            time.sleep(0.01)  # <- callback

        async def main():
            asyncio.get_running_loop().call_soon(callback)
            await asyncio.sleep(0.01)

        asyncio.run(main())


    def test_loop_on_worker_thread():
        async def main():
            try:
                time.sleep(0.01)  # <- worker
            except Exception:
                pass

        thread = threading.Thread(target=asyncio.run, args=(main(),), name="loop-worker")
        thread.start()
        thread.join()


    def test_repeated():
        async def main():
            for _ in range(3):
                try:
                    time.sleep(0.01)  # <- repeated
                except Exception:
                    pass

        asyncio.run(main())


    def test_fails_and_blocks():
        async def main():
            try:
                time.sleep(0.01)  # <- also
            except Exception:
                pass

        asyncio.run(main())
        assert 1 == 2


    @pytest.fixture
    def blocks_in_setup():
        async def main():
            time.sleep(0.01)  # <- setup

        asyncio.run(main())


    @pytest.fixture
    def blocks_in_teardown():
        yield

        async def main():
            try:
                time.sleep(0.01)  # <- teardown
            except Exception:
                pass

        asyncio.run(main())


    def test_setup_blocks(blocks_in_setup):
        pass


    def test_teardown_blocks(blocks_in_teardown):
        pass
"""


def test_raise_mode_fails_each_kind_of_blocking(pytester: pytest.Pytester) -> None:
    write_ini(pytester)
    line = write_module(pytester, "test_raise", RAISE_MODULE)
    result, outcomes = run(pytester)
    assert outcomes == {
        "test_sync_blocks": "passed",
        "test_clean_async": "passed",
        "test_uncaught": "failed",
        "test_caught": "failed",
        "test_fire_and_forget": "failed",
        "test_call_soon": "failed",
        "test_loop_on_worker_thread": "failed",
        "test_repeated": "failed",
        "test_fails_and_blocks": "failed",
        "test_setup_blocks": "error",
        "test_teardown_blocks": "passed+error",
    }
    result.assert_outcomes(passed=3, failed=7, errors=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [f"asyncguard: {asyncguard.__version__}, mode=raise, stall threshold 50 ms"]
    )

    main_task = "task 'Task-*', thread 'MainThread'"
    expected = {
        "uncaught": ("test_uncaught.main", main_task),
        "caught": ("test_caught.main", main_task),
        "forgotten": ("test_fire_and_forget.forgotten", "task 'forgotten', thread 'MainThread'"),
        "callback": ("test_call_soon.callback", "thread 'MainThread'"),
        "worker": ("test_loop_on_worker_thread.main", "task 'Task-*', thread 'loop-worker'"),
        "setup": ("blocks_in_setup.main", main_task),
        "teardown": ("blocks_in_teardown.main", main_task),
        "also": ("test_fails_and_blocks.main", main_task),
    }
    for tag, (function, context) in expected.items():
        pattern = violation_line("test_raise.py", line[tag], function, context)
        result.stdout.fnmatch_lines([pattern])
        # listed once, in the test's own report
        assert len(listed(result, f"test_raise.py:{line[tag]}")) == 1, tag

    # the short summary names the cause when the code swallowed the error
    result.stdout.fnmatch_lines(
        [
            "FAILED test_raise.py::test_caught - asyncguard: 1 blocking call(s) ran on an "
            "event-loop thread during call:*",
        ]
    )
    # each report says which phase, and how to allow the call
    result.stdout.fnmatch_lines(
        [
            "*_ ERROR at setup of test_setup_blocks _*",
            "*asyncguard: 1 blocking call(s) ran on an event-loop thread during setup:",
            violation_line("test_raise.py", line["setup"], "blocks_in_setup.main", main_task),
            'Fix each call, or allow it in this test: @pytest.mark.allow_blocking("time.sleep", '
            "reason=...), or in every test: ini asyncguard_allow.",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*_ ERROR at teardown of test_teardown_blocks _*",
            "asyncguard: 1 blocking call(s) ran on an event-loop thread during teardown:",
        ]
    )
    # one site called three times: listed once, with the count
    result.stdout.fnmatch_lines(
        [
            "asyncguard: 3 blocking call(s) ran on an event-loop thread during call:",
            violation_line("test_raise.py", line["repeated"], "test_repeated.main", main_task)
            + " ?3 times?",
        ]
    )
    # a test failing for its own reason gets the violations as a report section
    result.stdout.fnmatch_lines(
        ["*_ test_fails_and_blocks _*", "E * assert 1 == 2", "*- asyncguard -*"]
    )


# -- modes ----------------------------------------------------------------------------------

WARN_MODULE = """
    import asyncio
    import time


    def test_blocks():
        async def main():
            time.sleep(0.01)  # <- warned

        asyncio.run(main())


    def test_sees_duration(asyncguard):
        async def main():
            time.sleep(0.01)  # <- timed

        asyncio.run(main())
        [violation] = asyncguard.violations
        assert asyncguard.mode == "warn"
        assert violation.call == "time.sleep"
        assert violation.duration >= 0.009


    def test_clean():
        async def main():
            await asyncio.sleep(0)

        asyncio.run(main())
"""


@pytest.mark.parametrize("how", ["option", "ini"])
def test_warn_mode_passes_with_warnings(pytester: pytest.Pytester, how: str) -> None:
    write_ini(pytester, "asyncguard_mode = warn" if how == "ini" else "")
    line = write_module(pytester, "test_warn", WARN_MODULE)
    result, outcomes = run(pytester, *(["--asyncguard-mode=warn"] if how == "option" else []))
    assert outcomes == {
        "test_blocks": "passed",
        "test_sees_duration": "passed",
        "test_clean": "passed",
    }
    result.assert_outcomes(passed=3, warnings=2)
    result.stdout.fnmatch_lines(
        [
            f"asyncguard: {asyncguard.__version__}, mode=warn, stall threshold 50 ms",
            "*= warnings summary =*",
            "test_warn.py::test_blocks",
            f"*test_warn.py:{line['warned']}: AsyncGuardWarning: time.sleep(0.01) blocked the "
            f"event loop for * ms in test_warn.py:{line['warned']} ({fn('test_blocks.main')}), "
            f"task 'Task-*', thread 'MainThread' — {HINT}",
        ]
    )
    assert issubclass(AsyncGuardWarning, pytest.PytestWarning)


def test_warn_mode_warnings_as_errors_fail_the_test(pytester: pytest.Pytester) -> None:
    write_ini(pytester, "asyncguard_mode = warn", "filterwarnings = error")
    line = write_module(pytester, "test_warn", WARN_MODULE)
    result, outcomes = run(pytester)
    assert outcomes == {
        "test_blocks": "failed",
        "test_sees_duration": "failed",
        "test_clean": "passed",
    }
    result.stdout.fnmatch_lines(
        [
            "FAILED test_warn.py::test_blocks - asyncguard (warning turned into an error): "
            f"time.sleep(0.01) blocked the event loop for * ms in test_warn.py:{line['warned']} *",
        ]
    )


OFF_MODULE = """
    import asyncio
    import time

    import pytest


    def test_blocks():
        async def main():
            time.sleep(0.01)

        asyncio.run(main())


    @pytest.mark.allow_blocking("time.sleep", reason="still accepted when off")
    def test_marked():
        pass
"""


def test_mode_off(pytester: pytest.Pytester) -> None:
    write_ini(pytester)
    write_module(pytester, "test_off", OFF_MODULE)
    result, outcomes = run(
        pytester, "--asyncguard-mode=off", "--asyncguard-report", "--strict-markers"
    )
    assert outcomes == {"test_blocks": "passed", "test_marked": "passed"}
    result.stdout.fnmatch_lines(
        [
            f"asyncguard: {asyncguard.__version__}, mode=off",
            "*= asyncguard: blocking calls on event-loop threads =*",
            "none",
        ]
    )


@pytest.mark.parametrize(
    ("env", "args", "header"),
    [
        ({"ASYNC_GUARD_MODE": "warn"}, [], "mode=warn"),
        ({"ASYNC_GUARD_MODE": "warn"}, ["--asyncguard-mode", "off"], "mode=off"),  # flag wins
        ({"ASYNC_GUARD_STALL_THRESHOLD": "250ms"}, [], "stall threshold 250 ms"),
    ],
)
def test_environment_variables_apply_under_pytest(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    args: list[str],
    header: str,
) -> None:
    """The ``ASYNC_GUARD_*`` variables a staging box or a CI job sets apply to the plugin
    too: the command line wins, then the environment, then the ini file."""
    write_ini(pytester, "asyncguard_mode = raise")
    write_module(pytester, "test_off", OFF_MODULE)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result, _ = run(pytester, *args)
    headers = [line for line in result.stdout.lines if line.startswith("asyncguard: ")]
    assert any(header in line for line in headers), result.stdout.str()


def test_an_offload_mode_from_the_environment_is_a_usage_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_ini(pytester)
    write_module(pytester, "test_off", OFF_MODULE)
    monkeypatch.setenv("ASYNC_GUARD_MODE", "offload")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: ASYNC_GUARD_MODE = 'offload' is not valid: choose one of 'raise', 'warn', 'off'"]
    )


def test_ini_rules_no_test_needed_are_listed_at_the_end(pytester: pytest.Pytester) -> None:
    """A stale ini rule would hide the next blocking call it names: say which ones."""
    write_ini(pytester, "asyncguard_allow =\n    time.sleep in test_off\n    os.stat in nowhere")
    write_module(pytester, "test_off", OFF_MODULE)
    result, outcomes = run(pytester)
    assert outcomes == {"test_blocks": "passed", "test_marked": "passed"}
    result.stdout.fnmatch_lines(
        [
            "asyncguard: 1 allow rule never matched a call: 'os.stat in nowhere' — remove or fix"
            " them (a stale rule hides the next blocking call it names)"
        ]
    )
    assert "'time.sleep in test_off'" not in result.stdout.str()


def test_plugin_disabled(pytester: pytest.Pytester) -> None:
    write_ini(pytester)
    write_module(pytester, "test_off", OFF_MODULE)
    result, outcomes = run(pytester, "-p", "no:asyncguard")
    assert outcomes == {"test_blocks": "passed", "test_marked": "passed"}
    assert "asyncguard" not in result.stdout.str()


@pytest.mark.parametrize(
    ("ini", "args", "error"),
    [
        (
            "asyncguard_mode = loud",
            [],
            "ERROR: asyncguard_mode = 'loud' is not valid: choose one of 'raise', 'warn', 'off'",
        ),
        (
            "asyncguard_mode = offload",
            [],
            "ERROR: asyncguard_mode = 'offload' is not valid: choose one of 'raise', 'warn', 'off'",
        ),
        (
            "",
            ["--asyncguard-mode=loud"],
            "ERROR: --asyncguard-mode = 'loud' is not valid: choose one of 'raise', 'warn', 'off'",
        ),
        (
            "asyncguard_allow =\n    time.slep in mypkg",
            [],
            # (fnmatch: * stands for the brackets of the list)
            "ERROR: asyncguard_allow = *'time.slep in mypkg'* is not valid: unknown call key in "
            "allow rule 'time.slep'; did you mean 'time.sleep'? *",
        ),
        (
            "asyncguard_allow = time.sleep mypkg",
            [],
            "ERROR: asyncguard_allow = *'time.sleep mypkg'* is not valid: allow rule "
            "'time.sleep mypkg' is not of the form 'CALL' or 'CALL in MODULE*.FUNCTION*'",
        ),
        (
            "asyncguard_stall_threshold = soon",
            [],
            "ERROR: asyncguard_stall_threshold = 'soon' is not valid: seconds >= 0, like 0.5, "
            "'500ms' or '0.5s', or 'off' for no watchdog",
        ),
    ],
    ids=["ini-mode", "ini-mode-offload", "option-mode", "allow-key", "allow-syntax", "ini-stall"],
)
def test_bad_configuration_is_a_usage_error(
    pytester: pytest.Pytester, ini: str, args: list[str], error: str
) -> None:
    write_ini(pytester, ini)
    write_module(pytester, "test_nothing", "def test_nothing():\n    pass\n")
    result, _ = run(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([error])


RECONFIGURED_MODULE = """
    import asyncio
    import time

    import asyncguard
    from asyncguard import AsyncGuardMiddleware


    async def app(scope, receive, send):
        if scope["path"] == "/slow":
            time.sleep(0.01)  # <- app
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


    # built at import, as an asgi.py module does (with DEBUG off a Django project says "off")
    application = AsyncGuardMiddleware(app, mode="off")


    def get(path):
        sent = []

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "GET", "path": path, "query_string": b"", "headers": []}
        asyncio.run(application(scope, receive, send))
        return sent


    def test_app_blocks():
        get("/slow")


    def test_app_clean():
        assert get("/fast")[-1]["body"] == b"ok"


    def test_code_under_test_turns_the_guard_off():
        asyncguard.install(mode="off")


    def test_next_test_is_guarded_again():
        async def main():
            time.sleep(0.01)  # <- again

        asyncio.run(main())
"""


def test_the_plugin_keeps_control_of_the_guard(pytester: pytest.Pytester) -> None:
    """Code under test reconfiguring the guard (the middleware, the Django app, a direct
    ``install()``) does not change the plugin's mode for the next test; the middleware's
    request label shows in the report."""
    write_ini(pytester)
    line = write_module(pytester, "test_reconfigured", RECONFIGURED_MODULE)
    result, outcomes = run(pytester)
    assert outcomes == {
        "test_app_blocks": "failed",
        "test_app_clean": "passed",
        "test_code_under_test_turns_the_guard_off": "passed",
        "test_next_test_is_guarded_again": "failed",
    }
    task = "task 'Task-*', thread 'MainThread'"
    result.stdout.fnmatch_lines(
        [violation_line("test_reconfigured.py", line["app"], "app", f"{task}, request 'GET /slow'")]
    )
    result.stdout.fnmatch_lines(
        [
            violation_line(
                "test_reconfigured.py", line["again"], "test_next_test_is_guarded_again.main", task
            )
        ]
    )


# -- allowing ---------------------------------------------------------------------------------

MARKER_MODULE = """
    import asyncio
    import os
    import threading
    import time

    import pytest


    async def sleep_and_stat():
        time.sleep(0.01)
        try:
            os.stat(".")  # <- stat
        except Exception:
            pass


    @pytest.mark.allow_blocking
    def test_all_allowed():
        asyncio.run(sleep_and_stat())


    @pytest.mark.allow_blocking("time.sleep", "os.stat", reason="legacy client, issue #12")
    def test_keys_allowed():
        asyncio.run(sleep_and_stat())


    @pytest.mark.allow_blocking("time.sleep", reason="only this one")
    def test_other_key_still_fails():
        asyncio.run(sleep_and_stat())


    @pytest.mark.allow_blocking("time.*", "os.st*")
    def test_patterns_allowed():
        asyncio.run(sleep_and_stat())


    def test_unmarked_after_marked():
        async def main():
            time.sleep(0.01)  # <- unmarked

        asyncio.run(main())


    @pytest.mark.allow_blocking("time.sleep")
    def test_worker_thread_loop_allowed():
        thread = threading.Thread(target=asyncio.run, args=(sleep_and_stat(),))
        thread.start()
        thread.join()


    @pytest.fixture
    def blocking_fixture():
        async def main():
            time.sleep(0.01)

        asyncio.run(main())
        yield
        asyncio.run(main())


    @pytest.mark.allow_blocking("time.sleep")
    def test_setup_and_teardown_allowed(blocking_fixture):
        pass


    @pytest.mark.allow_blocking
    class TestClassMarked:
        def test_method(self):
            asyncio.run(sleep_and_stat())


    @pytest.mark.allow_blocking("time.slep")
    def test_unknown_key():
        pass


    @pytest.mark.allow_blocking(calls=["time.sleep"])
    def test_unknown_argument():
        pass


    @pytest.mark.allow_blocking("time.sleep in test_marker", "os.stat in test_*.sleep_and_stat")
    def test_rules_allowed():
        asyncio.run(sleep_and_stat())


    @pytest.mark.allow_blocking("time.sleep in elsewhere")
    def test_rule_elsewhere_still_fails():
        asyncio.run(sleep_and_stat())


    @pytest.mark.allow_blocking("time.sleep at test_marker")
    def test_bad_rule():
        pass
"""


def test_allow_blocking_marker(pytester: pytest.Pytester) -> None:
    write_ini(pytester)
    line = write_module(pytester, "test_marker", MARKER_MODULE)
    result, outcomes = run(pytester, "--strict-markers")
    assert outcomes == {
        "test_all_allowed": "passed",
        "test_keys_allowed": "passed",
        "test_other_key_still_fails": "failed",
        "test_patterns_allowed": "passed",
        "test_unmarked_after_marked": "failed",
        "test_worker_thread_loop_allowed": "failed",
        "test_setup_and_teardown_allowed": "passed",
        "TestClassMarked::test_method": "passed",
        "test_unknown_key": "error",
        "test_unknown_argument": "error",
        "test_rules_allowed": "passed",
        "test_rule_elsewhere_still_fails": "failed",
        "test_bad_rule": "error",
    }
    result.stdout.fnmatch_lines(
        [
            "*_ test_other_key_still_fails _*",
            f"  1. os.stat('.') would block the event loop in test_marker.py:{line['stat']} "
            "(sleep_and_stat), task 'Task-*', thread 'MainThread' — *",
            'Fix each call, or allow it in this test: @pytest.mark.allow_blocking("os.stat", *',
        ]
    )
    # the loop on a worker thread is covered by the marker too: only os.stat is reported
    result.stdout.fnmatch_lines(
        [
            "*_ test_worker_thread_loop_allowed _*",
            "asyncguard: 1 blocking call(s) ran on an event-loop thread during call:",
            f"  1. os.stat('.') would block the event loop in test_marker.py:{line['stat']} *",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "ERROR test_marker.py::test_unknown_key - Failed: @pytest.mark.allow_blocking: "
            "unknown call key in allow rule 'time.slep'; did you mean 'time.sleep'? "
            "(see asyncguard.known_calls() for the full list); it takes allow rules as the ini "
            "and settings do: a call key ('time.sleep', 'requests.*'), 'CALL in MODULE' *",
            "ERROR test_marker.py::test_unknown_argument - Failed: @pytest.mark.allow_blocking "
            "takes allow rules and reason=..., not calls; it takes allow rules as the ini *",
            "ERROR test_marker.py::test_bad_rule - Failed: @pytest.mark.allow_blocking: allow rule "
            "'time.sleep at test_marker' is not of the form 'CALL' or 'CALL in MODULE*",
        ]
    )


def test_marker_is_registered(pytester: pytest.Pytester) -> None:
    write_ini(pytester)
    result, _ = run(pytester, "--markers")
    result.stdout.fnmatch_lines(
        ["@pytest.mark.allow_blocking(*rules, reason=None): allow blocking calls on event-loop*"]
    )


ALLOW_INI_MODULE = """
    import asyncio
    import os
    import time

    import helpers


    def test_rule_with_module():
        async def main():
            helpers.nap()

        asyncio.run(main())


    def test_rule_without_module():
        async def main():
            os.stat(".")

        asyncio.run(main())


    def test_not_covered_by_the_module_rule():
        async def main():
            time.sleep(0.01)  # <- direct

        asyncio.run(main())
"""


def test_ini_allow_rules(pytester: pytest.Pytester) -> None:
    write_ini(pytester, "asyncguard_allow =", "    os.stat", "    time.sleep in helpers")
    write_module(pytester, "helpers", "import time\n\ndef nap():\n    time.sleep(0.01)\n")
    line = write_module(pytester, "test_allow_ini", ALLOW_INI_MODULE)
    result, outcomes = run(pytester)
    assert outcomes == {
        "test_rule_with_module": "passed",
        "test_rule_without_module": "passed",
        "test_not_covered_by_the_module_rule": "failed",
    }
    result.stdout.fnmatch_lines(
        [
            f"asyncguard: {asyncguard.__version__}, mode=raise, stall threshold 50 ms, "
            "2 allow rule(s)",
            "*"
            + violation_line(
                "test_allow_ini.py",
                line["direct"],
                "test_not_covered_by_the_module_rule.main",
                "task 'Task-*', thread 'MainThread'",
            ).lstrip(),
        ]
    )


FIXTURE_MODULE = """
    import asyncio
    import time

    import pytest


    def test_allow_a_block(asyncguard):
        async def main():
            with asyncguard.allow("time.sleep", reason="measured: 1 ms"):
                time.sleep(0.01)

        asyncio.run(main())
        assert asyncguard.violations == []
        assert asyncguard.mode == "raise"


    def test_allow_rejects_unknown_keys(asyncguard):
        with pytest.raises(ValueError, match="did you mean 'time.sleep'"):
            asyncguard.allow("time.slep")


    def test_sees_violations(asyncguard):
        async def main():
            try:
                time.sleep(0.01)  # <- seen
            except Exception:
                pass

        asyncio.run(main())
        [violation] = asyncguard.violations
        print("SEEN", violation.call, violation.where)
"""


def test_asyncguard_fixture(pytester: pytest.Pytester) -> None:
    write_ini(pytester)
    line = write_module(pytester, "test_fixture", FIXTURE_MODULE)
    result, outcomes = run(pytester)
    assert outcomes == {
        "test_allow_a_block": "passed",
        "test_allow_rejects_unknown_keys": "passed",
        "test_sees_violations": "failed",  # it saw the violation, and still fails for it
    }
    result.stdout.fnmatch_lines(
        [
            "*_ test_sees_violations _*",
            "asyncguard: 1 blocking call(s) ran on an event-loop thread during call:",
            "*- Captured stdout call -*",
            f"SEEN time.sleep test_fixture.py:{line['seen']} ({fn('test_sees_violations.main')})",
        ]
    )


# -- the session summary, with and without xdist ----------------------------------------------

REPORT_MODULE = """
    import asyncio
    import time


    async def nap():
        try:
            time.sleep(0.01)  # <- nap
        except Exception:
            pass


    def test_twice():
        async def main():
            await nap()
            await nap()

        asyncio.run(main())


    def test_once():
        asyncio.run(nap())


    def test_other_site():
        async def main():
            time.sleep(0.01)  # <- other

        asyncio.run(main())


    def test_clean():
        pass
"""


@pytest.mark.parametrize("workers", [0, 2], ids=["serial", "xdist"])
def test_report_summary(pytester: pytest.Pytester, workers: int) -> None:
    args = ["--asyncguard-report"]
    if workers:
        need("xdist", "pytest-xdist")
        args += ["-n", str(workers)]
    write_ini(pytester)
    line = write_module(pytester, "test_report", REPORT_MODULE)
    result, outcomes = run(pytester, *args)
    assert outcomes == {
        "test_twice": "failed",
        "test_once": "failed",
        "test_other_site": "failed",
        "test_clean": "passed",
    }
    result.assert_outcomes(passed=1, failed=3)
    result.stdout.fnmatch_lines(
        [
            "*= asyncguard: blocking calls on event-loop threads =*",
            f"    3  time.sleep at test_report.py:{line['nap']}  (2 test(s))",
            "         test_report.py::test_once",
            "         test_report.py::test_twice",
            f"    1  time.sleep at test_report.py:{line['other']}  (1 test(s))",
            "         test_report.py::test_other_site",
        ]
    )
    # the failure reports come through the xdist controller unchanged
    result.stdout.fnmatch_lines(
        [
            "*_ test_twice _*",
            "asyncguard: 2 blocking call(s) ran on an event-loop thread during call:",
            violation_line(
                "test_report.py", line["nap"], "nap", "task 'Task-*', thread 'MainThread'"
            )
            + " ?2 times?",
        ]
    )
    result.stdout.fnmatch_lines(
        [f"asyncguard: {asyncguard.__version__}, mode=raise, stall threshold 50 ms"]
    )


# -- runner setups ------------------------------------------------------------------------------

ASYNCIO_PLUGIN_MODULE = """
    import asyncio
    import time

    import pytest
    import pytest_asyncio


    @pytest_asyncio.fixture
    async def blocking_fixture():
        time.sleep(0.01)  # <- fixture
        yield


    @pytest.mark.asyncio  # strict only
    async def test_blocks():
        time.sleep(0.01)  # <- test


    @pytest.mark.asyncio  # strict only
    async def test_clean():
        await asyncio.sleep(0)
        await asyncio.to_thread(time.sleep, 0.01)


    @pytest.mark.asyncio  # strict only
    async def test_fixture_blocks(blocking_fixture):
        pass


    @pytest.mark.asyncio  # strict only
    async def test_swallowed_in_a_task():
        async def child():
            time.sleep(0.01)  # <- child

        with pytest.raises(Exception):
            await asyncio.create_task(child())


    @pytest.mark.asyncio(loop_scope="module")
    @pytest.mark.allow_blocking("time.sleep")
    async def test_allowed_on_shared_loop():
        time.sleep(0.01)


    @pytest.mark.asyncio(loop_scope="module")
    async def test_blocks_on_shared_loop_after_allowed():
        time.sleep(0.01)  # <- shared


    def test_sync_blocks():
        time.sleep(0.01)
"""


@pytest.mark.parametrize("mode", ["strict", "auto"])
def test_pytest_asyncio(pytester: pytest.Pytester, mode: str) -> None:
    need("pytest_asyncio", "pytest-asyncio")
    write_ini(pytester, f"asyncio_mode = {mode}")
    source = ASYNCIO_PLUGIN_MODULE
    if mode == "auto":
        source = "\n".join(x for x in source.splitlines() if "# strict only" not in x)
        source = source.replace("@pytest_asyncio.fixture", "@pytest.fixture")
    line = write_module(pytester, "test_asyncio_plugin", source)
    result, outcomes = run(pytester)
    assert outcomes == {
        "test_blocks": "failed",
        "test_clean": "passed",
        "test_fixture_blocks": "error",
        "test_swallowed_in_a_task": "failed",
        "test_allowed_on_shared_loop": "passed",
        "test_blocks_on_shared_loop_after_allowed": "failed",
        "test_sync_blocks": "passed",
    }
    file = "test_asyncio_plugin.py"
    task = "task 'Task-*', thread 'MainThread'"
    result.stdout.fnmatch_lines([violation_line(file, line["test"], "test_blocks", task)])
    result.stdout.fnmatch_lines(
        [
            "*_ ERROR at setup of test_fixture_blocks _*",
            "*asyncguard: 1 blocking call(s) ran on an event-loop thread during setup:",
            violation_line(file, line["fixture"], "blocking_fixture", task),
        ]
    )
    result.stdout.fnmatch_lines(
        [violation_line(file, line["child"], "test_swallowed_in_a_task.child", task)]
    )
    result.stdout.fnmatch_lines(
        [violation_line(file, line["shared"], "test_blocks_on_shared_loop_after_allowed", task)]
    )


ANYIO_MODULE = """
    import time

    import anyio
    import pytest


    @pytest.fixture(scope="module")
    def anyio_backend():
        return "asyncio"


    @pytest.fixture(scope="module")
    async def shared_runner():
        # a module-scoped async fixture keeps anyio's runner task alive across tests
        yield


    @pytest.mark.anyio
    async def test_blocks():
        time.sleep(0.01)  # <- test


    @pytest.mark.anyio
    async def test_clean():
        await anyio.sleep(0)
        await anyio.to_thread.run_sync(time.sleep, 0.01)


    @pytest.mark.anyio
    async def test_swallowed_in_task_group():
        async def child():
            try:
                time.sleep(0.01)  # <- child
            except Exception:
                pass

        async with anyio.create_task_group() as tg:
            tg.start_soon(child)


    @pytest.mark.anyio
    @pytest.mark.allow_blocking
    async def test_allowed_first(shared_runner):
        time.sleep(0.01)


    @pytest.mark.anyio
    async def test_blocks_after_allowed(shared_runner):
        time.sleep(0.01)  # <- after


    @pytest.mark.anyio
    @pytest.mark.allow_blocking("time.sleep")
    async def test_allowed_after_unmarked(shared_runner):
        time.sleep(0.01)
"""


def test_anyio_plugin(pytester: pytest.Pytester) -> None:
    need("anyio", "anyio")
    write_ini(pytester)
    line = write_module(pytester, "test_anyio_plugin", ANYIO_MODULE)
    result, outcomes = run(pytester)
    assert outcomes == {
        "test_blocks": "failed",
        "test_clean": "passed",
        "test_swallowed_in_task_group": "failed",
        "test_allowed_first": "passed",
        "test_blocks_after_allowed": "failed",
        "test_allowed_after_unmarked": "passed",
    }
    file = "test_anyio_plugin.py"
    task = "task '*', thread 'MainThread'"
    result.stdout.fnmatch_lines([violation_line(file, line["test"], "test_blocks", task)])
    result.stdout.fnmatch_lines(
        [violation_line(file, line["child"], "test_swallowed_in_task_group.child", task)]
    )
    result.stdout.fnmatch_lines(
        [violation_line(file, line["after"], "test_blocks_after_allowed", task)]
    )


UNITTEST_MODULE = """
    import asyncio
    import time
    import unittest

    import pytest


    class TestAsync(unittest.IsolatedAsyncioTestCase):
        async def test_blocks(self):
            time.sleep(0.01)  # <- test

        async def test_clean(self):
            await asyncio.sleep(0)
            await asyncio.to_thread(time.sleep, 0.01)

        @pytest.mark.allow_blocking("time.sleep")
        async def test_allowed(self):
            time.sleep(0.01)

        def test_sync_method_blocks(self):
            time.sleep(0.01)


    class TestAsyncSetUp(unittest.IsolatedAsyncioTestCase):
        async def asyncSetUp(self):
            try:
                time.sleep(0.01)  # <- setup
            except Exception:
                pass

        async def test_nothing(self):
            pass
"""


def test_unittest_isolated_asyncio_test_case(pytester: pytest.Pytester) -> None:
    write_ini(pytester)
    line = write_module(pytester, "test_unittest_async", UNITTEST_MODULE)
    result, outcomes = run(pytester)
    assert outcomes == {
        "TestAsync::test_blocks": "failed",
        "TestAsync::test_clean": "passed",
        "TestAsync::test_allowed": "passed",
        "TestAsync::test_sync_method_blocks": "passed",
        "TestAsyncSetUp::test_nothing": "failed",
    }
    file = "test_unittest_async.py"
    task = "task '*', thread 'MainThread'"
    result.stdout.fnmatch_lines([violation_line(file, line["test"], "TestAsync.test_blocks", task)])
    result.stdout.fnmatch_lines(
        [violation_line(file, line["setup"], "TestAsyncSetUp.asyncSetUp", task)]
    )


# -- Django ---------------------------------------------------------------------------------

DJANGO_SETTINGS = """
    SECRET_KEY = "not secret"
    DEBUG = True
    INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth"]
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
    ROOT_URLCONF = "djurls"
    MIDDLEWARE = []
    STATIC_URL = "/static/"
    USE_TZ = True
"""

DJANGO_URLS = """
    from django.urls import path

    import djviews

    urlpatterns = [
        path("blocks/", djviews.blocks),
        path("clean/", djviews.clean),
        path("users/", djviews.users),
    ]
"""

DJANGO_VIEWS = """
    import asyncio
    import time

    from django.contrib.auth.models import User
    from django.http import HttpResponse


    async def blocks(request):
        time.sleep(0.01)  # <- view
        return HttpResponse("slept")


    async def clean(request):
        await asyncio.sleep(0)
        return HttpResponse("ok")


    async def users(request):
        return HttpResponse(str(await User.objects.acount()))
"""


def django_project(pytester: pytest.Pytester, *ini: str) -> int:
    """A tiny Django project; returns the line of the blocking call in the view."""
    need("django", "django")
    need("pytest_django", "pytest-django")
    write_ini(pytester, "DJANGO_SETTINGS_MODULE = djsettings", "pythonpath = .", *ini)
    write_module(pytester, "djsettings", DJANGO_SETTINGS)
    write_module(pytester, "djurls", DJANGO_URLS)
    return write_module(pytester, "djviews", DJANGO_VIEWS)["view"]


DJANGO_APP_OFF_MODULE = """
    import asyncio
    import sys
    import time

    import django.apps


    def test_the_app_is_ready():
        assert django.apps.apps.is_installed("asyncguard.django")


    def test_blocks():
        async def main():
            time.sleep(0.01)

        asyncio.run(main())


    def test_nothing_is_patched():
        assert time.sleep.__module__ == "time" and not hasattr(time.sleep, "__wrapped__")
        guard = sys.modules["asyncguard._guard"].current()
        assert guard is None or not guard.installed
"""


def test_plugin_disabled_with_the_django_app(pytester: pytest.Pytester) -> None:
    """``-p no:asyncguard`` turns the guard fully off even with "asyncguard.django" in
    INSTALLED_APPS and raise mode in its settings: the app installs nothing under pytest."""
    django_project(pytester)
    settings = pytester.path / "djsettings.py"
    settings.write_text(
        settings.read_text().replace(
            '"django.contrib.auth"]', '"django.contrib.auth", "asyncguard.django"]'
        )
        + 'ASYNC_GUARD = {"MODE": "raise"}\n'
    )
    write_module(pytester, "test_app_off", DJANGO_APP_OFF_MODULE)
    result, outcomes = run(pytester, "-p", "no:asyncguard")
    assert outcomes == {
        "test_the_app_is_ready": "passed",
        "test_blocks": "passed",
        "test_nothing_is_patched": "passed",
    }, result.stdout.str()


PYTEST_DJANGO_MODULE = """
    import urllib.error
    import urllib.request

    import pytest
    from django.contrib.auth.models import User


    def test_client_view_blocks(client):
        with pytest.raises(Exception):
            client.get("/blocks/")


    def test_client_view_clean(client):
        assert client.get("/clean/").content == b"ok"


    @pytest.mark.asyncio
    async def test_async_client_view_blocks(async_client):
        await async_client.get("/blocks/")


    @pytest.mark.asyncio
    async def test_async_client_view_clean(async_client):
        assert (await async_client.get("/clean/")).content == b"ok"


    @pytest.mark.django_db(transaction=True)  # the ORM runs on sync_to_async's thread
    @pytest.mark.asyncio
    async def test_async_client_orm(async_client):
        await User.objects.acreate(username="ada")
        assert (await async_client.get("/users/")).content == b"1"


    @pytest.mark.django_db
    def test_client_orm(client):
        User.objects.create(username="ada")
        assert client.get("/users/").content == b"1"


    def test_live_server_view_blocks(live_server):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(live_server.url + "/blocks/")
        info.value.close()
        assert info.value.code == 500


    def test_live_server_view_clean(live_server):
        with urllib.request.urlopen(live_server.url + "/clean/") as response:
            assert response.read() == b"ok"


    @pytest.mark.allow_blocking("time.sleep", reason="the server thread is covered too")
    def test_live_server_view_allowed(live_server):
        with urllib.request.urlopen(live_server.url + "/blocks/") as response:
            assert response.read() == b"slept"


    def test_database_blocker_still_works():
        User.objects.count()


    @pytest.mark.asyncio
    async def test_database_blocker_still_works_behind_async_client(async_client):
        with pytest.raises(RuntimeError, match="Database access not allowed"):
            await async_client.get("/users/")
"""


def test_pytest_django(pytester: pytest.Pytester) -> None:
    need("pytest_asyncio", "pytest-asyncio")
    view = django_project(pytester)
    write_module(pytester, "test_pytest_django", PYTEST_DJANGO_MODULE)
    result, outcomes = run(pytester)
    assert outcomes == {
        "test_client_view_blocks": "failed",
        "test_client_view_clean": "passed",
        "test_async_client_view_blocks": "failed",
        "test_async_client_view_clean": "passed",
        "test_async_client_orm": "passed",
        "test_client_orm": "passed",
        "test_live_server_view_blocks": "failed",
        "test_live_server_view_clean": "passed",
        "test_live_server_view_allowed": "passed",
        "test_database_blocker_still_works": "failed",
        "test_database_blocker_still_works_behind_async_client": "passed",
    }
    where = f"djviews.py:{view} (blocks)"
    for test in ("test_client_view_blocks", "test_async_client_view_blocks"):
        result.stdout.fnmatch_lines(
            [
                f"*_ {test} _*",
                f"  1. time.sleep(0.01) would block the event loop in {where}, task '*', "
                f"thread '*' — {HINT}",
            ]
        )
    # the live server runs the view on its own thread's loop: still this test's violation
    result.stdout.fnmatch_lines(
        [
            "*_ test_live_server_view_blocks _*",
            "asyncguard: 1 blocking call(s) ran on an event-loop thread during call:",
            f"  1. time.sleep(0.01) would block the event loop in {where}, *",
        ]
    )
    # pytest-django's own error, untouched, and no asyncguard report for it
    result.stdout.fnmatch_lines(
        [
            "FAILED test_pytest_django.py::test_database_blocker_still_works - RuntimeError: "
            'Database access not allowed, use the "django_db" mark, or the "db" or '
            '"transactional_db" fixtures to enable it.'
        ]
    )
    assert len(listed(result, f"djviews.py:{view}")) == 3


DJANGO_TESTCASE_MODULE = """
    import time

    import pytest
    from asgiref.sync import sync_to_async
    from django.contrib.auth.models import User
    from django.test import TestCase


    class TestAsyncTests(TestCase):
        async def test_blocks(self):
            time.sleep(0.01)  # <- test

        async def test_view_blocks(self):
            with self.assertRaises(Exception):
                await self.async_client.get("/blocks/")

        async def test_orm_through_sync_to_async(self):
            await sync_to_async(User.objects.create)(username="ada")
            self.assertEqual(await User.objects.acount(), 1)

        @pytest.mark.allow_blocking("time.sleep")
        async def test_allowed(self):
            time.sleep(0.01)

        def test_sync_blocks(self):
            time.sleep(0.01)
"""


def test_django_test_case_async_tests(pytester: pytest.Pytester) -> None:
    view = django_project(pytester)
    line = write_module(pytester, "test_django_testcase", DJANGO_TESTCASE_MODULE)
    result, outcomes = run(pytester)
    assert outcomes == {
        "TestAsyncTests::test_blocks": "failed",
        "TestAsyncTests::test_view_blocks": "failed",
        "TestAsyncTests::test_orm_through_sync_to_async": "passed",
        "TestAsyncTests::test_allowed": "passed",
        "TestAsyncTests::test_sync_blocks": "passed",
    }
    # Django runs async tests with async_to_sync: the loop is on a worker thread
    [reported] = listed(result, f"test_django_testcase.py:{line['test']}")
    assert f"({fn('TestAsyncTests.test_blocks')}), task '" in reported
    assert "thread 'MainThread'" not in reported
    result.stdout.fnmatch_lines(
        [
            "*_ TestAsyncTests.test_view_blocks _*",
            f"  1. time.sleep(0.01) would block the event loop in djviews.py:{view} (blocks), *",
        ]
    )


STALL_MODULE = """
    import asyncio
    import time

    import pytest


    def spin(seconds):
        # `seconds` of wall time, a third of them at least on this thread's CPU: on a busy
        # machine too it is CPU-bound code that blocks, never a thread waiting for a CPU
        # (which the watchdog does not blame)
        end, cpu_end = time.perf_counter() + seconds, time.thread_time() + seconds / 3
        while time.perf_counter() < end or time.thread_time() < cpu_end:  # <- spin
            pass


    async def crunch():
        spin(0.3)  # <- crunch


    def test_cpu_stall():
        asyncio.run(crunch())


    def test_short_bursts_are_fine():
        async def main():
            for _ in range(10):
                spin(0.005)
                await asyncio.sleep(0.005)

        asyncio.run(main())


    @pytest.mark.allow_blocking("stall", reason="a known slow report")
    def test_allowed_stall():
        asyncio.run(crunch())
"""


@pytest.mark.parametrize("mode", ["raise", "warn"])
def test_stalls_fail_the_test(pytester: pytest.Pytester, mode: str) -> None:
    """Code no hook knows (a pure-Python loop) blocking a loop for 300 ms fails its test in
    raise mode and warns in warn mode; below the threshold or allowed, nothing."""
    lines = write_module(pytester, "test_stall", STALL_MODULE)
    write_ini(pytester, "filterwarnings = default")
    result, outcomes = run(pytester, f"--asyncguard-mode={mode}")
    expected = "failed" if mode == "raise" else "passed"
    assert outcomes == {
        "test_cpu_stall": expected,
        "test_short_bursts_are_fine": "passed",
        "test_allowed_stall": "passed",
    }, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*stall: the event loop was blocked for * ms in test_stall.py:"
            f"{lines['spin']} (spin) at "
            "`while time.perf_counter() < end or time.thread_time() < cpu_end:` "
            # a sample may also catch crunch() as spin() returns: "(12 of 13 samples; …)"
            "(* of * samples*), task 'Task-1', thread 'MainThread' — move the CPU-bound*"
        ]
    )
    if mode == "raise":
        result.stdout.fnmatch_lines(['*@pytest.mark.allow_blocking("stall", reason=...)*'])


def test_stall_threshold_option(pytester: pytest.Pytester) -> None:
    write_module(pytester, "test_stall", STALL_MODULE)
    write_ini(pytester, "asyncguard_stall_threshold = 0.5")
    result, outcomes = run(pytester)
    assert outcomes["test_cpu_stall"] == "passed", result.stdout.str()  # 300 ms < 500 ms
    result.stdout.fnmatch_lines(["asyncguard: *, mode=raise, stall threshold 500 ms"])
    result, outcomes = run(pytester, "--asyncguard-stall-threshold=0.1")
    assert outcomes["test_cpu_stall"] == "failed"
    result, outcomes = run(pytester, "--asyncguard-stall-threshold=off")
    assert outcomes["test_cpu_stall"] == "passed"
    result.stdout.fnmatch_lines(["asyncguard: *, mode=raise, watchdog off"])
    result, _ = run(pytester, "--asyncguard-stall-threshold=soon")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*--asyncguard-stall-threshold = 'soon' is not valid: seconds >= 0, like 0.5, "
            "'500ms' or '0.5s', or 'off' for no watchdog"
        ]
    )


@pytest.mark.parametrize(
    ("ini", "args"),
    [
        ("asyncguard_stall_threshold = 500ms", []),
        ("asyncguard_stall_threshold = 0.5s", []),
        ("asyncguard_stall_threshold = 0.1", ["--asyncguard-stall-threshold=500ms"]),
    ],
    ids=["ini-ms", "ini-s", "flag-ms"],
)
def test_stall_threshold_takes_every_duration_form(
    pytester: pytest.Pytester, ini: str, args: list[str]
) -> None:
    """The forms the environment variable and Django's setting take: 0.5, 500ms, 0.5s."""
    write_ini(pytester, ini)
    write_module(pytester, "test_nothing", "def test_nothing():\n    pass\n")
    result, outcomes = run(pytester, *args)
    assert outcomes == {"test_nothing": "passed"}, result.stdout.str()
    result.stdout.fnmatch_lines(["asyncguard: *, mode=raise, stall threshold 500 ms"])
