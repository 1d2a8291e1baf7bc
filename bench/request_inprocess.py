"""What the guard adds to one Django request, in process: an async hello-world view served by
Django's ASGIHandler, with no guard, ``install(mode="warn")``, ``install(mode="off")`` and
warn mode with ``AsyncGuardMiddleware``, each configuration in its own subprocess.

    python bench/request_inprocess.py                     # 7 interleaved rounds, ~1 min
    python bench/request_inprocess.py --rounds 11 --requests 2000
    python bench/request_inprocess.py --profile warn      # cProfile of one worker, top 25
    python bench/request_inprocess.py --count warn        # calls per request of a few C calls
    python bench/request_inprocess.py --base /tmp/engine/src   # also warn/off/middleware from
                                                     # another source tree, in the same rounds

The application is built here (``settings.configure``: DEBUG off, Django's default middleware
stack, an in-memory SQLite database nobody queries), called directly on an asyncio loop, one
request after the other, with a receive() that hands over the request and then waits: no
server, no sockets.  Each worker serves --warmup requests, then --batches batches of
--requests requests, and keeps the median batch (wall time and loop-thread CPU time per
request).  Rounds are interleaved (round 1: none, warn, off, middleware; round 2 starts one
further along ...): each configuration is a new process in every round, as the guard patches
process globals and its audit hook can never be removed.  The watchdog is off in every
configuration (``stall_threshold=None``): this measures the hooks on the request's path.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from offload_inprocess import asgi_get

CONFIGS = ("none", "warn", "off", "middleware")
ROOT = Path(__file__).resolve().parent.parent


async def hello(request: Any) -> Any:
    from django.http import HttpResponse

    return HttpResponse(b"hello")


def _setup() -> None:
    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        SECRET_KEY="bench",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "django.contrib.messages",
        ],
        MIDDLEWARE=[  # startproject's
            "django.middleware.security.SecurityMiddleware",
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.middleware.common.CommonMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "django.contrib.messages.middleware.MessageMiddleware",
            "django.middleware.clickjacking.XFrameOptionsMiddleware",
        ],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        USE_TZ=True,
    )
    django.setup()


urlpatterns: list[Any] = []


def _application(config: str) -> Any:
    _setup()
    from django.core.handlers.asgi import ASGIHandler
    from django.urls import path

    urlpatterns.append(path("hello", hello))
    application: Any = ASGIHandler()
    if config != "none":
        import asyncguard

        mode = "off" if config.startswith("off") else "warn"
        asyncguard.install(mode, stall_threshold=None, log=False)
        if config.startswith("middleware"):
            application = asyncguard.AsyncGuardMiddleware(application)
    return application


async def _get(application: Any) -> int:
    return await asgi_get(application, "/hello")


async def _serve(application: Any, requests: int) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.thread_time()
    for _ in range(requests):
        await _get(application)
    return (
        (time.perf_counter() - wall) / requests * 1e6,
        (time.thread_time() - cpu) / requests * 1e6,
    )


def worker(config: str, args: argparse.Namespace) -> dict[str, Any]:
    application = _application(config)
    loop = asyncio.new_event_loop()
    try:
        status = loop.run_until_complete(_get(application))
        assert status == 200, status
        loop.run_until_complete(_serve(application, args.warmup))
        if args.profile:
            import cProfile
            import pstats

            profile = cProfile.Profile()
            profile.enable()
            loop.run_until_complete(_serve(application, args.requests))
            profile.disable()
            stats = pstats.Stats(profile, stream=sys.stderr)
            stats.sort_stats("tottime").print_stats(25)
            stats.sort_stats("cumulative").print_stats(40)
            return {}
        if args.count:
            return _count(loop, application, args.requests)
        batches = [loop.run_until_complete(_serve(application, args.requests))]
        batches += [
            loop.run_until_complete(_serve(application, args.requests))
            for _ in range(args.batches - 1)
        ]
    finally:
        loop.close()
    return {
        "config": config,
        "wall_us": statistics.median(w for w, _ in batches),
        "cpu_us": statistics.median(c for _, c in batches),
    }


def _count(loop: asyncio.AbstractEventLoop, application: Any, requests: int) -> dict[str, Any]:
    """Calls per request of a few things the profile points at (audit events included)."""
    counts: dict[str, int] = {}
    counting = [False]

    def audit(event: str, args: tuple[Any, ...]) -> None:
        if counting[0]:
            name = f"audit {event}" + (f" {args[1]}" if event == "object.__getattr__" else "")
            counts[name] = counts.get(name, 0) + 1

    sys.addaudithook(audit)

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "c_call" and counting[0]:
            name = getattr(arg, "__qualname__", repr(arg))
            counts[name] = counts.get(name, 0) + 1

    sys.setprofile(profile)
    import threading

    threading.setprofile(profile)
    counting[0] = True
    loop.run_until_complete(_serve(application, requests))
    counting[0] = False
    sys.setprofile(None)
    threading.setprofile(None)  # type: ignore[arg-type]
    top = sorted(counts.items(), key=lambda item: -item[1])[:30]
    return {"per_request": {name: round(n / requests, 2) for name, n in top}}


def _run(config: str, args: argparse.Namespace) -> dict[str, Any]:
    name, _, base = config.partition("@")
    src = args.base if base else str(ROOT / "src")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, os.path.abspath(__file__), "--worker", name]
    command += ["--requests", str(args.requests), "--warmup", str(args.warmup)]
    command += ["--batches", str(args.batches)]
    proc = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{config} worker failed:\n{proc.stderr}")
    return dict(json.loads(proc.stdout))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (7)")
    parser.add_argument("--requests", type=int, default=1000, help="requests per batch (1000)")
    parser.add_argument("--batches", type=int, default=3, help="batches per worker (3)")
    parser.add_argument("--warmup", type=int, default=300, help="requests first (300)")
    parser.add_argument("--profile", choices=CONFIGS, help="cProfile one worker instead")
    parser.add_argument("--count", choices=CONFIGS, help="count calls in one worker instead")
    parser.add_argument("--base", metavar="SRC", help="compare with asyncguard from SRC too")
    parser.add_argument("--worker", choices=CONFIGS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    configs = CONFIGS + (tuple(f"{c}@base" for c in CONFIGS[1:]) if args.base else ())

    if args.worker or args.profile or args.count:
        result = worker(args.worker or args.profile or args.count, args)
        json.dump(result, sys.stdout, indent=None if args.worker else 1)
        return 0

    started = time.time()
    load_before = os.getloadavg()
    runs: dict[str, list[dict[str, Any]]] = {config: [] for config in configs}
    for index in range(args.rounds):
        order = configs[index % len(configs) :] + configs[: index % len(configs)]
        for config in order:
            print(f"round {index + 1}/{args.rounds}: {config}", file=sys.stderr, flush=True)
            runs[config].append(_run(config, args))
    import django

    load = ", ".join(
        f"{a:.1f} → {b:.1f}" for a, b in zip(load_before, os.getloadavg(), strict=True)
    )
    print(
        f"Python {platform.python_version()}, Django {django.get_version()}, "
        f"{os.cpu_count()} CPUs, load (1, 5, 15 min) {load}; {args.rounds} interleaved rounds "
        f"of {args.batches} × {args.requests} requests, median; {time.time() - started:.0f} s; "
        f"`python bench/request_inprocess.py {' '.join(argv or sys.argv[1:])}`".rstrip()
    )
    print()
    if args.base:
        print(f"`@base`: asyncguard from {args.base}; the others from {ROOT / 'src'}.")
        print()
    print("| per request | " + " | ".join(configs) + " |")
    print("|---|" + "--:|" * len(configs))
    medians = {}
    for key, label in (("wall_us", "wall time µs"), ("cpu_us", "loop-thread CPU µs")):
        medians[key] = {c: statistics.median(r[key] for r in runs[c]) for c in configs}
        cells = [f"{medians[key][c]:,.0f}" for c in configs]
        print(f"| {label} | " + " | ".join(cells) + " |")
        added = [
            "" if c == "none" else f"{medians[key][c] - medians[key]['none']:+,.0f}"
            for c in configs
        ]
        print(f"| added, {label} | " + " | ".join(added) + " |")
        spread = [
            f"{min(r[key] for r in runs[c]):,.0f}–{max(r[key] for r in runs[c]):,.0f}"
            for c in configs
        ]
        print(f"| rounds min–max, {label} | " + " | ".join(spread) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
