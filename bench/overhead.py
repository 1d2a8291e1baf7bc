"""Added nanoseconds per call: no guard vs asyncguard vs blockbuster, side by side in one run.

    python bench/overhead.py                  # 5 interleaved rounds (under a minute)
    python bench/overhead.py --quick          # 3 short rounds, noisier
    python bench/overhead.py --json out.json  # also save every raw number
    .venv3.13/bin/python bench/overhead.py    # any interpreter; blockbuster's column needs
                                              # `pip install blockbuster` there

Each configuration (``none``, ``asyncguard``, ``blockbuster``) runs in its own subprocess,
because both tools patch process globals.  Rounds are interleaved (round 1: none, asyncguard,
blockbuster; round 2 starts one further along, ...) so drifting machine load hits every
configuration alike.  In a worker every row is a ``perf_counter_ns`` loop of N iterations with a
minimal body, N calibrated to a few milliseconds; the best of 15 repeats is kept (5 with
``--quick``), and the cost of the empty loop is subtracted.  The table shows the median over
rounds.

Before timing, each worker checks which rows its tool really guards: it makes the blocking
variant of the call on a loop (a held lock, a socket without data, ...) and sees whether the
tool raises.  A row that a tool does not guard says so instead of claiming a free guard.

The stack depth of the "allowed" rows is the number of Python frames between the timing loop
(the function that allows the call) and the call itself.  asyncguard allows with
``allow_blocking()`` around the loop, blockbuster with ``can_block_in(file, function)`` naming
the function that runs the loop.  The informational rows (not part of the target) add an
uncontended lock on the loop and asyncguard's allow *rules* (``install(allow=["os.stat in
__main__._t_rule"])``), which, like blockbuster's, look at the stack.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIGS = ("none", "asyncguard", "blockbuster")
TARGET_RATIO = 1 / 3
NOISE_NS = 3.0  # the least noise band: an added cost within the band is read as zero
ROOT = Path(__file__).resolve().parent.parent

_perf = time.perf_counter_ns
_sleep = time.sleep  # bound before any tool patches it: probes wait with the original


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    where: str
    probes: tuple[str, ...]  # what a tool must guard for this row to cost it anything
    extra: bool = False  # informational, not part of the target


ROWS = (
    Row("stat_off", "`os.stat(path)`", "off loop", ("os.stat",)),
    Row(
        "acquire_off",
        "`lock.acquire()` + `lock.release()`, uncontended",
        "off loop",
        ("Lock.acquire",),
    ),
    Row("with_off", "`with lock: pass`, uncontended", "off loop", ("with lock",)),
    Row(
        "socket_on",
        "non-blocking `a.send(b'x')` + `b.recv(1)`",
        "on loop",
        ("socket.send", "socket.recv"),
    ),
    Row("allowed_2", "allowed `os.stat(path)`, stack depth 2", "on loop", ("os.stat",)),
    Row("allowed_50", "allowed `os.stat(path)`, stack depth 50", "on loop", ("os.stat",)),
    Row(
        "acquire_on",
        "`lock.acquire()` + `lock.release()`, uncontended",
        "on loop",
        ("Lock.acquire",),
        extra=True,
    ),
    Row("with_on", "`with lock: pass`, uncontended", "on loop", ("with lock",), extra=True),
    Row(
        "rule_2",
        "`os.stat(path)` allowed by a rule naming the caller, depth 2",
        "on loop",
        ("os.stat",),
        extra=True,
    ),
    Row(
        "rule_50",
        "`os.stat(path)` allowed by a rule naming the caller, depth 50",
        "on loop",
        ("os.stat",),
        extra=True,
    ),
)
ROW_BY_KEY = {row.key: row for row in ROWS}


# -- the timed loops (minimal bodies; the call is written the way user code writes it) -------


def _t_empty(n: int) -> int:
    start = _perf()
    for _ in range(n):
        pass
    return _perf() - start


def _t_stat(n: int, path: str) -> int:
    start = _perf()
    for _ in range(n):
        os.stat(path)
    return _perf() - start


def _t_acquire(n: int, lock: Any) -> int:
    start = _perf()
    for _ in range(n):
        lock.acquire()
        lock.release()
    return _perf() - start


def _t_with(n: int, lock: Any) -> int:
    start = _perf()
    for _ in range(n):
        with lock:
            pass
    return _perf() - start


def _t_socket(n: int, a: socket.socket, b: socket.socket) -> int:
    start = _perf()
    for _ in range(n):
        a.send(b"x")
        b.recv(1)
    return _perf() - start


def _stat_at(depth: int, path: str) -> Any:
    if depth > 1:
        return _stat_at(depth - 1, path)
    return os.stat(path)


def _t_allowed(n: int, depth: int, path: str) -> int:
    start = _perf()
    for _ in range(n):
        _stat_at(depth, path)
    return _perf() - start


def _t_rule(n: int, depth: int, path: str) -> int:  # same body, named by the allow rules
    start = _perf()
    for _ in range(n):
        _stat_at(depth, path)
    return _perf() - start


# -- a worker: one configuration, every row ----------------------------------------------------


class Tool:
    """What differs between configurations: activation, the error raised, how to allow."""

    name = "none"
    version = ""
    errors: tuple[type[BaseException], ...] = ()
    rule_ok = True

    def allowing(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()


class AsyncguardTool(Tool):
    name = "asyncguard"

    def __init__(self) -> None:
        try:
            import asyncguard
        except ImportError:  # run with an interpreter that lacks the editable install
            sys.path.insert(0, str(ROOT / "src"))
            import asyncguard

        self.version = asyncguard.__version__
        self.errors = (asyncguard.BlockingCallError,)
        self._allow = asyncguard.allow_blocking
        # the rule rows: a rule naming the function that runs the timing loop
        rule = f"os.stat in {_t_rule.__module__}.{_t_rule.__qualname__}"
        try:
            asyncguard.install("raise", allow=[rule], log=False)
        except ValueError:  # "os.stat" is not a known call key (files not hooked yet)
            asyncguard.install("raise", log=False)
            self.rule_ok = False

    def allowing(self) -> contextlib.AbstractContextManager[Any]:
        return self._allow()


class BlockbusterTool(Tool):
    name = "blockbuster"

    def __init__(self) -> None:
        from importlib.metadata import version

        from blockbuster import BlockBuster, BlockingError

        self.version = version("blockbuster")
        self.errors = (BlockingError,)
        bb = BlockBuster()
        # blockbuster's way to allow: a (file, function) rule, matched while walking the stack
        filename = _t_allowed.__code__.co_filename.replace("\\", "/")
        bb.functions["os.stat"].can_block_in(filename, {"_t_allowed", "_t_rule"})
        bb.activate()


def _make_tool(config: str) -> Tool:
    if config == "asyncguard":
        return AsyncguardTool()
    if config == "blockbuster":
        return BlockbusterTool()
    return Tool()


def _on_loop(loop: asyncio.AbstractEventLoop, func: Callable[[], Any]) -> Any:
    async def main() -> Any:
        return func()

    return loop.run_until_complete(main())


@contextlib.contextmanager
def _socketpair(*, blocking: bool) -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    try:
        a.setblocking(blocking)
        b.setblocking(blocking)
        yield a, b
    finally:
        a.close()
        b.close()


def _probe(tool: Tool, loop: asyncio.AbstractEventLoop, name: str, path: str) -> bool:
    """Does ``tool`` flag the blocking variant of this call on a loop?  (Never hangs.)"""
    errors = tool.errors

    def flagged(call: Callable[[], Any]) -> bool:
        try:
            _on_loop(loop, call)
        except errors:
            return True
        except Exception:  # the unguarded call timed out, as it should
            return False
        return False

    if name == "os.stat":
        return flagged(lambda: os.stat(path))
    if name == "Lock.acquire":
        lock = threading.Lock()
        lock.acquire()
        try:
            return flagged(lambda: lock.acquire(timeout=0.05))
        finally:
            lock.release()
    if name == "with lock":
        lock = threading.Lock()
        lock.acquire()

        def release_later() -> None:
            _sleep(0.1)
            lock.release()

        helper = threading.Thread(target=release_later)
        helper.start()

        def enter() -> None:
            with lock:
                pass

        try:
            return flagged(enter)
        finally:
            helper.join()
    if name == "socket.recv":
        with _socketpair(blocking=True) as (_, b):
            b.settimeout(0.05)
            return flagged(lambda: b.recv(1))
    if name == "socket.send":
        with _socketpair(blocking=False) as (a, _):
            with contextlib.suppress(BlockingIOError):
                while True:  # fill the send buffer
                    a.send(b"x" * 65536)
            a.settimeout(0.05)
            return flagged(lambda: a.send(b"x"))
    raise ValueError(name)


def _timed(run: Callable[[int], int], target_ns: int, repeats: int) -> float:
    """Best ns per iteration of ``run(n)`` over ``repeats``, n calibrated to ``target_ns``."""
    gc.collect()
    gc.disable()
    try:
        n = 100
        elapsed = run(n)
        while elapsed < target_ns // 20 and n < 10**8:
            n *= 10
            elapsed = run(n)
        n = max(n, int(n * target_ns / max(elapsed, 1)))
        return min(run(n) / n for _ in range(repeats))
    finally:
        gc.enable()


def _row_runner(
    key: str, tool: Tool, loop: asyncio.AbstractEventLoop, path: str
) -> Callable[[int], int]:
    if key == "stat_off":
        return lambda n: _t_stat(n, path)
    if key in ("acquire_off", "with_off", "acquire_on", "with_on"):
        lock = threading.Lock()  # made after activation: a guarded lock if the tool swaps them
        timed = _t_acquire if key.startswith("acquire") else _t_with
        if key.endswith("_off"):
            return lambda n: timed(n, lock)
        return lambda n: _on_loop(loop, lambda: timed(n, lock))
    if key == "socket_on":

        def run_socket(n: int) -> int:
            # a fresh pair per repeat: a pair's speed varies a little, the best one is kept
            with _socketpair(blocking=False) as (a, b):
                return int(_on_loop(loop, lambda: _t_socket(n, a, b)))

        return run_socket
    if key.startswith("allowed_"):
        depth = int(key.partition("_")[2])

        def run_allowed(n: int) -> int:
            def allowed() -> int:
                with tool.allowing():
                    return _t_allowed(n, depth, path)

            return int(_on_loop(loop, allowed))

        return run_allowed
    if key.startswith("rule_"):
        depth = int(key.partition("_")[2])
        if not tool.rule_ok:
            raise RuntimeError("asyncguard does not know the call key 'os.stat'")
        return lambda n: _on_loop(loop, lambda: _t_rule(n, depth, path))
    raise ValueError(key)


def worker(config: str, target_ms: float, repeats: int) -> dict[str, Any]:
    path = os.path.abspath(__file__)
    tool = _make_tool(config)
    loop = asyncio.new_event_loop()
    result: dict[str, Any] = {
        "config": config,
        "version": tool.version,
        "guarded": {},
        "ns": {},
        "errors": {},
    }
    try:
        if config != "none":
            names = sorted({name for row in ROWS for name in row.probes})
            result["guarded"] = {name: _probe(tool, loop, name, path) for name in names}
        target_ns = int(target_ms * 1e6)
        baseline = _timed(_t_empty, target_ns, repeats)
        result["baseline_ns"] = baseline
        for row in ROWS:
            try:
                run = _row_runner(row.key, tool, loop, path)
                result["ns"][row.key] = _timed(run, target_ns, repeats) - baseline
            except Exception as exc:
                result["errors"][row.key] = f"{type(exc).__name__}: {exc}"
    finally:
        loop.close()
    return result


# -- the coordinator ---------------------------------------------------------------------------


def _run_worker(config: str, target_ms: float, repeats: int) -> dict[str, Any]:
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        config,
        "--target-ms",
        str(target_ms),
        "--repeats",
        str(repeats),
    ]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        return {"config": config, "failed": lines[-1] if lines else f"exit {proc.returncode}"}
    return dict(json.loads(proc.stdout))


def _fmt_ns(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.1f}"


def _verdict(cells: dict[str, Any]) -> tuple[str, str]:
    """(ratio cell, target cell) for one row."""
    ag, bb = cells["asyncguard"], cells["blockbuster"]
    ag_added, bb_added = ag.get("added"), bb.get("added")
    if ag_added is None or bb_added is None:
        return "—", "—"
    measurable = bb["guarded"] and bb_added > NOISE_NS
    ratio = f"{max(ag_added, 0.0) / bb_added:.2f}" if measurable else "—"
    if not ag["guarded"]:
        return ratio, "n/a — asyncguard does not guard it"
    if not bb["guarded"]:
        # nothing to divide by: the target holds only if asyncguard's cost is lost in the noise
        met = "✓" if ag_added <= cells["noise"] else "✗"
        return ratio, f"{met} — blockbuster does not guard it"
    if not measurable:
        return ratio, "—"
    return ratio, "✓" if ag_added <= TARGET_RATIO * bb_added else "✗"


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    by_config: dict[str, list[dict[str, Any]]] = {config: [] for config in CONFIGS}
    for run in runs:
        by_config[run["config"]].append(run)
    summary: dict[str, Any] = {"configs": {}, "rows": {}}
    for config, config_runs in by_config.items():
        ok = [run for run in config_runs if "failed" not in run]
        summary["configs"][config] = {
            "available": bool(ok),
            "failed": sorted({run["failed"] for run in config_runs if "failed" in run}),
            "version": ok[0]["version"] if ok else None,
        }
    for row in ROWS:
        cells: dict[str, Any] = {}
        for config, config_runs in by_config.items():
            values = [run["ns"][row.key] for run in config_runs if row.key in run.get("ns", {})]
            errors = sorted(
                {run["errors"][row.key] for run in config_runs if row.key in run.get("errors", {})}
            )
            guarded = [
                all(run["guarded"].get(name, False) for name in row.probes)
                for run in config_runs
                if "failed" not in run
            ]
            cells[config] = {
                "median": statistics.median(values) if values else None,
                "rounds": values,
                "errors": errors,
                "guarded": bool(guarded) and all(guarded) if config != "none" else False,
            }
        base = cells["none"]["median"]
        # the rounds' median absolute deviation (none or asyncguard, the larger): differences
        # this small are process-to-process variation, not cost
        spreads = [
            statistics.median(abs(value - statistics.median(values)) for value in values)
            for values in (cells["none"]["rounds"], cells["asyncguard"]["rounds"])
            if len(values) > 1
        ]
        cells["noise"] = max([*spreads, NOISE_NS])
        for config in CONFIGS[1:]:
            median = cells[config]["median"]
            cells[config]["added"] = (
                median - base if median is not None and base is not None else None
            )
        summary["rows"][row.key] = cells
    return summary


def render(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    configs = summary["configs"]
    lines = [
        f"Python {meta['python']} ({meta['implementation']}, {meta['platform']}), "
        f"{meta['cpus']} CPUs, load {meta['load']}; asyncguard {configs['asyncguard']['version']}, "
        f"blockbuster {configs['blockbuster']['version'] or 'not available'}; "
        f"{meta['rounds']} interleaved rounds, median; `{meta['command']}`",
        "",
        "| call | where | none ns | ± | asyncguard ns | blockbuster ns "
        "| asyncguard added | blockbuster added | ratio | ≤ 1/3 of blockbuster |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for extra in (False, True):
        if extra:
            lines.append("| *informational rows* | | | | | | | | | |")
        for row in ROWS:
            if row.extra != extra:
                continue
            cells = summary["rows"][row.key]
            ag, bb = cells["asyncguard"], cells["blockbuster"]
            ratio, target = _verdict(cells)
            if row.extra and target != "—":
                target += " (info)"
            if not ag["guarded"] and ag["median"] is not None:
                ag_cell = f"{_fmt_ns(ag['median'])} (not guarded)"
            else:
                ag_cell = _fmt_ns(ag["median"])
            if not bb["guarded"] and bb["median"] is not None:
                bb_cell = f"{_fmt_ns(bb['median'])} (not guarded)"
            else:
                bb_cell = _fmt_ns(bb["median"])
            lines.append(
                f"| {row.label} | {row.where} | {_fmt_ns(cells['none']['median'])} "
                f"| {_fmt_ns(cells['noise'])} | {ag_cell} | {bb_cell} | {_fmt_ns(ag.get('added'))} "
                f"| {_fmt_ns(bb.get('added'))} | {ratio} | {target} |"
            )
    lines += [
        "",
        "ns per iteration of the loop body, empty-loop cost subtracted; added = config − none; "
        "± = median absolute deviation over rounds of none or asyncguard, the larger; "
        'ratio = asyncguard added / blockbuster added; "not guarded" = the tool did not flag '
        "the blocking variant of that call.",
        "",
    ]
    lines.extend(_depth_notes(summary))
    problems = [
        f"- {row.key} / {config}: {error}"
        for row in ROWS
        for config in CONFIGS
        for error in summary["rows"][row.key][config]["errors"]
    ]
    problems += [
        f"- {config} worker failed: {reason}"
        for config, info in configs.items()
        for reason in info["failed"]
    ]
    if problems:
        lines += ["", "Problems:", *problems]
    return "\n".join(lines)


def _depth_notes(summary: dict[str, Any]) -> list[str]:
    """How the added cost of an allowed call grows from stack depth 2 to 50."""
    notes = []
    for prefix, label in (
        ("allowed", "Allowed call (asyncguard: `allow_blocking()`)"),
        ("rule", "Allowed by a rule (informational)"),
    ):
        shallow, deep = summary["rows"][f"{prefix}_2"], summary["rows"][f"{prefix}_50"]
        parts = []
        for config in CONFIGS[1:]:
            a, b = shallow[config].get("added"), deep[config].get("added")
            if a is None or b is None:
                continue
            growth = b - a
            text = f"{config} {_fmt_ns(a)} → {_fmt_ns(b)} ns ({growth:+,.0f} ns)"
            if config == "asyncguard" and shallow[config]["guarded"]:
                band = max(2 * shallow["noise"], 2 * deep["noise"], 0.1 * abs(a))
                text += ", O(1) in depth ✓" if growth <= band else ", grows with depth ✗"
            parts.append(text)
        if parts:
            notes.append(f"{label}, added cost at depth 2 → 50: " + "; ".join(parts) + ".")
    return notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 short rounds (noisier)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 5, quick 3)")
    parser.add_argument("--json", metavar="PATH", help="save raw and summarised numbers")
    parser.add_argument("--worker", choices=CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--target-ms", type=float, default=5.0, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=15, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        json.dump(worker(args.worker, args.target_ms, args.repeats), sys.stdout)
        return 0

    rounds = args.rounds or (3 if args.quick else 5)
    # many short repeats, best kept: a burst of load from elsewhere spoils few of them
    target_ms, repeats = (2.0, 5) if args.quick else (5.0, 15)
    started = time.time()
    runs = []
    for index in range(rounds):
        order = CONFIGS[index % 3 :] + CONFIGS[: index % 3]
        for config in order:
            print(f"round {index + 1}/{rounds}: {config}", file=sys.stderr, flush=True)
            runs.append(_run_worker(config, target_ms, repeats) | {"round": index + 1})
    summary = summarise(runs)
    meta = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": f"{platform.system()} {platform.machine()}",
        "cpus": os.cpu_count(),
        "load": ", ".join(f"{value:.1f}" for value in os.getloadavg())
        if hasattr(os, "getloadavg")
        else "?",
        "rounds": rounds,
        "target_ms": target_ms,
        "repeats": repeats,
        "seconds": round(time.time() - started, 1),
        "command": " ".join(["python", "bench/overhead.py", *(argv or sys.argv[1:])]),
    }
    print(render(summary, meta))
    if args.json:
        payload = {"meta": meta, "summary": summary, "runs": runs}
        Path(args.json).write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
