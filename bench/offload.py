"""Offload mode under load: what driving each request in a greenlet costs, and what it buys.

    python bench/offload.py                  # 10 interleaved rounds, 30 s per configuration
    python bench/offload.py --quick          # a smoke run (short rounds, one burst of each)
    python bench/offload.py --json out.json  # also save the raw numbers
    python bench/offload.py --pin-cpu 1      # both servers on CPU 1: steadier on a busy machine

Two uvicorn servers (--loop uvloop, DEBUG off, as bench/loadtest.py runs them) serve
example_project for the whole run, both with ASYNC_GUARD_STALL_THRESHOLD=off so that only the
request driver differs: "warn" (ASYNC_GUARD_MODE=warn: each request's coroutine is awaited as
is) and "offload" (ASYNC_GUARD_MODE=offload: AsyncGuardMiddleware drives it, and the tasks
Django makes for it, in child greenlets, so that a blocking call can be run in a worker thread).

1. Driver overhead: bench/loadtest.py's load generator (separate processes, keep-alive
   connections looping on /health and /good/sleep, no blocking view) loads each server in
   interleaved rounds (warn, offload, offload, warn, ...), each round on a new pair of server
   processes (started in alternating order, warmed up): one process can run a few per cent
   faster or slower than another of the same code (memory layout, hash seed), and ten pairs
   average that out where one pair would bias every round.  Clean requests/s of each, the ratio
   offload/warn (target >= 0.95, --min-ratio), the paired round ratios, latency, failed requests
   and server CPU per request.
2. What offload buys: against the same servers, N requests at the same moment (--at-once,
   20 then 50) to /slow/sleep (time.sleep(0.2) in an async view) and /slow/query (a sync ORM
   query that waits 0.2 s in SQLite), while one more connection probes /health.  Wall time until
   all are answered, in warn (one after the other on the loop) and in offload (in threads),
   and the /health latency meanwhile.

Prints markdown tables and a verdict; exit status 1 when the ratio is below --min-ratio, a
request failed, or the offload server did not offload.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import re
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadtest  # bench/ is no package: the load test's machinery, imported

CONFIGS = ("warn", "offload")
SLOW = 0.2  # seconds each /slow/* view blocks (shop.views.SLOW)
SLOW_PATHS = {
    "/slow/sleep": "`time.sleep(0.2)`",
    "/slow/query": "sync ORM query, 0.2 s in SQLite",
}
PROBE_PATH = "/health"
PROBE_GAP = 0.01  # s between two /health probes during a burst
SETTLE = 2.0  # s to let the servers close connections and end threads before looking at them
OFFLOADED_WORDING = re.compile(r"\(offload mode\) instead of blocking the event loop")
# the request errors loadtest's generator counts as failed requests
REQUEST_ERRORS = (OSError, EOFError, asyncio.IncompleteReadError, loadtest.HTTPError, ValueError)


# -- what offload buys: N requests at once ------------------------------------------------------


async def _burst(port: int, path: str, count: int, timeout: float) -> dict[str, Any]:
    """``count`` GETs of ``path`` sent together on connections opened beforehand, and /health
    probed on one more connection until they are all answered."""
    clock = loadtest.clock
    conns = [loadtest._Connection(port) for _ in range(count)]
    probe = loadtest._Connection(port)
    failures: list[str] = []
    done_at: list[float] = []
    probes: list[float] = []
    finished = asyncio.Event()
    try:
        # a /health on each connection opens it: the burst's requests then leave together
        opened = await asyncio.gather(
            *(conn.get(PROBE_PATH) for conn in [*conns, probe]), return_exceptions=True
        )
        for outcome in opened:
            if isinstance(outcome, BaseException) or outcome != 200:
                failures.append(f"{PROBE_PATH} before the burst: {outcome!r}")
        began = clock()

        async def one(conn: loadtest._Connection) -> None:
            try:
                status = await conn.get(path)
            except REQUEST_ERRORS as exc:
                failures.append(f"{path}: {type(exc).__name__}: {exc}")
                return
            if status == 200:
                done_at.append(clock() - began)
            else:
                failures.append(f"{path}: HTTP {status}")

        async def probing() -> None:
            while not finished.is_set():
                sent = clock()
                try:
                    status = await probe.get(PROBE_PATH)
                except REQUEST_ERRORS as exc:
                    failures.append(f"{PROBE_PATH} probe: {type(exc).__name__}: {exc}")
                    return
                if status != 200:
                    failures.append(f"{PROBE_PATH} probe: HTTP {status}")
                probes.append((clock() - sent) * 1000)
                await asyncio.sleep(PROBE_GAP)

        tasks = [asyncio.create_task(one(conn)) for conn in conns]
        prober = asyncio.create_task(probing())
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        wall = clock() - began
        finished.set()
        for task in pending:
            task.cancel()
        if pending:
            failures.append(f"{path}: {len(pending)} of {count} unanswered after {timeout:g} s")
        try:  # the probe in flight was sent during the burst: it counts
            await asyncio.wait_for(prober, timeout=max(5.0, timeout / 4))
        except asyncio.TimeoutError:
            failures.append(f"{PROBE_PATH} probe unanswered after the burst")
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for conn in [*conns, probe]:
            conn.close()
    return {
        "path": path,
        "count": count,
        "wall_s": wall,
        "answered": len(done_at),
        "median_done_s": statistics.median(done_at) if done_at else None,
        "failures": len(failures),
        "failure_samples": failures[:5],
        "probe_ms": probes,
    }


def burst(port: int, path: str, count: int) -> dict[str, Any]:
    # at most 3 times what warn mode takes (count one after the other): more is a deadlock
    timeout = count * SLOW * 3 + 30
    loop = loadtest._new_loop()
    try:
        return loop.run_until_complete(_burst(port, path, count, timeout))
    finally:
        loop.close()


# -- the servers --------------------------------------------------------------------------------


def _pin(server: loadtest.Server, cpu: int) -> None:
    """Run every thread of the uvicorn process on ``cpu`` (threads it starts later inherit
    their creator's affinity)."""
    for task in Path(f"/proc/{server.pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), {cpu})


def _server_state(server: loadtest.Server) -> dict[str, float | None]:
    """RSS, threads and open file descriptors of the uvicorn process."""
    threads: float | None = None
    try:
        for line in Path(f"/proc/{server.pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                threads = int(line.split()[1])
        fds: float | None = len(os.listdir(f"/proc/{server.pid}/fd"))
    except OSError:
        fds = None
    return {"rss_mb": server.rss_mb(), "threads": threads, "fds": fds}


def _offloaded_lines(server: loadtest.Server) -> int:
    with open(server.stderr_path, errors="replace") as lines:
        return sum(bool(OFFLOADED_WORDING.search(line)) for line in lines)


def _load_args(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "clients": args.clients,
        "connections": args.connections,
        "sleep_connections": args.sleep_connections,
        "blocking_rate": 0.0,  # clean views only
    }


def _add_lines(total: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    return {key: total.get(key, 0) + value for key, value in more.items()}


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    database = loadtest._migrated_database(workdir)
    extra = {
        key: {"ASYNC_GUARD_MODE": key, "ASYNC_GUARD_STALL_THRESHOLD": "off"} for key in CONFIGS
    }
    results: dict[str, Any] = {
        key: {
            "env": extra[key],
            "rounds": [],
            "rss_mb": {},
            "state": {},
            "bursts": [],
            "guard_lines_rounds": {},
            "pids": [],
        }
        for key in CONFIGS
    }
    round_seconds = args.duration / args.rounds
    started: list[loadtest.Server] = []

    def start_pair(index: int) -> dict[str, loadtest.Server]:
        """Two new server processes: each process has its own memory layout and hash seed,
        which moves its speed by a few per cent; new pairs each round average that out."""
        servers: dict[str, loadtest.Server] = {}
        for key in CONFIGS if index % 2 == 0 else CONFIGS[::-1]:
            data = workdir / f"{key}-{index + 1}"
            data.mkdir()
            shutil.copy(database, data / "db.sqlite3")
            env = loadtest._server_env(data, extra[key])
            servers[key] = loadtest.Server(key, env, data, access_log=False)
            started.append(servers[key])
            servers[key].start()
        for key, server in servers.items():
            server.wait_ready()
            if args.pin_cpu is not None:
                _pin(server, args.pin_cpu)
            loadtest._log(
                f"{key}: uvicorn pid {server.pid} on port {server.port}; warm-up {args.warmup} s"
            )
            loadtest.run_load(server.port, args.warmup, **_load_args(args))
            results[key]["rss_mb"].setdefault("after_warmup", server.rss_mb())
            results[key]["pids"].append(server.pid)
        return {key: servers[key] for key in CONFIGS}

    def retire(servers: dict[str, loadtest.Server]) -> None:
        for key, server in servers.items():
            results[key]["guard_lines_rounds"] = _add_lines(
                results[key]["guard_lines_rounds"], server.guard_lines()
            )
            server.stop()

    servers: dict[str, loadtest.Server] = {}
    try:
        # 1. the driver's overhead on clean views
        for index in range(args.rounds):
            if not servers or not args.same_servers:
                if servers:
                    retire(servers)
                servers = start_pair(index)
            for key in CONFIGS if index % 2 == 0 else CONFIGS[::-1]:
                server = servers[key]
                loadtest._log(f"round {index + 1}/{args.rounds}: {key} ({round_seconds:g} s)")
                load = loadtest.run_load(
                    server.port,
                    round_seconds,
                    cpu_seconds=server.cpu_seconds,
                    **_load_args(args),
                )
                load["round"] = index + 1
                results[key]["rounds"].append(load)
        for key, server in servers.items():  # the last pair serves the bursts too
            results[key]["rss_mb"]["end"] = server.rss_mb()
            results[key]["state"]["after_rounds"] = _server_state(server)
            results[key]["guard_lines_rounds"] = _add_lines(
                results[key]["guard_lines_rounds"], server.guard_lines()
            )
        # 2. what offload buys: bursts of blocking views
        for server in servers.values():
            for path in SLOW_PATHS:  # the first request sets things up (imports, connections)
                primed = burst(server.port, path, 1)
                if primed["failures"]:
                    loadtest._log(f"{server.key}: {path} failed: {primed['failure_samples']}")
        turn = 0
        for count in args.at_once:
            for path in SLOW_PATHS:
                for _ in range(args.bursts):
                    for key in CONFIGS if turn % 2 == 0 else CONFIGS[::-1]:
                        loadtest._log(f"burst: {count} × {path} at once, {key}")
                        outcome = burst(servers[key].port, path, count)
                        results[key]["bursts"].append(outcome)
                        loadtest._log(
                            f"  {outcome['wall_s']:.2f} s, {outcome['failures']} failed, "
                            f"{len(outcome['probe_ms'])} /health probes"
                        )
                    turn += 1
        time.sleep(SETTLE)
        for key, server in servers.items():
            results[key]["state"]["after_bursts"] = _server_state(server)
            results[key]["rss_mb"]["peak"] = server.hwm_mb()
    finally:
        for server in started:
            server.stop()
    for key, server in servers.items():
        results[key]["guard_lines"] = server.guard_lines()
        results[key]["offloaded_lines"] = _offloaded_lines(server)
        results[key]["lifetime_s"] = server.stopped - server.started
        results[key]["exit_code"] = server.proc.returncode if server.proc else None
    return results


# -- the numbers --------------------------------------------------------------------------------


def _clean_summaries(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """loadtest.summarise's per-configuration figures (req/s, latency, CPU per request, ...),
    its "off" and "warn" standing for warn and offload here; its checks are not ours."""
    renamed = {
        "off": {**results["warn"], "guard_lines": results["warn"]["guard_lines_rounds"]},
        "warn": {**results["offload"], "guard_lines": results["offload"]["guard_lines_rounds"]},
    }
    unused = argparse.Namespace(
        summary_interval=math.inf,
        rate_limit=0,
        min_ratio=0.0,
        max_rss_growth=math.inf,
        blocking_rate=0.0,
    )
    configs = loadtest.summarise(renamed, unused)["configs"]
    return {"warn": configs["off"], "offload": configs["warn"]}


def _burst_rows(results: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for count in args.at_once:
        for path in SLOW_PATHS:
            row: dict[str, Any] = {"path": path, "count": count}
            for key in CONFIGS:
                runs = [
                    b for b in results[key]["bursts"] if b["path"] == path and b["count"] == count
                ]
                walls = [b["wall_s"] for b in runs]
                probes = [x for b in runs for x in b["probe_ms"]]
                row[key] = {
                    "wall_s": statistics.median(walls),
                    "wall_min_s": min(walls),
                    "wall_max_s": max(walls),
                    "probes": len(probes),
                    "probe_p50_ms": loadtest._percentile(probes, 50),
                    "probe_max_ms": max(probes, default=None),
                    "failures": sum(b["failures"] for b in runs),
                    "failure_samples": [s for b in runs for s in b["failure_samples"]][:5],
                }
            row["speedup"] = row["warn"]["wall_s"] / row["offload"]["wall_s"]
            rows.append(row)
    return rows


def summarise(results: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    clean = _clean_summaries(results)
    warn, offload = clean["warn"], clean["offload"]
    ratio = offload["clean_rps"] / warn["clean_rps"] if warn["clean_rps"] else 0.0
    pairs = loadtest.paired_ratios(warn, offload)
    # requests per CPU second, offload / warn: less sensitive to how much CPU each server got
    per_cpu = (
        warn["cpu_ms_per_clean"] / offload["cpu_ms_per_clean"]
        if warn["cpu_ms_per_clean"] and offload["cpu_ms_per_clean"]
        else None
    )
    bursts = _burst_rows(results, args)
    burst_failures = {key: sum(row[key]["failures"] for row in bursts) for key in CONFIGS}
    failures = {key: clean[key]["failures"] + burst_failures[key] for key in CONFIGS}
    offloaded = {key: results[key]["offloaded_lines"] for key in CONFIGS}
    clean_lines = {key: results[key]["guard_lines_rounds"]["lines"] for key in CONFIGS}
    checks = {
        "failures": {
            "ok": not any(failures.values()),
            "text": f"failed requests: warn {failures['warn']}, offload {failures['offload']} "
            "(must be 0)",
        },
        "throughput": {
            "ok": ratio >= args.min_ratio,
            "text": f"clean req/s offload/warn {ratio:.3f} (≥ {args.min_ratio:g}; per server "
            f"CPU second: {loadtest._fmt(per_cpu, '.3f')})",
        },
        "offloading": {
            # the comparison means something only if the offload server really offloads
            "ok": offloaded["offload"] > 0 and offloaded["warn"] == 0,
            "text": f"offloaded calls logged (deduplicated per call site): offload "
            f"{offloaded['offload']} lines, warn {offloaded['warn']}",
        },
    }
    return {
        "clean": clean,
        "ratio": ratio,
        "ratio_per_cpu_second": per_cpu,
        "pairs": pairs,
        "paired_median": statistics.median(pairs) if pairs else None,
        "bursts": bursts,
        "failures": failures,
        "clean_guard_lines": clean_lines,
        "state": {key: results[key]["state"] for key in CONFIGS},
        "rss_after_warmup_mb": {key: results[key]["rss_mb"].get("after_warmup") for key in CONFIGS},
        "exit_code": {key: results[key]["exit_code"] for key in CONFIGS},
        "checks": checks,
    }


# -- the tables ---------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return loadtest._fmt(value, ",.1f" if value is not None and value < 100 else ",.0f")


def render(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    warn, offload = summary["clean"]["warn"], summary["clean"]["offload"]
    fmt, ratio_of = loadtest._fmt, loadtest._ratio

    pct = loadtest._pct

    def row(*cells: str) -> str:
        return "| " + " | ".join(cells) + " |"

    def per_cpu_s(data: dict[str, Any]) -> float | None:
        ms = data["cpu_ms_per_clean"]
        return 1000 / ms if ms else None

    bursts = "one burst" if meta["bursts"] == 1 else f"median of {meta['bursts']} bursts (min–max)"
    versions = meta["versions"]
    lines = [
        f"`{meta['command']}` — {meta['platform']}, {meta['cpus']} CPUs (load {meta['load']}), "
        f"Python {meta['python']}, uvicorn {versions['uvicorn']} + uvloop {versions['uvloop']}, "
        f"Django {versions['django']}, greenlet {versions['greenlet']}, DEBUG off, "
        "ASYNC_GUARD_STALL_THRESHOLD=off on both"
        + ("" if meta["pin_cpu"] is None else f", both pinned to CPU {meta['pin_cpu']}")
        + ".",
        "",
        f"**Driver overhead** — {meta['rounds']} interleaved rounds of "
        f"{meta['round_seconds']:g} s per configuration, "
        + (
            "one pair of server processes for all"
            if meta["same_servers"]
            else "each on a new pair of server processes"
        )
        + f"; {meta['connections']} clean "
        f"connections ({meta['sleep_connections']} on /good/sleep, the rest on /health) from "
        f"{meta['clients']} generator processes; no blocking view.",
        "",
        "| metric | warn | offload | ratio |",
        "|---|--:|--:|--:|",
        *loadtest.throughput_rows(
            warn, offload, f"**{summary['ratio']:.3f}**", "paired round ratio: median (min–max)"
        ),
        row("clean requests", fmt(warn["clean"]), fmt(offload["clean"]), ""),
        row("failed requests", fmt(warn["failures"]), fmt(offload["failures"]), ""),
        *loadtest.latency_rows(warn, offload),
        row("server CPU during rounds", pct(warn["server_cpu"]), pct(offload["server_cpu"]), ""),
        row(
            "server CPU ms per clean request",
            fmt(warn["cpu_ms_per_clean"], ".3f"),
            fmt(offload["cpu_ms_per_clean"], ".3f"),
            ratio_of(warn["cpu_ms_per_clean"], offload["cpu_ms_per_clean"]),
        ),
        row(
            "clean requests per server CPU second",
            fmt(per_cpu_s(warn)),
            fmt(per_cpu_s(offload)),
            ratio_of(per_cpu_s(warn), per_cpu_s(offload)),
        ),
        row(
            "load generator CPU, busiest process",
            pct(warn["generator_cpu_max"]),
            pct(offload["generator_cpu_max"]),
            "",
        ),
        row(
            "asyncguard lines on stderr by then",
            str(summary["clean_guard_lines"]["warn"]),
            str(summary["clean_guard_lines"]["offload"]),
            "",
        ),
        "",
        "ratio = offload / warn; paired = the two configurations' rounds that ran back to back; "
        "clean = /health and /good/sleep; CPU = the uvicorn process's CPU time / wall time of "
        "the measured windows (100 % = one core).",
        "",
        f"**What offload buys** — N requests sent at the same moment on connections opened "
        f"beforehand, while one more connection GETs /health in a loop ({PROBE_GAP * 1000:g} ms "
        f"apart); {bursts} each, warn and offload in turn.",
        "",
        "| view | at once | one after the other s | warn: all answered s | offload: all "
        "answered s | speedup | /health p50 / max ms, warn | /health p50 / max ms, offload | "
        "failed: warn / offload |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for item in summary["bursts"]:
        w, o = item["warn"], item["offload"]

        def wall(data: dict[str, Any]) -> str:
            if data["wall_min_s"] == data["wall_max_s"]:
                return f"{data['wall_s']:.2f}"
            return f"{data['wall_s']:.2f} ({data['wall_min_s']:.2f}–{data['wall_max_s']:.2f})"

        def probe(data: dict[str, Any]) -> str:
            return f"{_ms(data['probe_p50_ms'])} / {_ms(data['probe_max_ms'])} ({data['probes']})"

        lines.append(
            row(
                f"`{item['path']}` ({SLOW_PATHS[item['path']]})",
                str(item["count"]),
                f"{item['count'] * SLOW:.1f}",
                wall(w),
                wall(o),
                f"{item['speedup']:.1f}×",
                probe(w),
                probe(o),
                f"{w['failures']} / {o['failures']}",
            )
        )
    state = summary["state"]

    def states(what: str, spec: str) -> list[str]:
        return [
            " → ".join(
                fmt(state[key][when][what], spec) for when in ("after_rounds", "after_bursts")
            )
            for key in CONFIGS
        ]

    rss_warmup = summary["rss_after_warmup_mb"]
    lines += [
        "",
        "one after the other = N × 0.2 s, what a loop running them inline needs; speedup = "
        "warn / offload; /health: p50 / max latency of the probes (how many) over the bursts.",
        "",
        "| uvicorn process | warn | offload |",
        "|---|--:|--:|",
        row(
            "RSS MB: after warm-up → after the clean rounds",
            *(
                fmt(rss_warmup[key], ".1f")
                + " → "
                + fmt(state[key]["after_rounds"]["rss_mb"], ".1f")
                for key in CONFIGS
            ),
        ),
        row("RSS MB: after the clean rounds → after the bursts", *states("rss_mb", ".1f")),
        row("threads: after the clean rounds → after the bursts", *states("threads", ".0f")),
        row("open file descriptors: idem", *states("fds", ".0f")),
        row("exit status (SIGTERM)", *(str(summary["exit_code"][key]) for key in CONFIGS)),
        "",
    ]
    checks = summary["checks"]
    verdict = "PASS" if all(c["ok"] for c in checks.values()) else "FAIL"
    marks = "; ".join(("✓ " if c["ok"] else "✗ ") + c["text"] for c in checks.values())
    lines.append(f"**Verdict: {verdict}** — {marks}.")
    notes = []
    for key, data in (("warn", warn), ("offload", offload)):
        if data["failure_samples"]:
            notes.append(f"{key} clean-round failures, e.g.: " + "; ".join(data["failure_samples"]))
    for item in summary["bursts"]:
        for key in CONFIGS:
            if item[key]["failure_samples"]:
                notes.append(
                    f"{key}, {item['count']} × {item['path']}: "
                    + "; ".join(item[key]["failure_samples"])
                )
    if warn["server_cpu"] is not None and offload["server_cpu"] is not None:
        gap = offload["server_cpu"] - warn["server_cpu"]
        if abs(gap) > 0.1:
            notes.append(
                "the servers did not get the same CPU during their rounds "
                f"({pct(warn['server_cpu'])} vs {pct(offload['server_cpu'])}): other work on "
                "the machine, not the driver, moved the req/s ratio; the CPU per request "
                "compares them better (or rerun: more rounds, --pin-cpu)"
            )
    late = max(warn["late_s"], offload["late_s"])
    if late > 0.1:
        notes.append(f"a generator process started {late:.2f} s late (windows shortened)")
    if notes:
        lines += ["", "Notes:", *(f"- {note}" for note in notes)]
    return "\n".join(lines)


# -- the command --------------------------------------------------------------------------------


def _counts(text: str) -> list[int]:
    try:
        counts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated whole numbers, not {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"whole numbers ≥ 1, not {text!r}")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=30.0,
        metavar="S",
        help="measured seconds of clean load per configuration, split over the rounds (default 30)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=10,
        metavar="N",
        help="interleaved rounds, each on a new pair of server processes (default 10)",
    )
    parser.add_argument(
        "--same-servers",
        action="store_true",
        help="one pair of server processes for all rounds (each process's own speed, a few "
        "per cent either way, then weighs on every round)",
    )
    parser.add_argument("--json", metavar="PATH", help="also save the raw numbers there")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 2 rounds of 3 s, 1 s warm-up, one burst of each",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=2.0,
        metavar="S",
        help="seconds of load per server before measuring, not counted (default 2)",
    )
    load = parser.add_argument_group("clean load (bench/loadtest.py's generator)")
    load.add_argument(
        "--connections", type=int, default=16, metavar="N", help="keep-alive connections (16)"
    )
    load.add_argument(
        "--sleep-connections",
        type=int,
        default=4,
        metavar="N",
        help="of those, how many loop on /good/sleep; the rest on /health (default 4)",
    )
    load.add_argument(
        "--clients", type=int, default=2, metavar="N", help="load-generator processes (default 2)"
    )
    bursts = parser.add_argument_group("bursts of blocking views")
    bursts.add_argument(
        "--at-once",
        type=_counts,
        default=[20, 50],
        metavar="N,N",
        help="requests sent at the same moment (default 20,50)",
    )
    bursts.add_argument(
        "--bursts",
        type=int,
        default=3,
        metavar="N",
        help="bursts per view, count and configuration; the median is shown (default 3)",
    )
    parser.add_argument(
        "--pin-cpu",
        type=int,
        metavar="N",
        help="run both servers (all their threads) on CPU N, so that other work on the machine "
        "takes the same share from each (default: not pinned)",
    )
    parser.add_argument(
        "--min-ratio",
        type=float,
        default=0.95,
        metavar="R",
        help="lowest acceptable clean req/s offload/warn (default 0.95)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (server logs)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.rounds, args.warmup, args.bursts = 6.0, 2, 1.0, 1
    if args.rounds < 1 or args.duration <= 0 or args.clients < 1 or args.bursts < 1:
        parser.error("--rounds, --duration, --clients and --bursts must be positive")
    if not 0 <= args.sleep_connections <= args.connections:
        parser.error("--sleep-connections must be between 0 and --connections")

    started = time.time()
    load_before = os.getloadavg()
    with loadtest._workdir(args.keep) as workdir:
        results = run(args, workdir)
    summary = summarise(results, args)
    meta = {
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "cpus": os.cpu_count(),
        "load": ", ".join(f"{v:.1f}" for v in load_before),
        "versions": {
            name: loadtest._version(name)
            for name in ("asyncguard", "uvicorn", "uvloop", "django", "greenlet", "asgiref")
        },
        "rounds": args.rounds,
        "round_seconds": args.duration / args.rounds,
        "same_servers": args.same_servers,
        "connections": args.connections,
        "sleep_connections": args.sleep_connections,
        "clients": args.clients,
        "at_once": args.at_once,
        "bursts": args.bursts,
        "pin_cpu": args.pin_cpu,
        "seconds": round(time.time() - started, 1),
        "command": " ".join(["python", "bench/offload.py", *(argv or sys.argv[1:])]),
    }
    print(render(summary, meta))
    if args.json:
        loadtest.save_json(args.json, meta, summary, results)
    return 0 if all(check["ok"] for check in summary["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
