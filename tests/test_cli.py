"""``python -m asyncguard report``: run as a real subprocess on JSON-lines files written by hand
after docs/json-lines.md (schema 1)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from asyncguard._cli import human_ms

SLEEP = ("time.sleep", "shop/views.py:42", "bad_sleep", "sleep")
URLOPEN = ("urllib.request.urlopen", "shop/api.py:17", "fetch_rates", "network")
OPEN = ("builtins.open", "shop/reports.py:88", "export_csv", "file")
RUN = ("subprocess.run", "shop/pdf.py:120", "render_invoice", "process")


def violation(
    pid: int,
    time: str,
    site: tuple[str, str, str, str],
    duration_ms: float | None,
    request: str | None = None,
    view: str | None = None,
) -> dict[str, Any]:
    call, location, function, category = site
    mode = "warn" if duration_ms is not None else "raise"
    return {
        "schema": 1,
        "type": "violation",
        "time": f"2026-11-25T{time}Z",
        "pid": pid,
        "call": call,
        "category": category,
        "location": location,
        "function": function,
        "duration_ms": duration_ms,
        "count": 1,
        "request": request,
        "view": view,
        "task": "Task-7",
        "thread": "MainThread",
        "hint": "use the async equivalent",
        "args": "0.05",
        "mode": mode,
        "message": f"{call}() blocked the event loop at {location} ({function})",
    }


def site_line(
    pid: int,
    time: str,
    since: str,
    site: tuple[str, str, str, str],
    *,
    count: int,
    total_ms: float,
    max_ms: float,
    histogram: list[list[float]],
    requests: list[str],
    views: list[str],
    truncated: bool = False,
) -> dict[str, Any]:
    call, location, function, category = site
    return {
        "schema": 1,
        "type": "site",
        "time": f"2026-11-25T{time}Z",
        "pid": pid,
        "call": call,
        "category": category,
        "location": location,
        "function": function,
        "count": count,
        "reported": count,
        "total_ms": total_ms,
        "max_ms": max_ms,
        "p95_ms": histogram[-1][0],  # not read: the report merges histograms instead
        "histogram": histogram,
        "requests": requests,
        "requests_truncated": truncated,
        "views": views,
        "since": f"2026-11-25T{since}Z",
    }


def flush(
    pid: int,
    time: str,
    sites: int,
    *,
    final: bool = False,
    overflow_count: int = 0,
    overflow_ms: float = 0.0,
    suppressed: int = 0,
) -> dict[str, Any]:
    return {
        "schema": 1,
        "type": "flush",
        "time": f"2026-11-25T{time}Z",
        "pid": pid,
        "final": final,
        "sites": sites,
        "overflow_count": overflow_count,
        "overflow_ms": overflow_ms,
        "suppressed": suppressed,
    }


ITEMS = [f"GET /items/{i}" for i in range(1, 21)]

# Four uvicorn workers appending to one file.  101 and 102 flush normally; 103 was killed
# before its first flush (only violation lines); 104 flushed once, then was killed after a
# violation at a new site.  Histogram bounds are upper(bucket(ms)) of _histogram.py.
SAMPLE: list[dict[str, Any]] = [
    violation(101, "15:40:01.250", SLEEP, 52.3, "GET /bad/sleep", "shop.views.bad_sleep"),
    violation(103, "15:40:02.100", RUN, None, "POST /invoices/7/pdf", "shop.views.invoice_pdf"),
    violation(102, "15:40:03.000", URLOPEN, 210.0, "GET /rates", "shop.api.rates"),
    violation(104, "15:40:04.000", OPEN, 3.2),  # a background task: no request
    violation(103, "15:40:05.500", SLEEP, 48.0, "GET /items/21", "shop.views.item"),
    # 45, 52.3, 52.7 ms
    site_line(
        101,
        "15:41:00.000",
        "15:40:00.000",
        SLEEP,
        count=3,
        total_ms=150.0,
        max_ms=52.7,
        histogram=[[48.7099, 1], [57.9262, 2]],
        requests=["GET /bad/sleep"],
        views=["shop.views.bad_sleep"],
    ),
    flush(101, "15:41:00.001", 1, suppressed=2),
    # 50, 51 ms
    site_line(
        102,
        "15:41:00.200",
        "15:40:00.100",
        SLEEP,
        count=2,
        total_ms=101.0,
        max_ms=51.0,
        histogram=[[57.9262, 2]],
        requests=["GET /bad/sleep", "POST /checkout"],
        views=["shop.views.bad_sleep", "shop.views.checkout"],
    ),
    site_line(
        102,
        "15:41:00.201",
        "15:40:00.100",
        URLOPEN,
        count=1,
        total_ms=210.0,
        max_ms=210.0,
        histogram=[[231.705, 1]],
        requests=["GET /rates"],
        views=["shop.api.rates"],
    ),
    flush(102, "15:41:00.202", 2, overflow_count=5, overflow_ms=37.5),
    # 2.5, 3.1, 3.2, 3.2 ms: includes the violation line of 104 above
    site_line(
        104,
        "15:41:00.300",
        "15:40:00.050",
        OPEN,
        count=4,
        total_ms=12.0,
        max_ms=3.2,
        histogram=[[2.56, 1], [3.62039, 3]],
        requests=[],
        views=[],
    ),
    flush(104, "15:41:00.301", 1),
    violation(104, "15:41:30.000", URLOPEN, 250.0, "GET /rates", "shop.api.rates"),
    # a later minor version's line type: ignored
    {"schema": 1, "type": "heartbeat", "time": "2026-11-25T15:41:45.000Z", "pid": 101},
    # 18 calls around 50 ms, 387.5 ms and 412.5 ms
    site_line(
        101,
        "15:42:00.000",
        "15:41:00.001",
        SLEEP,
        count=20,
        total_ms=1700.0,
        max_ms=412.5,
        histogram=[[57.9262, 18], [389.679, 1], [463.41, 1]],
        requests=ITEMS,
        views=["shop.views.bad_sleep", "shop.views.item"],
        truncated=True,
    ),
    flush(101, "15:42:00.001", 1, final=True, overflow_count=2, overflow_ms=4.5, suppressed=1),
]

# time.sleep: merged buckets 48.7099 x2, 57.9262 x22, 389.679 x1, 463.41 x1 = 26 calls (one from
# killed 103); the 95th percentile is call 25 -> 389.679 (without 103's call it would be 57.9262).
SLEEP_SITE = {
    "call": "time.sleep",
    "category": "sleep",
    "location": "shop/views.py:42",
    "function": "bad_sleep",
    "calls": 26,
    "total_ms": 1999.0,
    "p95_ms": 389.679,
    "max_ms": 412.5,
    "requests": 23,  # 2 + 20 listed + GET /items/21 of the killed process
    "requests_at_least": True,
    "views": ["shop.views.bad_sleep", "shop.views.checkout", "shop.views.item"],
    "processes": 3,
}
# 102's interval + the violation 104 wrote after its last flush: 210 + 250 ms
URLOPEN_SITE = {
    "call": "urllib.request.urlopen",
    "category": "network",
    "location": "shop/api.py:17",
    "function": "fetch_rates",
    "calls": 2,
    "total_ms": 460.0,
    "p95_ms": 250.0,
    "max_ms": 250.0,
    "requests": 1,
    "requests_at_least": False,
    "views": ["shop.api.rates"],
    "processes": 2,
}
# 104's violation line came before its flush: counted once, in the site line
OPEN_SITE = {
    "call": "builtins.open",
    "category": "file",
    "location": "shop/reports.py:88",
    "function": "export_csv",
    "calls": 4,
    "total_ms": 12.0,
    "p95_ms": 3.2,
    "max_ms": 3.2,
    "requests": 0,
    "requests_at_least": False,
    "views": [],
    "processes": 1,
}
# raise mode in the killed process: a call without a duration
RUN_SITE = {
    "call": "subprocess.run",
    "category": "process",
    "location": "shop/pdf.py:120",
    "function": "render_invoice",
    "calls": 1,
    "total_ms": 0.0,
    "p95_ms": None,
    "max_ms": None,
    "requests": 1,
    "requests_at_least": False,
    "views": ["shop.views.invoice_pdf"],
    "processes": 1,
}

SUMMARY = {
    "skipped_lines": 0,
    "lines": 15,
    "processes": 4,
    "since": "2026-11-25T15:40:00.000Z",
    "until": "2026-11-25T15:42:00.001Z",
    "overflow_count": 7,
    "overflow_ms": 42.0,
    "suppressed": 3,
}


def write(path: Path, lines: list[dict[str, Any] | str]) -> Path:
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    path.write_text(text, encoding="utf-8")
    return path


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asyncguard", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def report_json(*args: str, stdin: str | None = None) -> dict[str, Any]:
    result = run("report", "--json", *args, stdin=stdin)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    document: dict[str, Any] = json.loads(result.stdout)
    return document


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    return write(tmp_path / "asyncguard.jsonl", list(SAMPLE))


def test_json_output_follows_reading_it(sample: Path) -> None:
    assert report_json(str(sample)) == {
        "schema": 1,
        "sites": [SLEEP_SITE, URLOPEN_SITE, OPEN_SITE, RUN_SITE],
        "files": [str(sample)],
        **SUMMARY,
    }


def test_text_output(sample: Path) -> None:
    result = run("report", str(sample))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    expected = """\
asyncguard report: 15 lines from 4 processes in FILE, 2026-11-25 15:40:00 to 15:42:00 UTC (2 min)

#  site                                                    calls    total      p95      max  labels
1  time.sleep at shop/views.py:42 (bad_sleep)                 26   2.00 s   390 ms   412 ms     23+
2  urllib.request.urlopen at shop/api.py:17 (fetch_rates)      2   460 ms   250 ms   250 ms       1
3  builtins.open at shop/reports.py:88 (export_csv)            4  12.0 ms  3.20 ms  3.20 ms       -
4  subprocess.run at shop/pdf.py:120 (render_invoice)          1        -        -        -       1

labels: distinct METHOD + path of the requests; N+: at least N (more than listed)
plus 7 calls (42.0 ms) at untracked sites: the site table was full (raise max_sites)
3 log lines suppressed by the rate limit (the counts above include their calls)
"""
    assert result.stdout == expected.replace("FILE", str(sample))


@pytest.mark.parametrize(
    ("sort", "order"),
    [
        ("total", [SLEEP_SITE, URLOPEN_SITE, OPEN_SITE, RUN_SITE]),
        ("calls", [SLEEP_SITE, OPEN_SITE, URLOPEN_SITE, RUN_SITE]),
        ("p95", [SLEEP_SITE, URLOPEN_SITE, OPEN_SITE, RUN_SITE]),
        ("max", [SLEEP_SITE, URLOPEN_SITE, OPEN_SITE, RUN_SITE]),
    ],
)
def test_sort(sample: Path, sort: str, order: list[dict[str, Any]]) -> None:
    assert report_json("--sort", sort, str(sample))["sites"] == order


def test_sort_p95_and_max_differ_from_total(tmp_path: Path) -> None:
    # many short calls (most total time) vs one long call (highest p95 and max)
    lines: list[dict[str, Any] | str] = [
        site_line(
            7,
            "10:00:10.000",
            "10:00:00.000",
            SLEEP,
            count=100,
            total_ms=500.0,
            max_ms=5.5,
            histogram=[[6.08874, 100]],
            requests=["GET /a"],
            views=[],
        ),
        site_line(
            7,
            "10:00:10.000",
            "10:00:00.000",
            OPEN,
            count=1,
            total_ms=300.0,
            max_ms=300.0,
            histogram=[[327.68, 1]],
            requests=[],
            views=[],
        ),
        flush(7, "10:00:10.001", 2),
    ]
    path = write(tmp_path / "a.jsonl", lines)
    calls = {
        sort: [s["call"] for s in report_json("--sort", sort, str(path))["sites"]]
        for sort in ("total", "calls", "p95", "max")
    }
    assert calls == {
        "total": ["time.sleep", "builtins.open"],
        "calls": ["time.sleep", "builtins.open"],
        "p95": ["builtins.open", "time.sleep"],
        "max": ["builtins.open", "time.sleep"],
    }


def test_top(sample: Path) -> None:
    assert report_json("--top", "2", "--sort", "calls", str(sample))["sites"] == [
        SLEEP_SITE,
        OPEN_SITE,
    ]
    assert len(report_json("--top", "0", str(sample))["sites"]) == 4
    text = run("report", "--top", "1", str(sample)).stdout
    assert "1  time.sleep at shop/views.py:42 (bad_sleep)" in text
    assert "urlopen" not in text
    assert "3 more sites not shown (--top 0 shows all)" in text


def test_top_default_is_20(tmp_path: Path) -> None:
    lines: list[dict[str, Any] | str] = [
        violation(9, f"10:00:{i:02d}.000", ("time.sleep", f"app.py:{i}", "f", "sleep"), float(i))
        for i in range(1, 26)
    ]
    path = write(tmp_path / "a.jsonl", lines)
    sites = report_json(str(path))["sites"]
    assert [s["location"] for s in sites] == [f"app.py:{i}" for i in range(25, 5, -1)]
    assert "5 more sites not shown" in run("report", str(path)).stdout


def test_stdin(sample: Path) -> None:
    document = report_json("-", stdin=sample.read_text(encoding="utf-8"))
    assert document == {
        "schema": 1,
        "sites": [SLEEP_SITE, URLOPEN_SITE, OPEN_SITE, RUN_SITE],
        "files": ["-"],
        **SUMMARY,
    }
    assert "in <stdin>, 2026-11-25" in run("report", "-", stdin=sample.read_text()).stdout


def test_several_files_in_order(tmp_path: Path) -> None:
    # rotated: 104's violation line is in the old file, the flush that covers it in the new one
    old = write(tmp_path / "asyncguard.jsonl.1", list(SAMPLE[:11]))
    new = write(tmp_path / "asyncguard.jsonl", list(SAMPLE[11:]))
    document = report_json(str(old), str(new))
    assert document["sites"] == [SLEEP_SITE, URLOPEN_SITE, OPEN_SITE, RUN_SITE]
    assert document["files"] == [str(old), str(new)]
    assert "in 2 files, 2026-11-25" in run("report", str(old), str(new)).stdout


def test_gzip(tmp_path: Path) -> None:
    text = "".join(json.dumps(line) + "\n" for line in SAMPLE)
    path = tmp_path / "asyncguard.jsonl.2.gz"
    path.write_bytes(gzip.compress(text.encode()))
    assert report_json(str(path))["sites"] == [SLEEP_SITE, URLOPEN_SITE, OPEN_SITE, RUN_SITE]


def test_violations_only_after_the_pids_own_last_flush(tmp_path: Path) -> None:
    lines: list[dict[str, Any] | str] = [
        violation(1, "10:00:00.000", SLEEP, 10.0, "GET /a"),  # covered by 1's site line
        violation(2, "10:00:01.000", SLEEP, 20.0, "GET /b"),  # 2 never flushes
        site_line(
            1,
            "10:00:10.000",
            "10:00:00.000",
            SLEEP,
            count=1,
            total_ms=10.0,
            max_ms=10.0,
            histogram=[[10.24, 1]],
            requests=["GET /a"],
            views=[],
        ),
        flush(1, "10:00:10.001", 1),  # must not settle 2's violation
        violation(1, "10:00:11.000", OPEN, 1.0, "GET /c"),  # 1 killed after this
    ]
    path = write(tmp_path / "a.jsonl", lines)
    sites = {s["call"]: s for s in report_json(str(path))["sites"]}
    assert sites["time.sleep"]["calls"] == 2
    assert sites["time.sleep"]["total_ms"] == 30.0
    assert sites["time.sleep"]["p95_ms"] == 20.0  # the 20.48 bucket, capped at the max
    assert sites["time.sleep"]["requests"] == 2
    assert sites["time.sleep"]["processes"] == 2
    assert sites["builtins.open"]["calls"] == 1
    assert sites["builtins.open"]["total_ms"] == 1.0


def test_malformed_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    lines: list[dict[str, Any] | str] = [
        "not json at all",
        "",  # blank lines are not malformed
        "[1, 2, 3]",
        '{"type": "site", "pid": 1}',  # no schema
        '{"schema": 1, "pid": 1}',  # no type
        *SAMPLE,
        '{"schema": 1, "type": "site", "pid": 1, "ca',  # cut off
    ]
    path = write(tmp_path / "a.jsonl", lines)
    result = run("report", "--json", str(path))
    assert result.returncode == 0
    assert result.stderr == f"skipped 5 malformed lines (the first at {path}:1)\n"
    document = json.loads(result.stdout)
    assert document["skipped_lines"] == 5
    assert document["sites"] == [SLEEP_SITE, URLOPEN_SITE, OPEN_SITE, RUN_SITE]

    result = run("report", str(path))
    assert result.returncode == 0
    assert "skipped 5 malformed lines" in result.stderr
    assert result.stdout.startswith("asyncguard report: 15 lines from 4 processes")


def test_a_file_with_no_record_is_not_an_asyncguard_file(tmp_path: Path) -> None:
    """``report README.md`` is a mistake, not an empty report: exit status 2."""
    other = write(tmp_path / "notes.md", ["# notes", "some text", '{"a": 1}'])
    result = run("report", str(other))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"python -m asyncguard report: error: '{other}' is not an asyncguard JSON-lines file: "
        "none of its 3 lines is an asyncguard record (give the file ASYNC_GUARD_JSON or the "
        "json option wrote)\n"
    )
    good = write(tmp_path / "a.jsonl", SAMPLE)  # one wrong file among good ones: still wrong
    assert run("report", str(good), str(other)).returncode == 2
    empty = write(tmp_path / "empty.jsonl", [])  # nothing recorded yet: not an error
    assert run("report", str(empty)).returncode == 0


def test_malformed_known_line_does_not_count_half(tmp_path: Path) -> None:
    good = site_line(
        1,
        "10:00:10.000",
        "10:00:00.000",
        SLEEP,
        count=2,
        total_ms=20.0,
        max_ms=10.0,
        histogram=[[10.24, 2]],
        requests=["GET /a"],
        views=[],
    )
    bad = {**good, "histogram": [[10.24, "two"]]}
    path = write(tmp_path / "a.jsonl", [good, bad, flush(1, "10:00:10.001", 1)])
    result = run("report", "--json", str(path))
    assert result.stderr == f"skipped 1 malformed line (the first at {path}:2)\n"
    assert json.loads(result.stdout)["sites"][0]["calls"] == 2


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path / "a.jsonl", [*SAMPLE[:3], {"schema": 2, "type": "site", "pid": 1}, *SAMPLE[3:]]
    )
    for args in (["report", str(path)], ["report", "--json", str(path)]):
        result = run(*args)
        assert result.returncode == 2
        assert result.stdout == ""
        assert result.stderr == (
            f"python -m asyncguard report: error: {path}:4 has schema 2; "
            "this asyncguard reads schema 1 — upgrade asyncguard\n"
        )


def test_missing_file(tmp_path: Path, sample: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    result = run("report", str(sample), str(missing))
    assert result.returncode == 2
    assert result.stdout == ""
    assert str(missing) in result.stderr
    assert "No such file or directory" in result.stderr
    assert "Traceback" not in result.stderr


def test_directory_is_an_error(tmp_path: Path) -> None:
    result = run("report", str(tmp_path))
    assert result.returncode == 2
    assert str(tmp_path) in result.stderr
    assert "Traceback" not in result.stderr


def test_empty_input(tmp_path: Path) -> None:
    path = write(tmp_path / "a.jsonl", [])
    result = run("report", str(path))
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        f"no blocking calls recorded in {path}\n",
        "",
    )
    # processes that flushed without any blocking call
    quiet = write(tmp_path / "b.jsonl", [flush(1, "10:00:00.000", 0, final=True)])
    result = run("report", str(quiet))
    assert (result.returncode, result.stdout) == (0, f"no blocking calls recorded in {quiet}\n")
    result = run("report", "-", stdin="")
    assert (result.returncode, result.stdout) == (0, "no blocking calls recorded in <stdin>\n")
    assert report_json(str(path)) == {
        "schema": 1,
        "sites": [],
        "files": [str(path)],
        "skipped_lines": 0,
        "lines": 0,
        "processes": 0,
        "since": None,
        "until": None,
        "overflow_count": 0,
        "overflow_ms": 0.0,
        "suppressed": 0,
    }


def test_only_overflow_is_still_reported(tmp_path: Path) -> None:
    path = write(
        tmp_path / "a.jsonl", [flush(1, "10:00:00.000", 0, overflow_count=3, overflow_ms=1500.0)]
    )
    result = run("report", str(path))
    assert result.returncode == 0
    assert "plus 3 calls (1.50 s) at untracked sites" in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["report"],
        ["report", "--top", "-1", "x"],
        ["report", "--top", "many", "x"],
        ["report", "--sort", "name", "x"],
        ["frobnicate"],
    ],
)
def test_usage_errors(args: list[str]) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert "usage: python -m asyncguard" in result.stderr
    assert "Traceback" not in result.stderr


def test_imports_no_django_or_pytest() -> None:
    code = (
        "import sys, asyncguard._cli\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'pytest')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout == "[]\n"


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (None, "-"),
        (0.0, "0 ms"),
        (0.35, "0.35 ms"),
        (1.0, "1.00 ms"),
        (9.996, "10.0 ms"),
        (45.6, "45.6 ms"),
        (99.96, "100 ms"),
        (999.4, "999 ms"),
        (999.6, "1.00 s"),
        (1234.5, "1.23 s"),
        (12345.0, "12.3 s"),
        (123456.0, "123 s"),
        (1234567.0, "1235 s"),
    ],
)
def test_human_ms(ms: float | None, text: str) -> None:
    assert human_ms(ms) == text
