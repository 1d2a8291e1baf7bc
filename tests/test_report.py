"""Warn mode built for staging: deduplicated per call site, counted, rate limited, bounded,
summarized.  Real blocking calls on real loops; the log is read through ``caplog``."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import asyncguard
from asyncguard import _guard, _report

HERE = Path(__file__).name


def block(times: int, seconds: float = 0.001) -> None:
    async def main() -> None:
        for _ in range(times):
            time.sleep(seconds)  # the site: one line, many calls

    asyncio.run(main())


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "asyncguard"]


@pytest.fixture(autouse=True)
def _clean() -> object:
    yield
    asyncguard.uninstall()


def test_a_site_is_logged_once_then_counted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "asyncguard")
    guard = asyncguard.install(mode="warn", summary_interval=0)
    with asyncguard.guarded() as g:
        block(25)
    assert len(g.violations) == 25  # collectors and callbacks see every call
    logged = lines(caplog)
    assert len(logged) == 2, logged  # the first call in full, then the 10th as a count
    assert logged[0].startswith("time.sleep(0.001) blocked the event loop for ")
    assert f"{HERE}:" in logged[0]
    assert logged[1].startswith(f"time.sleep at tests/{HERE}:")
    assert ": 10 calls so far, " in logged[1]
    assert logged[1].endswith("use `await asyncio.sleep(0.001)` instead")
    (site,) = guard.sites.sites.values()
    assert site.total.count == 25 and site.total.reported == 25
    assert site.total.total >= 25 * 0.001
    assert site.where == g.violations[0].where


def test_two_sites_on_one_line_of_code_are_one_site_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "asyncguard")
    guard = asyncguard.install(mode="warn", summary_interval=0)

    async def main() -> None:
        for _ in range(3):
            time.sleep(0.001)
            open(__file__).close()

    asyncio.run(main())
    assert sorted(key for key, _ in guard.sites.sites) == ["open", "time.sleep"]
    assert len(lines(caplog)) == 2


def test_min_duration_reports_the_slow_calls_and_counts_all(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "asyncguard")
    guard = asyncguard.install(mode="warn", min_duration=0.03, summary_interval=0)
    seen: list[asyncguard.Violation] = []
    guard.callbacks = (seen.append,)

    async def main() -> None:
        for seconds in (0.001, 0.001, 0.05, 0.001):
            time.sleep(seconds)

    asyncio.run(main())
    assert [round(v.duration or 0, 2) for v in seen] == [0.05]
    (logged,) = lines(caplog)
    assert "time.sleep(0.05) blocked the event loop" in logged
    (site,) = guard.sites.sites.values()
    assert (site.total.count, site.total.reported) == (4, 1)
    assert site.total.total >= 0.053


def test_the_rate_limit_drops_log_lines_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "asyncguard")
    guard = asyncguard.install(mode="warn", rate_limit=3, summary_interval=0)

    async def main() -> None:
        for i in range(8):  # eight sites: eight first reports, three may be logged
            exec(compile("time.sleep(0.001)", f"<site {i}>", "exec"), {"time": time})

    asyncio.run(main())
    assert len(lines(caplog)) == 3
    assert guard.limiter.suppressed == 5
    assert len(guard.sites.sites) == 8  # all counted
    caplog.clear()
    _report.summarize(guard, final=True)
    (summary,) = lines(caplog)
    assert "8 blocking calls at 8 sites" in summary
    assert "(5 log lines were dropped by the rate limit)" in summary


def test_the_site_table_is_capped(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "asyncguard")
    guard = asyncguard.install(mode="warn", max_sites=2, summary_interval=0, rate_limit=0)

    async def main() -> None:
        for i in range(6):
            exec(compile("time.sleep(0.001)", f"<site {i}>", "exec"), {"time": time})

    asyncio.run(main())
    assert len(guard.sites.sites) == 2
    assert guard.sites.overflow_count == 4
    assert guard.sites.overflow_total >= 0.004
    assert len(lines(caplog)) == 2  # sites beyond the cap are counted, not logged
    text = guard.summary()
    assert "+ 4 calls (" in text and "beyond the max_sites table limit" in text


def test_memory_does_not_grow_with_traffic() -> None:
    """Thousands of calls at a few sites from thousands of requests: the table holds the
    sites, a bounded histogram each, and at most 20 request labels."""
    guard = asyncguard.install(mode="warn", summary_interval=0, log=False)
    table = guard.sites
    from asyncguard._request import RequestInfo, request_var

    async def one(i: int) -> None:
        token = request_var.set(RequestInfo("GET", f"/item/{i}"))
        try:
            time.sleep(0.0001 * (1 + i % 7))  # durations spread over many buckets
        finally:
            request_var.reset(token)

    async def main() -> None:
        for i in range(3000):
            await one(i)

    asyncio.run(main())
    (site,) = table.sites.values()
    assert site.total.count == 3000
    assert len(site.total.requests) == 20 and site.total.requests_truncated
    assert len(site.total.histogram.counts) <= 40


def test_periodic_summary_from_the_watchdog_thread(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "asyncguard")
    asyncguard.install(mode="warn", summary_interval=0.2)
    block(3)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any("the last" in m for m in lines(caplog)):
        time.sleep(0.05)
    summaries = [m for m in lines(caplog) if m.startswith("the last ")]
    assert summaries, lines(caplog)
    assert "3 blocking calls at 1 site; top by time:" in summaries[0]
    assert f"1. time.sleep at tests/{HERE}:" in summaries[0]
    assert "3 calls" in summaries[0] and "p95" in summaries[0]


def test_summary_lists_the_top_offenders_by_blocked_time() -> None:
    guard = asyncguard.install(mode="warn", summary_interval=0, log=False)

    async def main() -> None:
        for _ in range(5):
            time.sleep(0.001)  # many short calls
        time.sleep(0.03)  # one long call: more time in total

    asyncio.run(main())
    text = guard.summary()
    first, second = text.splitlines()[1:3]
    assert first.lstrip().startswith("1. time.sleep") and ": 1 call," in first
    assert second.lstrip().startswith("2. time.sleep") and ": 5 calls" in second


def test_at_exit_summary_in_a_real_process(tmp_path: Path) -> None:
    """A script that never uninstalls: the summary is logged when the interpreter exits."""
    script = tmp_path / "app.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio, logging, time
            import asyncguard
            logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
            asyncguard.install(mode="warn")

            async def main():
                for _ in range(12):
                    time.sleep(0.002)

            asyncio.run(main())
            print("done")
            """
        )
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "done\n"
    err = result.stderr.splitlines()
    assert err[0].startswith("WARNING asyncguard: time.sleep(0.002) blocked the event loop for ")
    assert err[1].startswith("WARNING asyncguard: time.sleep at app.py:9 (main): 10 calls so far, ")
    assert err[2] == (
        "WARNING asyncguard: summary since start: 12 blocking calls at 1 site; top by time:"
    )
    assert err[3].startswith("  1. time.sleep at app.py:9 (main): 12 calls, ")
    assert len(err) == 4, result.stderr


def test_a_broken_logging_handler_never_breaks_the_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            raise RuntimeError("disk full")

        def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802
            raise RuntimeError("and the error handler too")

    handler = Broken()
    logger = logging.getLogger("asyncguard")
    logger.addHandler(handler)
    try:
        asyncguard.install(mode="warn", summary_interval=0)

        async def main() -> str:
            time.sleep(0.001)
            return "served"

        assert asyncio.run(main()) == "served"
    finally:
        logger.removeHandler(handler)


def test_a_handler_writing_a_file_on_the_loop_does_not_reenter(tmp_path: Path) -> None:
    """A FileHandler opens and writes its file on the loop thread: never reported itself."""
    handler = logging.FileHandler(tmp_path / "app.log", delay=True)  # opens on first record
    logger = logging.getLogger("asyncguard")
    logger.addHandler(handler)
    try:
        with asyncguard.guarded(mode="warn", summary_interval=0) as g:
            block(2)
        assert g.calls == ["time.sleep", "time.sleep"]
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert "time.sleep(0.001) blocked the event loop" in (tmp_path / "app.log").read_text()


def test_reported_arguments_hold_no_secrets() -> None:
    with asyncguard.guarded(mode="raise") as g:

        async def main() -> None:
            import urllib.request

            with pytest.raises(asyncguard.BlockingCallError):
                urllib.request.urlopen("https://user:hunter2@example.com/x?token=s3cret")

        asyncio.run(main())
    (violation,) = g.violations
    text = violation.message()
    assert "hunter2" not in text and "s3cret" not in text
    assert "https://example.com/x?…" in text


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("rate_limit", -1, "rate_limit = -1 is not valid: a whole number >= 0"),
        ("rate_limit", 1.5, "rate_limit = 1.5 is not valid: a whole number >= 0"),
        ("max_sites", 0, "max_sites = 0 is not valid: a whole number >= 1"),
        ("summary_interval", "5m", "summary_interval = '5m' is not valid: seconds >= 0"),
        ("stall_threshold", -0.1, "stall_threshold = -0.1 is not valid: seconds >= 0"),
        ("json", "", "json = '' is not valid: a file path, or '-' for standard error"),
    ],
)
def test_bad_options_name_the_value(option: str, value: object, expected: str) -> None:
    with pytest.raises(ValueError, match="^" + expected.replace("(", r"\(").replace(")", r"\)")):
        asyncguard.install(mode="warn", **{option: value})
    assert _guard.current() is None


def test_unwritable_json_path_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "missing-dir" / "out.jsonl"
    with pytest.raises(ValueError, match=r"cannot open the asyncguard JSON-lines file .*out.jsonl"):
        asyncguard.install(mode="warn", json=str(path))


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNC_GUARD_")}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


BLOCK = """
    import asyncio, time
    async def main():
        time.sleep(0.002)
    asyncio.run(main())
"""


def test_without_logging_configured_warnings_print_as_the_readme_shows() -> None:
    """No handler anywhere: Python's last resort would print the bare message."""
    result = _run_python("import asyncguard\nasyncguard.install('warn')\n" + textwrap.dedent(BLOCK))
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith("WARNING asyncguard: time.sleep(0.002) blocked the event loop"), (
        lines
    )
    assert (
        lines[1]
        == "WARNING asyncguard: summary since start: 1 blocking call at 1 site; top by time:"
    )


def test_logging_configured_later_prints_each_line_once() -> None:
    setup = """
        import logging, sys
        import asyncguard
        asyncguard.install('warn')
        logging.basicConfig(stream=sys.stdout, format="%(levelname)s %(name)s| %(message)s")
    """
    result = _run_python(textwrap.dedent(setup) + textwrap.dedent(BLOCK))
    assert result.returncode == 0, result.stderr
    assert "blocked the event loop" not in result.stderr  # the fallback stood aside
    assert result.stdout.count("WARNING asyncguard| time.sleep(0.002) blocked") == 1


def test_the_guard_says_once_that_it_is_active() -> None:
    result = _run_python(
        """
        import logging, sys
        logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(name)s| %(message)s")
        import asyncguard
        asyncguard.install('warn', stall_threshold='250ms', json='-', exclude=['console'])
        asyncguard.install('raise')  # reconfigured: not said again
        with asyncguard.guarded(mode='warn'):
            pass
        """
    )
    assert result.returncode == 0, result.stderr
    active = [line for line in result.stdout.splitlines() if "active in process" in line]
    assert len(active) == 1, result.stdout
    assert active[0].startswith("asyncguard| active in process ")
    assert (
        "mode warn; hooks: sleep, files, network, processes, database, sync, django, " in active[0]
    )
    assert (
        "watchdog stall threshold 250 ms; reports to the asyncguard logger, JSON lines '-'"
        in active[0]
    )
