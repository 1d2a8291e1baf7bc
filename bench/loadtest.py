"""Load test of the staging "warn" mode: example_project under uvicorn, guard off vs warn.

Two uvicorn servers (--loop uvloop, DEBUG off as in production) serve example_project on
127.0.0.1 for the whole run: the baseline, "off" (ASYNC_GUARD_MODE=off: installed, hooks in
place, nothing reported) or with --baseline none "unguarded" (Django's own application with
bench/unguarded_settings.py: asyncguard never imported), and "warn+watchdog"
(ASYNC_GUARD_MODE=warn with the stall watchdog, JSON lines, a log rate limit and periodic
summaries).  Both are warmed up, then loaded in interleaved rounds (off, warn, warn, off, off,
warn, ...) so machine noise hits both alike, by load-generator processes separate from the
servers: clean keep-alive connections loop on /health and /good/sleep, one more connection hits
blocking views (/bad/sleep, /bad/orm) at a fixed modest rate.  The comparison is the clean
views' requests/s; the blocking views stall both servers alike.

Prints a markdown table (off | warn+watchdog | ratio) and a verdict: no failed requests, clean
req/s warn/off >= --min-ratio, RSS growth bounded, asyncguard's log lines bounded by the rate
limit.  Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ROOT / "example_project"
BENCH = ROOT / "bench"
APP = "myproject.asgi:application"
HOST = "127.0.0.1"
STARTUP_TIMEOUT = 60.0
WORKER_START_MARGIN = 1.0  # s between launching the generator processes and the window opening
CLEAN_PATHS = ("/health", "/good/sleep")
# blocking views that need no outside service (/bad/http calls the project's in-process
# stand-in API, which would add its own thread to the picture)
BLOCKING_PATHS = ("/bad/sleep", "/bad/orm")
# what asyncguard writes: its logger's lines ("WARNING asyncguard: ...") and the violation
# wording of Violation.message(); a multi-line record (a summary: "asyncguard: the last 10 s:
# ..." then indented rows) goes on with indented lines, counted as asyncguard's too
GUARD_LINE = re.compile(r"asyncguard|(?:would block|blocked) the event loop")
VIOLATION_WORDING = re.compile(r"(?:would block|blocked) the event loop")
SUMMARY_HEADER = re.compile(r"asyncguard: .*: \d+ blocking calls at \d+ sites")
# the most lines one summary takes: a header, the top 10 sites, "… and N more sites", the
# calls beyond the site table, the lines the rate limit dropped (asyncguard._report.summarize)
SUMMARY_LINES = 14


# -- the load generator (runs in its own processes) --------------------------------------------


# uvloop's loop.time() is libuv's cached millisecond clock: too coarse for latencies
clock = time.perf_counter


class HTTPError(Exception):
    """A response the generator could not parse."""


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one HTTP/1.1 response: (status, whether the server closes the connection)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, _, header_block = head.partition(b"\r\n")
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise HTTPError(f"bad status line {status_line[:80]!r}")
    status = int(parts[1])
    length = -1
    chunked = False
    close = parts[0] == b"HTTP/1.0"
    for line in header_block.split(b"\r\n"):
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            close = value.strip().lower() == b"close"
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length >= 0:
        await reader.readexactly(length)
    else:
        await reader.read()  # no length: the body ends with the connection
        close = True
    return status, close


@dataclass
class _Tally:
    ok: dict[str, int] = field(default_factory=dict)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    failures: int = 0
    failure_samples: list[str] = field(default_factory=list)

    def fail(self, reason: str) -> None:
        self.failures += 1
        if len(self.failure_samples) < 5:
            self.failure_samples.append(reason)


class _Connection:
    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
            sock = self.writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        assert self.reader is not None
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n\r\n".encode())
        status, close = await _read_response(self.reader)
        if close:
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _request(
    conn: _Connection, path: str, tally: _Tally, window: tuple[float, float]
) -> None:
    """One GET; counted (and timed) only when it completes inside the window."""
    started = clock()
    try:
        status = await conn.get(path)
    except (OSError, EOFError, asyncio.IncompleteReadError, HTTPError, ValueError) as exc:
        conn.close()
        if window[0] <= clock() <= window[1]:
            tally.fail(f"{path}: {type(exc).__name__}: {exc}")
        await asyncio.sleep(0.05)  # no hot loop against a dead server
        return
    done = clock()
    if not window[0] <= done <= window[1]:
        return
    if 200 <= status < 300:
        tally.ok[path] = tally.ok.get(path, 0) + 1
        tally.latencies.setdefault(path, []).append(round((done - started) * 1000, 3))
    else:
        tally.fail(f"{path}: HTTP {status}")


async def _clean_loop(port: int, path: str, tally: _Tally, window: tuple[float, float]) -> None:
    conn = _Connection(port)
    try:
        while True:
            await _request(conn, path, tally, window)
    finally:
        conn.close()


async def _blocking_loop(
    port: int, rate: float, tally: _Tally, window: tuple[float, float]
) -> None:
    """GET the blocking views in turn on one connection, ``rate`` requests per second."""
    conn = _Connection(port)
    next_at = clock()
    index = 0
    try:
        while True:
            await asyncio.sleep(max(0.0, next_at - clock()))
            await _request(conn, BLOCKING_PATHS[index % len(BLOCKING_PATHS)], tally, window)
            index += 1
            next_at = max(next_at + 1.0 / rate, clock() - 1.0 / rate)  # no catch-up burst
    finally:
        conn.close()


async def _generate(spec: dict[str, Any]) -> dict[str, Any]:
    offset = time.time() - clock()
    ready = clock()
    window = (max(spec["start_at"] - offset, ready), spec["end_at"] - offset)
    clean, blocking = _Tally(), _Tally()
    tasks = [
        asyncio.create_task(_clean_loop(spec["port"], path, clean, window))
        for path, count in spec["connections"].items()
        for _ in range(count)
    ]
    if spec["blocking_rate"] > 0:
        tasks.append(
            asyncio.create_task(
                _blocking_loop(spec["port"], spec["blocking_rate"], blocking, window)
            )
        )
    await asyncio.sleep(max(0.0, window[0] - clock()))
    cpu_start = time.process_time()
    await asyncio.sleep(max(0.0, window[1] - clock()))
    cpu = time.process_time() - cpu_start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    seconds = window[1] - window[0]
    return {
        "seconds": seconds,
        "late_s": round(max(0.0, ready - (spec["start_at"] - offset)), 3),
        "cpu_fraction": cpu / seconds if seconds > 0 else None,
        "clean": clean.ok,
        "clean_latencies_ms": clean.latencies,
        "blocking": blocking.ok,
        "failures": clean.failures + blocking.failures,
        "failure_samples": clean.failure_samples + blocking.failure_samples,
    }


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    loop = _new_loop()
    try:
        return loop.run_until_complete(_generate(spec))
    finally:
        loop.close()


def _split(total: int, parts: int, index: int) -> int:
    """The share of ``total`` that generator process ``index`` of ``parts`` takes."""
    return total // parts + (1 if index < total % parts else 0)


def run_load(
    port: int,
    seconds: float,
    *,
    clients: int,
    connections: int,
    sleep_connections: int,
    blocking_rate: float,
    cpu_seconds: Callable[[], float | None] | None = None,
) -> dict[str, Any]:
    """Load ``port`` for ``seconds`` from ``clients`` generator processes; their results.

    ``cpu_seconds`` (the server's CPU time) is read when the measured window opens and closes.
    """
    start_at = time.time() + WORKER_START_MARGIN
    procs = []
    for index in range(clients):
        spec = {
            "port": port,
            "start_at": start_at,
            "end_at": start_at + seconds,
            "connections": {
                CLEAN_PATHS[0]: _split(connections - sleep_connections, clients, index),
                CLEAN_PATHS[1]: _split(sleep_connections, clients, index),
            },
            "blocking_rate": blocking_rate if index == 0 else 0.0,
        }
        command = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
        procs.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    server_cpu = None
    if cpu_seconds is not None:
        time.sleep(max(0.0, start_at - time.time()))
        before = cpu_seconds()
        time.sleep(max(0.0, start_at + seconds - time.time()))
        after = cpu_seconds()
        if before is not None and after is not None:
            server_cpu = (after - before) / seconds
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=seconds + 60)
        if proc.returncode != 0:
            raise RuntimeError(f"load generator failed ({proc.returncode}):\n{err.decode()}")
        results.append(json.loads(out))
    return {
        "seconds": seconds,
        "clean": sum(sum(r["clean"].values()) for r in results),
        "clean_rps": sum(sum(r["clean"].values()) / r["seconds"] for r in results),
        "clean_by_path": {
            path: sum(r["clean"].get(path, 0) for r in results) for path in CLEAN_PATHS
        },
        "blocking": sum(sum(r["blocking"].values()) for r in results),
        "blocking_by_path": {
            path: sum(r["blocking"].get(path, 0) for r in results) for path in BLOCKING_PATHS
        },
        "failures": sum(r["failures"] for r in results),
        "failure_samples": [s for r in results for s in r["failure_samples"]][:5],
        "late_s": max(r["late_s"] for r in results),
        "generator_cpu": [r["cpu_fraction"] for r in results],
        "server_cpu": server_cpu,
        "latencies_ms": {
            path: [x for r in results for x in r["clean_latencies_ms"].get(path, [])]
            for path in CLEAN_PATHS
        },
    }


# -- a trivial server, to measure the generator itself (--calibrate) ------------------------------


class _TrivialProtocol(asyncio.Protocol):
    RESPONSE = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n"
        b'{"status":"ok"}'
    )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            _, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            self.transport.write(self.RESPONSE)


def trivial_server(port: int) -> None:
    loop = _new_loop()
    server = loop.run_until_complete(loop.create_server(_TrivialProtocol, HOST, port))
    with contextlib.suppress(KeyboardInterrupt):
        loop.run_forever()
    server.close()


# -- the servers under test --------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _proc_status(pid: int, key: str) -> float | None:
    """A ``kB`` field of /proc/<pid>/status (``VmRSS``, ``VmHWM``) in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of ``pid`` (/proc/<pid>/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(x) for x in (task / "children").read_text().split()]
    return found


@dataclass
class Server:
    key: str
    env: dict[str, str]
    workdir: Path
    access_log: bool
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    pid: int = 0  # the process serving requests (the uvicorn process, not a wrapper)
    started: float = 0.0
    stopped: float = 0.0
    files: list[Any] = field(default_factory=list)

    @property
    def stderr_path(self) -> Path:
        return self.workdir / "stderr.log"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        self.port = _free_port()
        stdout = open(self.workdir / "stdout.log", "wb")  # noqa: SIM115 - closed by stop()
        stderr = open(self.stderr_path, "wb")  # noqa: SIM115 - closed by stop()
        self.files = [stdout, stderr]
        unguarded = self.env.get("DJANGO_SETTINGS_MODULE") == UNGUARDED["DJANGO_SETTINGS_MODULE"]
        app = UNGUARDED_APP if unguarded else [APP]
        command = [sys.executable, "-m", "uvicorn", *app, "--loop", "uvloop"]
        command += ["--host", HOST, "--port", str(self.port)]
        if not self.access_log:
            command.append("--no-access-log")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            command,
            cwd=PROJECT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,  # its own process group: stop() reaches any child
        )

    def wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server {self.key} exited with {self.proc.returncode}:\n"
                    + self.stderr_path.read_text(errors="replace")[-3000:]
                )
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as response:
                    if response.status == 200:
                        self.pid = self._serving_pid()
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server {self.key} did not answer /health in {STARTUP_TIMEOUT} s")

    def _serving_pid(self) -> int:
        """The uvicorn process: Popen's own pid unless it is a wrapper (a shim that forks)."""
        assert self.proc is not None
        pid = self.proc.pid
        if "uvicorn" in _cmdline(pid) and not _children(pid):
            return pid
        for child in _children(pid):
            if "uvicorn" in _cmdline(child):
                return child
        raise RuntimeError(f"cannot tell which process serves {self.key}: {_cmdline(pid)}")

    def rss_mb(self) -> float | None:
        return _proc_status(self.pid, "VmRSS")

    def hwm_mb(self) -> float | None:
        return _proc_status(self.pid, "VmHWM")

    def cpu_seconds(self) -> float | None:
        return _cpu_seconds(self.pid)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)  # graceful: at-exit flushes run
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        if not self.stopped:
            self.stopped = time.monotonic()
        for file in self.files:
            file.close()
        self.files = []

    def guard_lines(self) -> dict[str, int]:
        """asyncguard's lines on stderr: all of them, the violation messages, the summaries."""
        counts = {"lines": 0, "violations": 0, "summaries": 0}
        inside = False  # in a record of asyncguard's: indented lines continue it
        with open(self.stderr_path, errors="replace") as lines:
            for line in lines:
                if GUARD_LINE.search(line) or (inside and line[:1].isspace()):
                    inside = True
                    counts["lines"] += 1
                    counts["violations"] += bool(VIOLATION_WORDING.search(line))
                    counts["summaries"] += bool(SUMMARY_HEADER.search(line))
                else:
                    inside = False
        return counts


def _migrated_database(workdir: Path) -> Path:
    """A migrated (and seeded) SQLite database of example_project, made once for the run."""
    data = workdir / "db-template"
    data.mkdir()
    env = {**os.environ, "EXAMPLE_DATA_DIR": str(data)}
    env.pop("ASYNC_GUARD_MODE", None)
    result = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--verbosity", "0"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError("manage.py migrate failed:\n" + result.stdout + result.stderr)
    return data / "db.sqlite3"


def _server_env(data: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("ASYNC_GUARD_") and key != "DJANGO_SETTINGS_MODULE"
    }
    env |= {
        "DJANGO_SETTINGS_MODULE": "myproject.settings",
        "DJANGO_DEBUG": "0",  # as in production (tests/test_servers.py's "uvicorn-production")
        "EXAMPLE_DATA_DIR": str(data),
        "PYTHONPATH": os.pathsep.join(
            [str(PROJECT), str(BENCH), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
        "PYTHONUNBUFFERED": "1",
        **extra,
    }
    return env


# -- the coordinator ---------------------------------------------------------------------------

CONFIGS = ("off", "warn")
# --baseline none: example_project without asyncguard (not in INSTALLED_APPS, no middleware)
UNGUARDED = {"DJANGO_SETTINGS_MODULE": "unguarded_settings"}
UNGUARDED_APP = ["--factory", "django.core.asgi:get_asgi_application"]


def _percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def _load_args(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "clients": args.clients,
        "connections": args.connections,
        "sleep_connections": args.sleep_connections,
        "blocking_rate": args.blocking_rate,
    }


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    database = _migrated_database(workdir)
    json_path = workdir / "asyncguard-warn.jsonl"
    extra = {
        "off": UNGUARDED if args.baseline == "none" else {"ASYNC_GUARD_MODE": "off"},
        "warn": {
            "ASYNC_GUARD_MODE": "warn",
            "ASYNC_GUARD_STALL_THRESHOLD": args.stall_threshold,
            "ASYNC_GUARD_JSON": str(json_path),
            "ASYNC_GUARD_RATE_LIMIT": str(args.rate_limit),
            "ASYNC_GUARD_SUMMARY_INTERVAL": str(args.summary_interval),
        },
    }
    servers: dict[str, Server] = {}
    for key in CONFIGS:
        data = workdir / key
        data.mkdir()
        shutil.copy(database, data / "db.sqlite3")
        servers[key] = Server(key, _server_env(data, extra[key]), data, args.access_log)
    results: dict[str, Any] = {
        key: {"env": extra[key], "rounds": [], "rss_mb": {}} for key in CONFIGS
    }
    round_seconds = args.duration / args.rounds
    try:
        for server in servers.values():
            server.start()
        for key, server in servers.items():
            server.wait_ready()
            _log(f"{key}: uvicorn pid {server.pid} on port {server.port}; warm-up {args.warmup} s")
            run_load(server.port, args.warmup, **_load_args(args))
            results[key]["rss_mb"]["after_warmup"] = server.rss_mb()
        for index in range(args.rounds):
            order = CONFIGS if index % 2 == 0 else CONFIGS[::-1]  # off warn | warn off | ...
            for key in order:
                server = servers[key]
                _log(f"round {index + 1}/{args.rounds}: {key} ({round_seconds:g} s)")
                load = run_load(
                    server.port, round_seconds, cpu_seconds=server.cpu_seconds, **_load_args(args)
                )
                load["round"] = index + 1
                results[key]["rounds"].append(load)
        for key, server in servers.items():
            results[key]["rss_mb"]["end"] = server.rss_mb()
            results[key]["rss_mb"]["peak"] = server.hwm_mb()
            results[key]["pid_cmdline"] = " ".join(_cmdline(server.pid)).strip()
    finally:
        for server in servers.values():
            server.stop()
    for key, server in servers.items():
        results[key]["guard_lines"] = server.guard_lines()
        results[key]["lifetime_s"] = server.stopped - server.started
        results[key]["exit_code"] = server.proc.returncode if server.proc else None
    if json_path.exists():
        text = json_path.read_bytes()
        final = False
        for line in text.splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                final = final or (record.get("type") == "flush" and record.get("final") is True)
        results["warn"]["jsonl"] = {
            "lines": text.count(b"\n"),
            "bytes": len(text),
            "final_flush": final,
        }
    else:
        results["warn"]["jsonl"] = None
    return results


def summarise(results: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for key in CONFIGS:
        data = results[key]
        rounds = data["rounds"]
        seconds = sum(r["seconds"] for r in rounds)
        latencies = [x for r in rounds for path in CLEAN_PATHS for x in r["latencies_ms"][path]]
        health = [x for r in rounds for x in r["latencies_ms"][CLEAN_PATHS[0]]]
        rss = data["rss_mb"]
        cpus = [r["server_cpu"] for r in rounds if r.get("server_cpu") is not None]
        generator = [x for r in rounds for x in r["generator_cpu"] if x is not None]
        summary[key] = {
            "seconds": seconds,
            "clean": sum(r["clean"] for r in rounds),
            "clean_rps": sum(r["clean_rps"] * r["seconds"] for r in rounds) / seconds,
            "clean_rps_rounds": [r["clean_rps"] for r in rounds],
            "blocking": sum(r["blocking"] for r in rounds),
            "failures": sum(r["failures"] for r in rounds),
            "failure_samples": [s for r in rounds for s in r["failure_samples"]][:5],
            "p50_ms": _percentile(latencies, 50),
            "p99_ms": _percentile(latencies, 99),
            "health_p50_ms": _percentile(health, 50),
            "health_p99_ms": _percentile(health, 99),
            "rss_after_warmup_mb": rss.get("after_warmup"),
            "rss_end_mb": rss.get("end"),
            "rss_growth_mb": (
                rss["end"] - rss["after_warmup"]
                if rss.get("end") is not None and rss.get("after_warmup") is not None
                else None
            ),
            "rss_peak_mb": rss.get("peak"),
            "server_cpu": sum(cpus) / len(cpus) if cpus else None,
            # CPU time per clean request (the blocking requests' share included, alike in both):
            # the guard's cost per request, less sensitive than req/s to CPU taken by other work
            "cpu_ms_per_clean": (
                sum(r["server_cpu"] * r["seconds"] for r in rounds)
                / sum(r["clean"] for r in rounds)
                * 1000
                if len(cpus) == len(rounds) and sum(r["clean"] for r in rounds)
                else None
            ),
            "generator_cpu_max": max(generator) if generator else None,
            "late_s": max((r["late_s"] for r in rounds), default=0.0),
            "guard_lines": data["guard_lines"],
            "lifetime_s": data["lifetime_s"],
            "exit_code": data["exit_code"],
            "jsonl": data.get("jsonl"),
        }
    off, warn = summary["off"], summary["warn"]
    minutes = warn["lifetime_s"] / 60
    # the rate limit's budget over the server's life (a token bucket: one minute's burst, then
    # the rate), plus the summaries, which it does not limit: the periodic ones and the at-exit one
    summaries = math.ceil(warn["lifetime_s"] / args.summary_interval) + 1
    line_budget = args.rate_limit * (minutes + 1) + SUMMARY_LINES * summaries
    lines = warn["guard_lines"]
    ratio = warn["clean_rps"] / off["clean_rps"] if off["clean_rps"] else 0.0
    rss_limit = max(off["rss_growth_mb"] or 0.0, 0.0) + args.max_rss_growth
    checks = {
        "failures": {
            "ok": off["failures"] == 0 and warn["failures"] == 0,
            "text": f"failed requests: off {off['failures']}, warn {warn['failures']} (must be 0)",
        },
        "throughput": {
            "ok": ratio >= args.min_ratio,
            "text": f"clean req/s warn/off {ratio:.3f} (≥ {args.min_ratio})",
        },
        "rss": {
            "ok": warn["rss_growth_mb"] is not None and warn["rss_growth_mb"] <= rss_limit,
            "text": f"RSS growth after warm-up: warn {_fmt_mb(warn['rss_growth_mb'], True)}, "
            f"off {_fmt_mb(off['rss_growth_mb'], True)} "
            f"(warn ≤ off's + {args.max_rss_growth:g} MB)",
        },
        "guard_active": {
            # the comparison means something only if warn really guards and off does not
            "ok": args.blocking_rate == 0
            or (lines["violations"] > 0 and off["guard_lines"]["lines"] == 0),
            "text": f"the blocking views reported by warn ({lines['violations']} messages), "
            f"not by off ({off['guard_lines']['violations']})",
        },
        "log_lines": {
            "ok": lines["lines"] <= line_budget,
            "text": f"asyncguard log lines: warn {lines['lines']} ({lines['violations']} "
            f"violation messages, {lines['summaries']} summaries) over "
            f"{warn['lifetime_s']:.0f} s ≤ {args.rate_limit}/min × ({minutes:.2f} + 1) min "
            f"+ {SUMMARY_LINES} lines × {summaries} summaries = {line_budget:.0f}",
        },
    }
    return {"configs": summary, "ratio": ratio, "checks": checks, "line_budget": line_budget}


def _fmt_mb(value: float | None, sign: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.1f} MB" if sign else f"{value:.1f} MB"


def _fmt(value: float | None, spec: str = ",.0f") -> str:
    return "—" if value is None else format(value, spec)


def _lines(counts: dict[str, int]) -> str:
    return f"{counts['lines']} ({counts['violations']}, {counts['summaries']})"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{b / a:.3f}" if a and b is not None else "—"


def _row(label: str, a: str, b: str, ratio: str = "") -> str:
    return f"| {label} | {a} | {b} | {ratio} |"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.0f} %"


def paired_ratios(base: dict[str, Any], other: dict[str, Any]) -> list[float]:
    """Clean requests/s other / base of each round: the two ran back to back."""
    return [
        o / b for b, o in zip(base["clean_rps_rounds"], other["clean_rps_rounds"], strict=True) if b
    ]


def throughput_rows(
    base: dict[str, Any], other: dict[str, Any], ratio: str, paired_label: str
) -> list[str]:
    """Clean requests/s of two configurations: overall (``ratio``, other / base, as the
    caller shows it), per round with each round's ratio, and the median paired ratio."""
    pairs = paired_ratios(base, other)

    def rounds(values: list[float]) -> str:
        return " / ".join(f"{v:,.0f}" for v in values)

    return [
        _row("clean requests/s", _fmt(base["clean_rps"]), _fmt(other["clean_rps"]), ratio),
        _row(
            "clean requests/s, per round",
            rounds(base["clean_rps_rounds"]),
            rounds(other["clean_rps_rounds"]),
            " / ".join(f"{pair:.3f}" for pair in pairs),
        ),
        _row(
            paired_label,
            "",
            "",
            f"{statistics.median(pairs):.3f} ({min(pairs):.3f}–{max(pairs):.3f})" if pairs else "—",
        ),
    ]


def latency_rows(base: dict[str, Any], other: dict[str, Any]) -> list[str]:
    """p50 and p99 latency of the clean requests of two configurations, and other / base."""
    return [
        _row(
            f"clean latency {name} ms",
            _fmt(base[f"{name}_ms"], ".1f"),
            _fmt(other[f"{name}_ms"], ".1f"),
            _ratio(base[f"{name}_ms"], other[f"{name}_ms"]),
        )
        for name in ("p50", "p99")
    ]


def render(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    off, warn = summary["configs"]["off"], summary["configs"]["warn"]
    jsonl = warn["jsonl"]

    row, pct = _row, _pct
    lines = [
        f"`{meta['command']}` — {meta['platform']}, {meta['cpus']} CPUs (load {meta['load']}), "
        f"Python {meta['python']}, uvicorn {meta['versions']['uvicorn']} + uvloop "
        f"{meta['versions']['uvloop']}, Django {meta['versions']['django']}, DEBUG off; "
        f"{meta['rounds']} interleaved rounds of {meta['round_seconds']:g} s per configuration; "
        f"{meta['connections']} clean connections ({meta['sleep_connections']} on /good/sleep, "
        f"the rest on /health) + 1 on {' and '.join(BLOCKING_PATHS)} at "
        f"{meta['blocking_rate']:g} req/s, from {meta['clients']} generator processes.",
        "",
        f"| metric | {meta['baseline_label']} | {meta['warn_label']} | ratio |",
        "|---|--:|--:|--:|",
        *throughput_rows(
            off,
            warn,
            f"{summary['ratio']:.3f}",
            "clean requests/s, paired round ratio: median (min–max)",
        ),
        row("clean requests", _fmt(off["clean"]), _fmt(warn["clean"])),
        row("blocking requests completed", _fmt(off["blocking"]), _fmt(warn["blocking"])),
        row("failed requests", _fmt(off["failures"]), _fmt(warn["failures"])),
        *latency_rows(off, warn),
        row(
            "server RSS after warm-up MB",
            _fmt(off["rss_after_warmup_mb"], ".1f"),
            _fmt(warn["rss_after_warmup_mb"], ".1f"),
        ),
        row(
            "server RSS at end MB", _fmt(off["rss_end_mb"], ".1f"), _fmt(warn["rss_end_mb"], ".1f")
        ),
        row(
            "server RSS growth MB",
            _fmt(off["rss_growth_mb"], "+.1f"),
            _fmt(warn["rss_growth_mb"], "+.1f"),
        ),
        row("server CPU during rounds", pct(off["server_cpu"]), pct(warn["server_cpu"])),
        row(
            "server CPU ms per clean request",
            _fmt(off["cpu_ms_per_clean"], ".3f"),
            _fmt(warn["cpu_ms_per_clean"], ".3f"),
            _ratio(off["cpu_ms_per_clean"], warn["cpu_ms_per_clean"]),
        ),
        row(
            "load generator CPU, busiest process",
            pct(off["generator_cpu_max"]),
            pct(warn["generator_cpu_max"]),
        ),
        row(
            "asyncguard lines on stderr (violation messages, summaries)",
            _lines(off["guard_lines"]),
            _lines(warn["guard_lines"]),
        ),
        row(
            "JSON-lines file: lines, size",
            "—",
            "not produced"
            if jsonl is None
            else f"{jsonl['lines']:,}, {jsonl['bytes'] / 1024:,.1f} KB",
        ),
        row(
            "at-exit summary (JSON `final` flush)",
            "—",
            "—" if jsonl is None else ("yes" if jsonl["final_flush"] else "no"),
        ),
        row("server exit status", str(off["exit_code"]), str(warn["exit_code"])),
        row("server lifetime s", _fmt(off["lifetime_s"], ".0f"), _fmt(warn["lifetime_s"], ".0f")),
        "",
        "Clean = /health and /good/sleep; latency of clean requests over all rounds; RSS = "
        "VmRSS of the uvicorn process, after warm-up and after the last round; CPU = CPU time / "
        "wall time of the measured windows (100 % = one core; the server has threads), and "
        "server CPU time / clean requests (the blocking ones' share included); log "
        "lines counted over the server's whole life (warm-up and the other configuration's "
        "rounds included).",
        "",
    ]
    checks = summary["checks"]
    verdict = "PASS" if all(c["ok"] for c in checks.values()) else "FAIL"
    marks = "; ".join(("✓ " if c["ok"] else "✗ ") + c["text"] for c in checks.values())
    lines.append(f"**Verdict: {verdict}** — {marks}.")
    notes = []
    if jsonl is None:
        notes.append(
            "ASYNC_GUARD_JSON: the JSON-lines file was not produced (this asyncguard may not "
            "read the warn configuration's ASYNC_GUARD_* variables yet)"
        )
    elif not jsonl["final_flush"]:
        notes.append(
            "no at-exit flush in the JSON-lines file (nor summary on stderr): the server was "
            f"stopped with SIGTERM (exit status {warn['exit_code']}); uvicorn re-raises SIGTERM "
            "with the default handler after its graceful shutdown, so atexit handlers never run"
        )
    generator = max(off["generator_cpu_max"] or 0.0, warn["generator_cpu_max"] or 0.0)
    if generator > 0.8:
        notes.append(
            f"a load-generator process used {generator * 100:.0f} % of a core: it may be the "
            "bottleneck (--clients)"
        )
    late = max(off["late_s"], warn["late_s"])
    if late > 0.1:
        notes.append(f"a generator process started {late:.2f} s late (windows shortened)")
    for key, data in (("off", off), ("warn", warn)):
        if data["failure_samples"]:
            notes.append(f"{key} failures, e.g.: " + "; ".join(data["failure_samples"]))
    if notes:
        lines += ["", "Notes:", *(f"- {note}" for note in notes)]
    return "\n".join(lines)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


@contextlib.contextmanager
def _workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="asyncguard-loadtest-"))
    try:
        yield path
    finally:
        if keep:
            _log(f"kept {path} (server logs, JSON lines)")
        else:
            shutil.rmtree(path, ignore_errors=True)


def calibrate(args: argparse.Namespace) -> int:
    """The generator against a trivial asyncio server: how many requests/s it can make."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--trivial-server", str(port)],
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
                break
            time.sleep(0.05)
        seconds = args.duration / args.rounds
        load = run_load(port, seconds, **_load_args(args))
        cpu = ", ".join(f"{x * 100:.0f} %" for x in load["generator_cpu"] if x is not None)
        print(
            f"generator against a trivial server: {load['clean_rps']:,.0f} req/s over "
            f"{seconds:g} s, {load['failures']} failed; generator processes' CPU: {cpu}; "
            f"p50 {_fmt(_percentile(load['latencies_ms'][CLEAN_PATHS[0]], 50), '.2f')} ms"
        )
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=30.0,
        metavar="S",
        help="measured seconds per configuration, split over the rounds (default 30)",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, metavar="N", help="interleaved rounds (default 3)"
    )
    parser.add_argument("--json", metavar="PATH", help="also save the raw numbers there")
    parser.add_argument(
        "--baseline",
        choices=("off", "none"),
        default="off",
        help="what warn is compared with: off = ASYNC_GUARD_MODE=off (default), "
        "none = the example served without asyncguard at all",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=2.0,
        metavar="S",
        help="seconds of load per server before measuring, not counted (default 2)",
    )
    load = parser.add_argument_group("load")
    load.add_argument(
        "--connections",
        type=int,
        default=16,
        metavar="N",
        help="clean keep-alive connections (default 16)",
    )
    load.add_argument(
        "--sleep-connections",
        type=int,
        default=4,
        metavar="N",
        help="of those, how many loop on /good/sleep; the rest on /health (default 4)",
    )
    load.add_argument(
        "--blocking-rate",
        type=float,
        default=5.0,
        metavar="R",
        help="requests/s to /bad/sleep and /bad/orm in turn on one more connection "
        "(default 5; 0: none)",
    )
    load.add_argument(
        "--clients", type=int, default=2, metavar="N", help="load-generator processes (default 2)"
    )
    load.add_argument(
        "--access-log",
        action="store_true",
        help="keep uvicorn's access log (default: --no-access-log, so the guard's cost is "
        "compared with less other work per request)",
    )
    warn = parser.add_argument_group("the warn configuration")
    warn.add_argument(
        "--rate-limit",
        type=int,
        default=60,
        metavar="N",
        help="ASYNC_GUARD_RATE_LIMIT, log lines per minute (default 60)",
    )
    warn.add_argument(
        "--summary-interval",
        type=float,
        default=10.0,
        metavar="S",
        help="ASYNC_GUARD_SUMMARY_INTERVAL in seconds (default 10)",
    )
    warn.add_argument(
        "--stall-threshold",
        default="0.1",
        metavar="S",
        help="ASYNC_GUARD_STALL_THRESHOLD, passed as is: seconds like 0.1 (the default) or "
        "100ms, or off (warn without the watchdog, to tell their costs apart)",
    )
    checks = parser.add_argument_group("checks")
    checks.add_argument(
        "--min-ratio",
        type=float,
        default=0.97,
        metavar="R",
        help="lowest acceptable clean req/s warn/off (default 0.97)",
    )
    checks.add_argument(
        "--max-rss-growth",
        type=float,
        default=10.0,
        metavar="MB",
        help="RSS growth allowed to warn beyond off's, after warm-up (default 10)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (server logs, JSON)"
    )
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="only measure the load generator against a trivial asyncio server "
        "(one round of --duration/--rounds seconds)",
    )
    parser.add_argument("--worker", metavar="SPEC", help=argparse.SUPPRESS)
    parser.add_argument("--trivial-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        json.dump(worker(json.loads(args.worker)), sys.stdout)
        return 0
    if args.trivial_server:
        trivial_server(args.trivial_server)
        return 0
    if args.rounds < 1 or args.duration <= 0 or args.clients < 1:
        parser.error("--rounds, --duration and --clients must be positive")
    if not 0 <= args.sleep_connections <= args.connections:
        parser.error("--sleep-connections must be between 0 and --connections")
    if args.calibrate:
        return calibrate(args)

    started = time.time()
    load_before = os.getloadavg()
    with _workdir(args.keep) as workdir:
        results = run(args, workdir)
    summary = summarise(results, args)
    meta = {
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "cpus": os.cpu_count(),
        "load": ", ".join(f"{v:.1f}" for v in load_before),
        "versions": {
            name: _version(name) for name in ("asyncguard", "uvicorn", "uvloop", "django")
        },
        "rounds": args.rounds,
        "round_seconds": args.duration / args.rounds,
        "connections": args.connections,
        "sleep_connections": args.sleep_connections,
        "blocking_rate": args.blocking_rate,
        "clients": args.clients,
        "access_log": args.access_log,
        "rate_limit": args.rate_limit,
        "summary_interval": args.summary_interval,
        "stall_threshold": args.stall_threshold,
        "baseline_label": "unguarded" if args.baseline == "none" else "off",
        "warn_label": "warn"
        if args.stall_threshold.strip().lower() in ("off", "none", "0")
        else "warn+watchdog",
        "seconds": round(time.time() - started, 1),
        "command": " ".join(["python", "bench/loadtest.py", *(argv or sys.argv[1:])]),
    }
    print(render(summary, meta))
    if args.json:
        save_json(args.json, meta, summary, results)
    return 0 if all(check["ok"] for check in summary["checks"].values()) else 1


def save_json(path: str, meta: Any, summary: Any, results: dict[str, Any]) -> None:
    """meta, summary and results to ``path``; each round's raw latencies are summarised."""
    for data in results.values():
        for load in data["rounds"]:
            latencies = load.pop("latencies_ms")
            load["latency_ms"] = {
                page: {
                    "n": len(values),
                    "p50": _percentile(values, 50),
                    "p99": _percentile(values, 99),
                    "max": max(values, default=None),
                }
                for page, values in latencies.items()
            }
    payload = {"meta": meta, "summary": summary, "results": results}
    Path(path).write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    sys.exit(main())
