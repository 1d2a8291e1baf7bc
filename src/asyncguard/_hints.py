"""The fix, in one clause, for each kind of blocking call."""

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)

THREAD = "or wrap the call: `await asyncio.to_thread(fn, ...)` / `await sync_to_async(fn)()`"
SLEEP = "use `await asyncio.sleep({args})` instead"
FILE = (
    "do file I/O off the loop: `await asyncio.to_thread(fn, ...)` or "
    "`await sync_to_async(fn)()` (or anyio.Path / aiofiles)"
)
NETWORK = "use an async client (asyncio streams, httpx.AsyncClient), " + THREAD
DNS = "use `await loop.getaddrinfo(...)` instead, " + THREAD
SELECT = "await the readiness instead (`loop.add_reader`, asyncio streams), " + THREAD
HTTP = "use an async HTTP client such as `httpx.AsyncClient`, " + THREAD
SUBPROCESS = (
    "use `await asyncio.create_subprocess_exec(...)` (then `await proc.wait()`/"
    "`communicate()`) instead, " + THREAD
)
DATABASE = "use an async driver (aiosqlite) " + THREAD
LOCK = "use `asyncio.Lock` between tasks, " + THREAD
WAIT = (
    "use the asyncio equivalent (asyncio.Event, asyncio.Queue, "
    "`await asyncio.wrap_future(f)`), " + THREAD
)
JOIN = "await the work instead (`await asyncio.to_thread(...)`), " + THREAD
INPUT = "read input before starting the loop, or " + THREAD.removeprefix("or ")
STALL = (
    "move the CPU-bound or blocking work off the loop: `await asyncio.to_thread(fn, ...)` / "
    "`await sync_to_async(fn)()` (a process pool for long pure-Python work)"
)
