#!/usr/bin/env python3
"""The demo: example_project (Django) served by uvicorn, guarded in raise and then warn mode.

Usage: python3 scripts/demo.py

It creates .venv-demo (asyncguard, Django 5.2, uvicorn with uvloop, requests, httpx), migrates
a throw-away SQLite database, starts ``uvicorn myproject.asgi:application`` in example_project/
on a free loopback port, requests each blocking view (/bad/...) and its async twin (/good/...)
over HTTP, and shows what came back and what the guard reported.  Exits 1 if a blocking view
went unnoticed or a correct one was reported.  (An asyncio program without Django:
``python examples/blocking_demo.py`` in that virtualenv.)
"""

from __future__ import annotations

import concurrent.futures
import os
import queue
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from _bootstrap import ROOT, ensure_venv

PROJECT = ROOT / "example_project"
HOST = "127.0.0.1"
TOPICS = ["sleep", "http", "orm", "cache", "template", "cpu"]
# CPU-bound work calls nothing a hook knows: the stall watchdog reports it, after the fact
# (raise mode cannot interrupt it), so the response is the view's own
REPORTED_LATER = {"cpu"}
PACKAGES = [
    "-e",
    f"{ROOT}[offload]",
    "django>=5.2,<5.3",
    "uvicorn[standard]>=0.30",
    "requests>=2.31",
    "httpx>=0.27",
]
MODES = {
    "raise": "a blocking call raises BlockingCallError before it runs: Django answers 500",
    "warn": "a blocking call runs, is timed and logged: the response is unchanged",
}
SHOWN = 2  # guard messages printed per request (the rest are counted)
MESSAGE = re.compile(r"the event loop (?:in|for|was blocked for) ")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class Server:
    """``uvicorn myproject.asgi:application`` as a child process; its output, line by line."""

    def __init__(self, python: Path, mode: str, data: str) -> None:
        self.port = free_port()
        self.argv = [
            "uvicorn",
            "myproject.asgi:application",
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--loop",
            "uvloop",
            "--log-level",
            "warning",  # no start-up banner or access log: the guard's lines stand out
        ]
        env = {
            **os.environ,
            "ASYNC_GUARD_MODE": mode,
            "DJANGO_DEBUG": "1",
            "EXAMPLE_DATA_DIR": data,
            "PYTHONUNBUFFERED": "1",
        }
        self.proc = subprocess.Popen(
            [str(python), "-m", *self.argv],
            cwd=PROJECT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def output(self, quiet: float = 0.1) -> list[str]:
        """What the server wrote since the last call (waits until it has been quiet a while)."""
        lines = []
        while True:
            try:
                lines.append(self.lines.get(timeout=quiet))
            except queue.Empty:
                return lines

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit("uvicorn exited:\n" + "\n".join(self.output()))
            try:
                with urllib.request.urlopen(f"http://{HOST}:{self.port}/health", timeout=2):
                    self.output()  # discard start-up messages
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        sys.exit(f"uvicorn did not answer in {timeout:.0f} s:\n" + "\n".join(self.output()))

    def get(self, path: str) -> tuple[int, str | None]:
        """``(status, X-AsyncGuard-Blocking header)`` of ``GET path``."""
        try:
            with urllib.request.urlopen(f"http://{HOST}:{self.port}{path}", timeout=30) as reply:
                reply.read()
                return reply.status, reply.headers.get("X-AsyncGuard-Blocking")
        except urllib.error.HTTPError as error:
            with error:
                error.read()
                return error.code, error.headers.get("X-AsyncGuard-Blocking")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def guard_messages(lines: list[str]) -> list[str]:
    """The violation messages among the server's lines: the guard's warnings, and the last
    line of the traceback Django logs for a BlockingCallError."""
    return [line.strip() for line in lines if MESSAGE.search(line)]


def run_mode(python: Path, mode: str, data: str) -> list[str]:
    """Serve, request every view, report; the list of problems found."""
    print(f"\n=== {mode} mode: {MODES[mode]}")
    server = Server(python, mode, data)
    print(f"$ cd example_project && ASYNC_GUARD_MODE={mode} {' '.join(server.argv)}\n")
    problems = []
    try:
        server.wait_ready()
        for topic in TOPICS:
            for kind in ("bad", "good"):
                path = f"/{kind}/{topic}"
                status, header = server.get(path)
                later = topic in REPORTED_LATER
                messages = guard_messages(server.output(quiet=0.5 if later else 0.1))
                caught = bool(messages)
                verdict = "reported" if caught else "clean"
                print(f"GET {path:<14} -> {status}   X-AsyncGuard-Blocking: {header}   {verdict}")
                for message in messages[:SHOWN]:
                    print(f"    {message}")
                if len(messages) > SHOWN:
                    print(
                        f"    ... and {len(messages) - SHOWN} more blocking calls in this request"
                    )
                raises = kind == "bad" and mode == "raise" and not later
                expected_status = 500 if raises else 200
                if kind == "bad" and not caught:
                    problems.append(f"{mode}: {path} blocked the loop and was not reported")
                if kind == "good" and caught:
                    problems.append(f"{mode}: {path} is correct async code but was reported")
                if status != expected_status:
                    problems.append(f"{mode}: {path} answered {status}, not {expected_status}")
                if header is None:
                    problems.append(f"{mode}: {path} had no X-AsyncGuard-Blocking header")
    finally:
        server.stop()
    return problems


SLOW_PATHS = {"/slow/sleep": "time.sleep(0.2)", "/slow/query": "a sync ORM query of 0.2 s"}
AT_ONCE = 20


def at_once(server: Server, path: str) -> float:
    """Seconds until ``AT_ONCE`` simultaneous requests to ``path`` have all been answered."""
    start = threading.Barrier(AT_ONCE + 1)

    def one() -> int:
        start.wait()
        return server.get(path)[0]

    with concurrent.futures.ThreadPoolExecutor(AT_ONCE) as pool:
        futures = [pool.submit(one) for _ in range(AT_ONCE)]
        start.wait()
        began = time.perf_counter()
        statuses = [future.result() for future in futures]
        elapsed = time.perf_counter() - began
    if set(statuses) != {200}:
        raise RuntimeError(f"{path} answered {sorted(set(statuses))}")
    return elapsed


def run_offload(python: Path, data: str) -> list[str]:
    """20 requests at once to views that block for 0.2 s: warn mode vs offload mode."""
    print(
        "\n=== offload mode: a blocking call runs in a worker thread while the loop serves "
        "other requests"
    )
    timings: dict[str, dict[str, float]] = {}
    logged: list[str] = []
    for mode in ("warn", "offload"):
        server = Server(python, mode, data)
        try:
            server.wait_ready()
            for path in SLOW_PATHS:
                server.get(path)  # the first request sets up (imports, the database)
                first = guard_messages(server.output())  # a site is logged once, in full
                if mode == "offload":
                    logged += first[:1]
                timings.setdefault(path, {})[mode] = at_once(server, path)
        finally:
            server.stop()
    problems = []
    for path, what in SLOW_PATHS.items():
        warn, offload = timings[path]["warn"], timings[path]["offload"]
        print(
            f"{AT_ONCE} requests at once to {path:<11} ({what}): "
            f"warn {warn:.2f} s, offload {offload:.2f} s"
        )
        if offload > 1.0:
            problems.append(f"offload: {AT_ONCE} requests to {path} took {offload:.2f} s")
    for message in logged:
        print(f"    {message}")
    return problems


def main() -> int:
    python = ensure_venv(".venv-demo", *PACKAGES)
    data = tempfile.mkdtemp(prefix="asyncguard-demo-")
    try:
        env = {**os.environ, "EXAMPLE_DATA_DIR": data}
        subprocess.run(
            [str(python), "manage.py", "migrate", "--verbosity", "0"],
            cwd=PROJECT,
            env=env,
            check=True,
        )
        print(
            "example_project/shop/views.py has async views that block the event loop (/bad/...)"
            "\nnext to their correct async versions (/good/...); myproject/asgi.py wraps Django"
            "\nin AsyncGuardMiddleware.  Each request below shows the HTTP status, the"
            "\nX-AsyncGuard-Blocking header (blocking calls and blocked time of that request,"
            "\nsent under DEBUG) and what the guard wrote to the server's log."
        )
        problems = [problem for mode in MODES for problem in run_mode(python, mode, data)]
        problems += run_offload(python, data)
    finally:
        shutil.rmtree(data, ignore_errors=True)
    print()
    if problems:
        print("FAILED:\n  " + "\n  ".join(problems))
        return 1
    print(
        f"OK: all {len(TOPICS)} blocking views were reported with their file:line and request,"
        f"\nin raise and warn mode, and their {len(TOPICS)} async versions were clean;"
        f"\nin offload mode {AT_ONCE} blocking requests at once took about as long as one."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
