"""Nothing the guard counted is lost when a server stops, however it stops.

Real server processes (uvicorn, hypercorn, daphne, granian) serve a small ASGI app wrapped in
``AsyncGuardMiddleware`` in warn mode with ``ASYNC_GUARD_JSON``; a few requests make blocking
calls at two sites; then the server is stopped by a signal.  The JSON-lines file must hold
every call counted (the sites' counts, summed over worker processes), a final flush from every
process that counted a call, and the log the final summary -- with lifespan on, off, or not
forwarded by an outer router (Channels' ``ProtocolTypeRouter``), and with two workers.

uvicorn is the hard case: after a graceful shutdown it re-raises the signal with the default
handler inside ``serve()``, before its loop closes, so no atexit handler and no loop close ever
runs; with lifespan the middleware writes the summary at ``lifespan.shutdown``, without it the
guard's ``signal.raise_signal`` hook does.

Not here: ``hypercorn -w 2``.  Its main process, once the first worker has exited, sends
SIGTERM to the others (``process.terminate()``) while they may still be shutting down, and its
workers keep SIGTERM's default action: such a worker dies on the spot, its in-flight requests
and its counts with it.  Only a SIGTERM handler of the guard's own could save the counts, and
the guard installs no signal handler (a program's signal dispositions are its own).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import skip_service
from services import HOST, free_port

APP = textwrap.dedent(
    """
    import time

    from asyncguard import AsyncGuardMiddleware


    async def inner(scope, receive, send):
        if scope["type"] != "http":
            return  # lifespan: refused, as a plain app does
        if scope["path"] != "/ready":
            time.sleep(0.002)  # site 1: every request but /ready
            if scope["path"] == "/twice":
                time.sleep(0.001)  # site 2
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


    application = AsyncGuardMiddleware(inner)
    """
)

ROUTED = textwrap.dedent(
    """
    from channels.routing import ProtocolTypeRouter

    from app import application as guarded

    # the common outer app that does not forward lifespan: a scope type it has no entry for
    # is a ValueError, which servers take as "lifespan unsupported"
    application = ProtocolTypeRouter({"http": guarded})
    """
)

REQUESTS = ("/", "/twice", "/", "/twice", "/", "/twice")
EXPECTED = {1: 6, 2: 3}  # calls per site (by the line's order in the app)

# name -> (modules that must import, the command after `python -m`, given the port and app)
SERVERS = {
    "uvicorn": (("uvicorn",), lambda port, app: ["uvicorn", "--port", str(port), app]),
    "uvicorn-lifespan-off": (
        ("uvicorn",),
        lambda port, app: ["uvicorn", "--port", str(port), "--lifespan", "off", app],
    ),
    "uvicorn-router": (
        ("uvicorn", "channels"),
        lambda port, app: ["uvicorn", "--port", str(port), "routed:application"],
    ),
    "uvicorn-2-workers": (
        ("uvicorn",),
        lambda port, app: ["uvicorn", "--port", str(port), "--workers", "2", app],
    ),
    "hypercorn": (("hypercorn",), lambda port, app: ["hypercorn", "-b", f"{HOST}:{port}", app]),
    "daphne": (("daphne",), lambda port, app: ["daphne", "-b", HOST, "-p", str(port), app]),
    "granian": (
        ("granian",),
        lambda port, app: [
            "granian",
            "--interface",
            "asgi",
            "--host",
            HOST,
            "--port",
            str(port),
            app,
        ],
    ),
}
SIGNALS = ("SIGTERM", "SIGINT")
STARTUP_TIMEOUT = 60.0


@dataclass
class Stopped:
    returncode: int
    output: str
    records: list[dict[str, object]]


def _get(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=30) as response:
        return bytes(response.read())


def _serve_and_stop(tmp_path: Path, name: str, signum: int) -> Stopped:
    modules, command = SERVERS[name]
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        skip_service(
            f"{', '.join(missing)} cannot be imported here: pip install {' '.join(missing)}"
        )
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "routed.py").write_text(ROUTED)
    jsonl = tmp_path / "out.jsonl"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ASYNC_GUARD_")},
        "ASYNC_GUARD_MODE": "warn",
        "ASYNC_GUARD_JSON": str(jsonl),
        "PYTHONPATH": os.pathsep.join(
            [str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
        "PYTHONUNBUFFERED": "1",
    }
    log_path = tmp_path / "server.log"
    for _attempt in range(3):
        port = free_port()
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", *command(port, "app:application")],
                cwd=tmp_path,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: its workers are reached at the end
            )
        try:
            if _wait_ready(proc, port, log_path):
                break
        except BaseException:
            _kill(proc)
            raise
    else:
        pytest.fail(f"{name}: no free port in 3 attempts:\n{log_path.read_text()[-3000:]}")
    try:
        for path in REQUESTS:
            assert _get(port, path) == b"ok"
        os.kill(proc.pid, signum)
        try:
            returncode = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{name} did not stop on {signum!r}:\n{log_path.read_text()[-3000:]}")
    finally:
        _kill(proc)
    records = (
        [json.loads(line) for line in jsonl.read_text().splitlines()] if jsonl.exists() else []
    )
    return Stopped(returncode, log_path.read_text(errors="replace"), records)


def _wait_ready(proc: subprocess.Popen[bytes], port: int, log_path: Path) -> bool:
    """True once the app answers; False when the port was taken (try another)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output = log_path.read_text(errors="replace")
            if "in use" in output:
                return False
            pytest.fail(f"the server exited with {proc.returncode}:\n{output[-3000:]}")
        try:
            if _get(port, "/ready") == b"ok":
                return True
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.05)
    pytest.fail(f"no answer in {STARTUP_TIMEOUT:.0f} s:\n{log_path.read_text()[-3000:]}")


def _kill(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # workers left behind, if any
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.wait(timeout=10)


def _site_counts(records: list[dict[str, object]]) -> dict[int, int]:
    """Calls per site, summed over processes: the last ``site`` record of each (process, site)
    holds its count since start."""
    last: dict[tuple[object, int], int] = {}
    for record in records:
        if record["type"] == "site":
            line = int(str(record["location"]).rpartition(":")[2])
            last[(record["pid"], line)] = int(str(record["count"]))
    by_line: Counter[int] = Counter()
    for (_, line), count in last.items():
        by_line[line] += count
    return {rank: by_line[line] for rank, line in enumerate(sorted(by_line), 1)}


@pytest.mark.parametrize("signame", SIGNALS)
@pytest.mark.parametrize("name", SERVERS)
def test_every_counted_call_and_the_final_summary_survive_the_stop(
    tmp_path: Path, name: str, signame: str
) -> None:
    stopped = _serve_and_stop(tmp_path, name, getattr(signal, signame))
    records = stopped.records
    assert records, f"nothing in the JSON-lines file:\n{stopped.output[-3000:]}"
    assert _site_counts(records) == EXPECTED, (records, stopped.output[-3000:])
    counting = {r["pid"] for r in records if r["type"] in ("violation", "site")}
    final = {r["pid"] for r in records if r["type"] == "flush" and r.get("final") is True}
    assert counting <= final, f"a process that counted calls wrote no final flush: {records}"
    summaries = stopped.output.count("summary since start:")
    assert summaries >= len(counting), stopped.output[-3000:]


def test_the_report_merges_the_workers(tmp_path: Path) -> None:
    """Two workers append to one file; ``report`` adds their counts up."""
    stopped = _serve_and_stop(tmp_path, "uvicorn-2-workers", signal.SIGTERM)
    assert _site_counts(stopped.records) == EXPECTED
    result = subprocess.run(
        [sys.executable, "-m", "asyncguard", "report", str(tmp_path / "out.jsonl")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines() if "time.sleep at app.py" in line]
    assert sorted(int(row[5]) for row in rows) == [3, 6], result.stdout
