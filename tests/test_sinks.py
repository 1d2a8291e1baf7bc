"""The JSON-lines output (docs/json-lines.md, schema 1), written by real guarded runs and
read back by ``python -m asyncguard report``."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import asyncguard
from asyncguard._request import RequestInfo, request_var

COMMON = {"schema", "type", "time", "pid"}
VIOLATION_FIELDS = COMMON | {
    "call",
    "category",
    "location",
    "function",
    "duration_ms",
    "count",
    "request",
    "view",
    "task",
    "thread",
    "hint",
    "args",
    "mode",
    "offloaded",
    "message",
}
SITE_FIELDS = COMMON | {
    "call",
    "category",
    "location",
    "function",
    "count",
    "reported",
    "total_ms",
    "max_ms",
    "p95_ms",
    "histogram",
    "requests",
    "requests_truncated",
    "views",
    "since",
}
FLUSH_FIELDS = COMMON | {
    "final",
    "sites",
    "overflow_count",
    "overflow_ms",
    "suppressed",
    "dropped",
}
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(autouse=True)
def _clean() -> object:
    yield
    asyncguard.uninstall()


def serve(requests: int, seconds: float = 0.002) -> None:
    """``requests`` requests to one view that calls time.sleep, as the middleware would label
    them."""

    async def view(i: int) -> None:
        token = request_var.set(RequestInfo("GET", f"/report/{i % 3}"))
        try:
            time.sleep(seconds)  # the site
        finally:
            request_var.reset(token)

    async def main() -> None:
        for i in range(requests):
            await view(i)

    asyncio.run(main())


def test_schema_of_a_real_run(tmp_path: Path) -> None:
    out = tmp_path / "guard.jsonl"
    asyncguard.install(mode="warn", json=str(out), summary_interval=0, log=False)
    serve(5)
    asyncguard.uninstall()  # closes the file after a final flush
    records = read(out)
    assert [r["type"] for r in records] == ["violation", "site", "flush"]
    violation, site, flush = records
    assert set(violation) == VIOLATION_FIELDS
    assert set(site) == SITE_FIELDS
    assert set(flush) == FLUSH_FIELDS
    for record in records:
        assert record["schema"] == 1
        assert record["pid"] == os.getpid()
        assert ISO.match(record["time"])
    assert violation["call"] == "time.sleep"
    assert violation["category"] == "sleep"
    assert violation["location"].startswith("tests/test_sinks.py:")
    assert violation["function"] in ("serve.view", "view")  # qualified names from 3.11
    assert violation["duration_ms"] >= 2.0
    assert violation["count"] == 1
    assert violation["request"] == "GET /report/0"
    assert violation["thread"] == "MainThread"
    assert violation["task"].startswith("Task-")
    assert violation["args"] == "0.002"
    assert violation["mode"] == "warn"
    assert violation["hint"] == "use `await asyncio.sleep(0.002)` instead"
    assert violation["message"].startswith("time.sleep(0.002) blocked the event loop for ")
    assert site["location"] == violation["location"]
    assert site["count"] == site["reported"] == 5
    assert site["total_ms"] >= 10.0
    assert site["max_ms"] <= site["total_ms"]
    assert 0 < site["p95_ms"] <= site["max_ms"]
    assert sum(n for _, n in site["histogram"]) == 5
    assert site["requests"] == ["GET /report/0", "GET /report/1", "GET /report/2"]
    assert site["requests_truncated"] is False
    assert ISO.match(site["since"])
    assert flush == {
        **{k: flush[k] for k in COMMON},
        "type": "flush",
        "final": True,
        "sites": 1,
        "overflow_count": 0,
        "overflow_ms": 0.0,
        "suppressed": 0,
        "dropped": 0,
    }


def test_volume_follows_sites_not_traffic(tmp_path: Path) -> None:
    out = tmp_path / "guard.jsonl"
    asyncguard.install(mode="warn", json=str(out), summary_interval=0, log=False)
    serve(400, seconds=0.0001)
    asyncguard.uninstall()
    assert [r["type"] for r in read(out)] == ["violation", "site", "flush"]


def test_periodic_flushes_carry_intervals(tmp_path: Path) -> None:
    out = tmp_path / "guard.jsonl"
    asyncguard.install(mode="warn", json=str(out), summary_interval=0.2, log=False)
    serve(3)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not out.read_text().count('"flush"'):
        time.sleep(0.05)
    serve(2)
    asyncguard.uninstall()
    sites = [r for r in read(out) if r["type"] == "site"]
    flushes = [r for r in read(out) if r["type"] == "flush"]
    assert sum(s["count"] for s in sites) == 5  # each call in exactly one interval
    assert flushes[-1]["final"] is True
    assert all(not f["final"] for f in flushes[:-1])


def test_report_cli_reads_what_workers_wrote(tmp_path: Path) -> None:
    """Three worker processes append to one file (one killed before its first flush); the
    report adds them up."""
    out = tmp_path / "shared.jsonl"
    worker = tmp_path / "worker.py"
    worker.write_text(
        textwrap.dedent(
            """
            import asyncio, os, sys, time
            import asyncguard
            asyncguard.install(mode="warn", json=sys.argv[1], log=False)

            async def main(n):
                for _ in range(n):
                    time.sleep(0.003)

            asyncio.run(main(int(sys.argv[2])))
            if sys.argv[3] == "killed":
                os._exit(1)  # no at-exit flush: only the first violation line was written
            """
        )
    )
    for n, how in ((4, "normal"), (6, "normal"), (3, "killed")):
        subprocess.run(
            [sys.executable, str(worker), str(out), str(n), how], cwd=tmp_path, timeout=60
        )
    lines = read(out)
    assert len({r["pid"] for r in lines}) == 3
    result = subprocess.run(
        [sys.executable, "-m", "asyncguard", "report", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    (site,) = json.loads(result.stdout)["sites"]
    assert site["call"] == "time.sleep"
    assert site["location"] == "worker.py:8"
    assert site["calls"] == 4 + 6 + 1  # the killed worker's calls after its first are lost
    assert site["processes"] == 3
    assert site["total_ms"] >= 11 * 3.0
    text = subprocess.run(
        [sys.executable, "-m", "asyncguard", "report", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    ).stdout
    assert "time.sleep at worker.py:8 (main)" in text
    assert re.search(r"time\.sleep at worker\.py:8 \(main\)\s+11\s", text), text


def test_stderr_output(tmp_path: Path) -> None:
    script = tmp_path / "app.py"
    script.write_text(
        "import asyncio, time, asyncguard\n"
        "asyncguard.install(mode='warn', json='-', log=False)\n"
        "async def main():\n"
        "    time.sleep(0.001)\n"
        "asyncio.run(main())\n"
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    types = [json.loads(line)["type"] for line in result.stderr.splitlines()]
    assert types == ["violation", "site", "flush"]


def _block_twice() -> None:
    async def main() -> None:
        time.sleep(0.001)
        time.sleep(0.001)  # a second site

    asyncio.run(main())


def test_a_full_disk_keeps_the_guard_working_says_so_once_and_counts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """/dev/full: every write fails with ENOSPC, as on a full disk."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    caplog.set_level("WARNING", logger="asyncguard")
    with asyncguard.guarded(mode="warn", json="/dev/full") as guard:
        _block_twice()
    assert len(guard.violations) == 2  # reported as ever
    texts = [r.getMessage() for r in caplog.records if r.name == "asyncguard"]
    failing = [t for t in texts if "cannot write to the JSON-lines file '/dev/full'" in t]
    assert len(failing) == 1, texts  # once, however many lines failed
    assert "No space left on device" in failing[0]
    # the at-exit count: two violation lines, two site lines and the flush
    assert any(t == "5 lines could not be written to '/dev/full'" for t in texts), texts


def test_a_removed_file_is_created_again(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "out.jsonl"
    caplog.set_level("WARNING", logger="asyncguard")
    with asyncguard.guarded(mode="warn", json=str(path)):
        _block_twice()
        path.unlink()  # logrotate, a cleanup job
        _block_twice()
    records = read(path)
    assert [r["type"] for r in records][-1] == "flush"
    assert records[-1]["dropped"] == 0
    sites = [r for r in records if r["type"] == "site"]
    assert sorted(r["count"] for r in sites) == [2, 2]  # nothing counted was lost
    texts = [r.getMessage() for r in caplog.records]
    assert texts.count(f"the JSON-lines file {str(path)!r} was removed; it is created again") == 1
