"""Correct async code is never flagged: zero violations in raise mode, on every loop kind."""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import io
import linecache
import logging
import pdb
import queue
import socket
import subprocess
import sys
import textwrap
import threading
import time
import traceback
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async

import asyncguard
from conftest import LOOP_KINDS, run_on

pytestmark = pytest.mark.parametrize("loop_kind", LOOP_KINDS)


def assert_clean(loop_kind: str, main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    with asyncguard.guarded(mode="raise") as guard:
        result = run_on(loop_kind, main)
    assert guard.violations == [], "\n".join(v.message() for v in guard.violations)
    return result


def _sync_work(x: int) -> int:
    time.sleep(0.001)
    with open(__file__, "rb") as fh:
        fh.read(10)
    return x * 2


def test_asyncio_sleep(loop_kind: str) -> None:
    async def main() -> None:
        for _ in range(5):
            await asyncio.sleep(0.005)
        await asyncio.sleep(0)

    assert_clean(loop_kind, main)


def test_asyncio_streams(loop_kind: str) -> None:
    async def main() -> bytes:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(await reader.readline())
            await writer.drain()
            writer.close()
            await writer.wait_closed()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping\n")
        await writer.drain()
        line = await reader.readline()
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return line

    assert assert_clean(loop_kind, main) == b"ping\n"


def test_asyncio_open_connection_by_hostname(loop_kind: str) -> None:
    async def main() -> None:
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("localhost", port, family=socket.AF_INET)
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()

    assert_clean(loop_kind, main)


def test_create_subprocess_exec(loop_kind: str) -> None:
    async def main() -> bytes:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "print('hi')", stdout=asyncio.subprocess.PIPE
        )
        out, _ = await proc.communicate()
        await proc.wait()
        return out

    assert assert_clean(loop_kind, main).strip() == b"hi"


def test_to_thread_and_run_in_executor(loop_kind: str) -> None:
    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            a = await loop.run_in_executor(pool, _sync_work, 1)
        b = await loop.run_in_executor(None, _sync_work, 2)
        c = await asyncio.to_thread(_sync_work, 3)
        return [a, b, c]

    assert assert_clean(loop_kind, main) == [2, 4, 6]


@pytest.mark.parametrize("thread_sensitive", [True, False])
def test_sync_to_async(loop_kind: str, thread_sensitive: bool) -> None:
    async def main() -> int:
        return await sync_to_async(_sync_work, thread_sensitive=thread_sensitive)(21)

    assert assert_clean(loop_kind, main) == 42


def test_async_to_sync_from_a_worker_thread(loop_kind: str) -> None:
    async def inner() -> int:
        await asyncio.sleep(0.001)
        return 7

    def sync_view() -> int:
        return async_to_sync(inner)()

    async def main() -> int:
        return await sync_to_async(sync_view)()

    assert assert_clean(loop_kind, main) == 7


def test_uncontended_locks_and_nowait_queues(loop_kind: str) -> None:
    lock = threading.Lock()
    rlock = threading.RLock()
    work: queue.Queue[int] = queue.Queue(maxsize=1)
    event = threading.Event()
    event.set()

    async def main() -> None:
        with lock:
            pass
        with rlock, rlock:
            pass
        assert lock.acquire()
        lock.release()
        work.put_nowait(1)
        assert work.get_nowait() == 1
        work.put(2)  # a free slot: does not wait
        assert work.get() == 2  # an item is there: does not wait
        assert event.wait()
        done: concurrent.futures.Future[int] = concurrent.futures.Future()
        done.set_result(5)
        assert done.result() == 5

    assert_clean(loop_kind, main)


def test_non_blocking_sockets(loop_kind: str) -> None:
    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        with a, b:
            a.setblocking(False)
            b.setblocking(False)
            a.send(b"x")
            await loop.sock_sendall(a, b"y")
            return await loop.sock_recv(b, 10)

    assert assert_clean(loop_kind, main) == b"xy"


def test_first_import_of_a_module(loop_kind: str, tmp_path: Path) -> None:
    name = f"fp_fresh_module_{loop_kind}"
    (tmp_path / f"{name}.py").write_text("VALUE = 41 + 1\n")
    sys.path.insert(0, str(tmp_path))
    try:

        async def main() -> int:
            module = importlib.import_module(name)
            return int(module.VALUE)

        assert assert_clean(loop_kind, main) == 42
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)


def test_logging_to_stderr(loop_kind: str) -> None:
    logger = logging.getLogger(f"fp.{loop_kind}")
    handler = logging.StreamHandler(sys.stderr)
    logger.addHandler(handler)
    try:

        async def main() -> None:
            logger.warning("a log line from the loop")
            logger.error("another one")

        assert_clean(loop_kind, main)
    finally:
        logger.removeHandler(handler)


def test_traceback_and_linecache(loop_kind: str) -> None:
    linecache.clearcache()

    async def main() -> str:
        try:
            raise ValueError("boom")
        except ValueError:
            text = traceback.format_exc()
        linecache.getline(__file__, 1)
        traceback.extract_stack()
        return text

    assert "raise ValueError" in assert_clean(loop_kind, main)


def test_pdb(loop_kind: str) -> None:
    async def main() -> str:
        out = io.StringIO()
        debugger = pdb.Pdb(stdin=io.StringIO("p 6 * 7\nl\nc\n"), stdout=out)
        debugger.set_trace()
        value = 1  # the debugger stops here and lists the source
        sys.settrace(None)
        return out.getvalue() + str(value)

    assert "42" in assert_clean(loop_kind, main)


def test_pytest_assertion_rewriting_of_a_module_imported_on_the_loop(
    loop_kind: str, tmp_path: Path
) -> None:
    name = f"fp_rewritten_{loop_kind}"
    (tmp_path / f"{name}.py").write_text("def check(x):\n    assert x == 1\n    return x\n")
    pytest.register_assert_rewrite(name)
    sys.path.insert(0, str(tmp_path))
    try:

        async def main() -> int:
            module = importlib.import_module(name)
            return int(module.check(1))

        assert assert_clean(loop_kind, main) == 1
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)


def test_coverage(loop_kind: str, tmp_path: Path) -> None:
    pytest.importorskip("coverage", reason="coverage is not installed")
    script = tmp_path / "covered.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import asyncio, json, sys
            sys.path.insert(0, {str(Path(__file__).parent)!r})
            import asyncguard
            from conftest import run_on

            async def main():
                import email.mime.text  # first import, traced by coverage
                await asyncio.sleep(0.001)
                return sum(i for i in range(1000))

            with asyncguard.guarded(mode="raise") as g:
                run_on({loop_kind!r}, main)
            print(json.dumps([v.message() for v in g.violations]))
            """
        )
    )
    data_file = str(tmp_path / "cov")
    out = subprocess.run(
        [sys.executable, "-m", "coverage", "run", "--data-file", data_file, str(script)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_another_thread_blocking_while_the_loop_runs(loop_kind: str, tmp_path: Path) -> None:
    target = tmp_path / "written-by-thread.txt"

    def blocker() -> None:
        time.sleep(0.02)
        target.write_text("x")
        with socket.create_server(("127.0.0.1", 0)) as server:
            with socket.create_connection(server.getsockname()):
                pass
        subprocess.run([sys.executable, "-c", "pass"], check=True)

    async def main() -> None:
        thread = threading.Thread(target=blocker)
        thread.start()
        while thread.is_alive():
            await asyncio.sleep(0.005)

    assert_clean(loop_kind, main)
    assert target.read_text() == "x"
