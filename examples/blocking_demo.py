"""asyncguard demo: an asyncio "server" whose handlers make blocking calls.

1. raise mode (development, tests): each blocking call raises BlockingCallError at the call
   site, before it runs, with file:line, task and the fix.
2. warn mode (staging): the calls run, are timed and logged; a ticker shows the loop stalled.
3. the fixed handlers (asyncio.sleep, asyncio.to_thread): nothing to report, no stall.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

import asyncguard

CONFIG = os.path.join(tempfile.mkdtemp(prefix="asyncguard-demo-"), "settings.ini")
with open(CONFIG, "w") as f:
    f.write("[demo]\nanswer = 42\n")

LISTENER = socket.create_server(("127.0.0.1", 0))
ADDRESS = LISTENER.getsockname()
# made in main(), after install(), as the locks of the modules an app imports after the guard:
# a lock made before install() stays a raw C lock that only the stall watchdog sees
CACHE_LOCK: threading.Lock


# -- handlers with blocking calls (the bugs) ------------------------------------------------


async def slow_report() -> None:
    time.sleep(0.2)  # "it's only a short pause..."


async def read_settings() -> str:
    with open(CONFIG) as fh:
        return fh.read()


async def ping_backend() -> None:
    sock = socket.socket()
    try:
        sock.connect(ADDRESS)  # a blocking socket
    finally:
        sock.close()


async def git_version() -> str:
    return subprocess.run(
        [sys.executable, "-c", "print('v1')"], capture_output=True, text=True
    ).stdout


async def update_cache() -> None:
    with CACHE_LOCK:  # held by a background thread right now
        pass


BAD = [slow_report, read_settings, ping_backend, git_version, update_cache]


# -- the same handlers, fixed ----------------------------------------------------------------


async def slow_report_fixed() -> None:
    await asyncio.sleep(0.2)


async def read_settings_fixed() -> str:
    def read() -> str:
        with open(CONFIG) as fh:
            return fh.read()

    return await asyncio.to_thread(read)


async def git_version_fixed() -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "print('v1')", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    return out.decode()


GOOD = [slow_report_fixed, read_settings_fixed, git_version_fixed]


def hold_lock_in_background(seconds: float) -> None:
    """Take the lock for another thread to release ``seconds`` later: the demo's setup, so it
    may wait (an earlier hold may not have ended yet)."""
    with asyncguard.allow_blocking("threading.Lock.acquire", reason="the demo's setup"):
        CACHE_LOCK.acquire()
    threading.Timer(seconds, CACHE_LOCK.release).start()


async def ticker(ticks: list[float]) -> None:
    """Ticks every 10 ms; the gaps between ticks are what every other request feels."""
    loop = asyncio.get_running_loop()
    while True:
        ticks.append(loop.time())
        await asyncio.sleep(0.01)


def banner(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


async def run_raise_mode() -> None:
    banner("1. raise mode: each blocking call fails at its call site, before it runs")
    for handler in BAD:
        if handler is update_cache:
            hold_lock_in_background(0.3)
        try:
            await handler()
        except asyncguard.BlockingCallError as exc:
            print(f"  BlockingCallError: {exc}\n", flush=True)
        else:
            print(f"  {handler.__name__}: not caught?!", flush=True)


async def run_handlers(handlers: list, label: str) -> None:
    ticks: list[float] = []
    tick = asyncio.create_task(ticker(ticks))
    await asyncio.sleep(0.02)
    start = time.perf_counter()
    await asyncio.gather(*(h() for h in handlers))
    elapsed = time.perf_counter() - start
    await asyncio.sleep(0.02)
    tick.cancel()
    worst = max(b - a - 0.01 for a, b in itertools.pairwise(ticks)) * 1000
    print(f"  {label}: {len(handlers)} handlers in {elapsed:.2f} s; worst stall {worst:.0f} ms")


async def main() -> int:
    global CACHE_LOCK
    asyncguard.install(mode="raise")
    CACHE_LOCK = threading.Lock()
    with asyncguard.guarded() as raised:
        await run_raise_mode()

    banner("2. warn mode: the calls run, are timed and logged (logger 'asyncguard')")
    hold_lock_in_background(0.4)  # still held when update_cache runs, after slow_report
    with asyncguard.guarded(mode="warn") as warned:
        await run_handlers(BAD, "blocking handlers")

    banner("3. the fixed handlers: nothing to report, the loop never stalls")
    with asyncguard.guarded(mode="raise") as fixed:
        await run_handlers(GOOD, "fixed handlers")

    banner("summary")
    print(f"  raise mode caught {len(raised.violations)} blocking calls: {', '.join(raised.calls)}")
    print(
        f"  warn mode reported {len(warned.violations)}: "
        + ", ".join(
            f"{v.call} {v.duration * 1000:.0f} ms"
            for v in warned.violations
            if v.duration is not None
        )
    )
    print(f"  fixed handlers: {len(fixed.violations)} violations")
    asyncguard.uninstall()
    LISTENER.close()
    ok = len(raised.violations) == len(BAD) and len(fixed.violations) == 0
    return 0 if ok else 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="  %(levelname)s %(name)s: %(message)s\n")
    sys.exit(asyncio.run(main()))
