"""What driving a request costs, in one process: the same Django request with and without the
greenlet driver, interleaved, so that nothing but the driver differs.

    python bench/offload_inprocess.py                 # 12 rounds of 200 /health requests each way
    python bench/offload_inprocess.py --path /good/sleep --rounds 20

example_project's ASGI application (AsyncGuardMiddleware in offload mode, DEBUG off, the
watchdog off) is called directly on a uvloop loop, one request after the other, with a
receive() that hands over the request and then waits: no server, no sockets, no other
process.  Each round serves --requests requests "driven" (the middleware's own choice: the task
Django 5.x runs the view in, or the handler's coroutine under Django 4.2 and 6.x) and as many
"undriven" (the middleware awaits the application as warn mode does); the order alternates
(ABBA).  Shown: the median over rounds of wall time and loop-thread CPU time per request, and
what the driver adds.  bench/offload.py measures the same under uvicorn, across processes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _application(data_dir: str) -> tuple[Any, Any]:
    """example_project's application and the AsyncGuardMiddleware inside it."""
    sys.path.insert(0, str(ROOT / "example_project"))
    os.environ.update(
        DJANGO_SETTINGS_MODULE="myproject.settings",
        DJANGO_DEBUG="0",
        EXAMPLE_DATA_DIR=data_dir,
        ASYNC_GUARD_MODE="offload",
        ASYNC_GUARD_STALL_THRESHOLD="off",
    )
    from myproject.asgi import application

    from asyncguard import AsyncGuardMiddleware

    middleware = application
    while not isinstance(middleware, AsyncGuardMiddleware):
        middleware = middleware.app
    return application, middleware


async def asgi_get(application: Any, path: str) -> int:
    """One GET of ``path`` through ``application`` as a server would send it; its status
    (also bench/request_inprocess.py's request)."""
    handed = False
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal handed
        if not handed:
            handed = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.sleep(3600)  # cancelled by Django once the response is sent
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"localhost")],
        "client": ("127.0.0.1", 50000),
        "server": ("localhost", 80),
    }
    await application(scope, receive, send)
    return next(m["status"] for m in sent if m["type"] == "http.response.start")


async def _measure(args: argparse.Namespace, application: Any, middleware: Any) -> dict[str, Any]:
    driven = middleware._drive

    async def undriven(awaitable: Any) -> Any:
        return await awaitable

    variants = {"undriven": undriven, "driven": driven}
    for _ in range(args.warmup):
        for drive in variants.values():
            middleware._drive = drive
            assert await asgi_get(application, args.path) == 200
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for index in range(args.rounds):
        order = list(variants) if index % 2 == 0 else list(variants)[::-1]
        for name in order:
            middleware._drive = variants[name]
            wall, cpu = time.perf_counter(), time.thread_time()
            for _ in range(args.requests):
                await asgi_get(application, args.path)
            samples[name].append(
                (
                    (time.perf_counter() - wall) / args.requests * 1e6,
                    (time.thread_time() - cpu) / args.requests * 1e6,
                )
            )
    middleware._drive = driven
    return {
        name: {
            "wall_us": statistics.median(w for w, _ in values),
            "loop_cpu_us": statistics.median(c for _, c in values),
            "rounds": values,
        }
        for name, values in samples.items()
    } | {"driver": getattr(driven, "__name__", repr(driven))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--path", default="/health", help="the view to request (/health)")
    parser.add_argument("--rounds", type=int, default=12, metavar="N", help="rounds (12)")
    parser.add_argument(
        "--requests", type=int, default=200, metavar="N", help="requests per round and way (200)"
    )
    parser.add_argument(
        "--warmup", type=int, default=300, metavar="N", help="requests each way first (300)"
    )
    args = parser.parse_args(argv)
    if min(args.rounds, args.requests) < 1 or args.warmup < 0:
        parser.error("--rounds and --requests must be ≥ 1, --warmup ≥ 0")

    import uvloop

    with tempfile.TemporaryDirectory(prefix="asyncguard-inprocess-") as data_dir:
        from django.core.management import call_command

        application, middleware = _application(data_dir)
        call_command("migrate", verbosity=0)
        results = uvloop.run(_measure(args, application, middleware))

    import django
    import greenlet

    plain, driven = results["undriven"], results["driven"]
    print(
        f"`python bench/offload_inprocess.py --path {args.path} --rounds {args.rounds} "
        f"--requests {args.requests}` — Python {sys.version.split()[0]}, Django "
        f"{django.get_version()}, greenlet {greenlet.__version__}, uvloop; driver: "
        f"`{results['driver']}`; medians over {args.rounds} rounds.\n"
    )
    print("| per request | undriven | driven | added | ratio |")
    print("|---|--:|--:|--:|--:|")
    for label, key in (("wall time µs", "wall_us"), ("loop-thread CPU µs", "loop_cpu_us")):
        added = driven[key] - plain[key]
        print(
            f"| {label} | {plain[key]:,.0f} | {driven[key]:,.0f} | {added:+,.0f} | "
            f"{plain[key] / driven[key]:.3f} |"
        )
    print("\nratio = undriven / driven: requests/s with the driver relative to without.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
