"""What asyncguard says to its user, in one place: the fix for each kind of call, and every
sentence frame a violation, a stall, a repeat line, a summary, a test failure or an internal
error is written in.  Callers pass plain values; nothing here formats user text with
``str.format`` (a hint or an argument holding ``{x}`` stays as it is).

The option table (``_config``) keeps each option's own wording (what it expects) in its row,
and a hook for one library keeps its fix clause in its module, next to its spec (one module
per library); they use the frames below (``THREAD``, :func:`bad_value`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)

# -- the fix, in one clause, for each kind of blocking call ------------------------------------

THREAD = "or wrap the call: `await asyncio.to_thread(fn, ...)` / `await sync_to_async(fn)()`"
SLEEP = "use `await asyncio.sleep({args})` instead"  # {args}: replaced by the call's arguments
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
UNDESCRIBED = "(asyncguard could not describe this call: see its internal error in the log)"

# Django's own sentence, first in raise mode's error where Django refuses the call itself
DJANGO_ASYNC_UNSAFE = "You cannot call this from an async context - use a thread or sync_to_async."


# -- a violation --------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def seconds(value: float) -> str:
    """``1.25 s`` from a second on, else ``12.5 ms``."""
    return f"{value:.2f} s" if value >= 1 else ms(value)


def context(task: str | None, thread: str, request: str | None, view: str | None) -> str:
    """``task 'Task-3', thread 'MainThread', request 'GET /orders', view shop.views.orders``"""
    parts = [] if task is None else [f"task {task!r}"]
    parts.append(f"thread {thread!r}")
    if request is not None:
        parts.append(f"request {request!r}")
    if view is not None:
        parts.append(f"view {view}")
    return ", ".join(parts)


def call_verb(duration: float | None, *, offloaded: bool, refused_by: str | None = None) -> str:
    if refused_by is not None:
        return f"was refused by {refused_by} on the event loop (it did not run)"
    if offloaded:
        return (
            f"ran in a worker thread for {ms(duration or 0)} (offload mode) "
            "instead of blocking the event loop"
        )
    if duration is None:
        return "would block the event loop"
    return f"blocked the event loop for {ms(duration)}"


def violation(call_expr: str, verb: str, where: str, context: str, hint: str) -> str:
    """``time.sleep(0.5) would block the event loop in app.py:3 (view), thread 'Main' — fix``"""
    return f"{call_expr} {verb} in {where}, {context} — {hint}"


def stall(
    duration: float,
    *,
    ongoing: bool,
    where: str,
    code: str,
    samples: list[tuple[str, int]],
    sample_count: int,
    context: str,
    hint: str,
) -> str:
    """``stall: the event loop was blocked for 180 ms in app.py:9 (view) at `x()` (...)``"""
    total = f"{duration * 1000:.0f} ms"
    verb = (
        f"the event loop has been blocked for {total} so far"
        if ongoing
        else f"the event loop was blocked for {total}"
    )
    shown = f" at `{code}`" if code else ""
    sampled = ""
    if sample_count and samples:
        others = "".join(f"; {place} {n}" for place, n in samples[1:])
        sampled = f" ({samples[0][1]} of {sample_count} samples{others})"
    return f"stall: {verb} in {where}{shown}{sampled}, {context} — {hint}"


# -- the log: repeats and summaries ---------------------------------------------------------------


def repeat(
    call: str, where: str, count: int, total: float, longest: float, hint: str, offloaded: bool
) -> str:
    """The one line a known site gets when its count reaches 10, 100, 1000..."""
    spent = "run in worker threads" if offloaded else "blocked"
    return (
        f"{call} at {where}: {plural(count, 'call')} so far, {total:.3f} s {spent} in "
        f"total (max {ms(longest)}) — {hint}"
    )


def summary_head(title: str, calls: int, sites: int) -> str:
    return (
        f"asyncguard: {title}: {plural(calls, 'blocking call')} at {plural(sites, 'site')}; "
        "top by time:"
    )


def summary_row(
    rank: int,
    call: str,
    where: str,
    count: int,
    total: float,
    p95_ms: float | None,
    longest: float,
    requests: int,
    more_requests: bool,
) -> str:
    timing = f"{seconds(total)} total"
    if p95_ms is not None:
        timing += f", p95 {p95_ms:.1f} ms, max {ms(longest)}"
    # distinct METHOD + path labels, not a count of requests
    label = "request label" if requests == 1 and not more_requests else "request labels"
    affected = f", {requests}{'+' if more_requests else ''} {label}" if requests else ""
    return f"  {rank}. {call} at {where}: {plural(count, 'call')}, {timing}{affected}"


def summary_tail(more_sites: int, overflow: tuple[int, float], suppressed: int) -> list[str]:
    lines = []
    if more_sites:
        lines.append(f"  … and {plural(more_sites, 'more site')}")
    if overflow[0]:
        lines.append(
            f"  + {plural(overflow[0], 'call')} ({seconds(overflow[1])}) at sites beyond the "
            "max_sites table limit"
        )
    if suppressed:
        was = "was" if suppressed == 1 else "were"
        lines.append(f"  ({plural(suppressed, 'log line')} {was} dropped by the rate limit)")
    return lines


SUMMARY_SINCE_START = "summary since start"


def summary_window(seconds_: float) -> str:
    return f"the last {seconds_:.0f} s"


def active(mode: str, families: Iterable[str], watchdog: float | None, sinks: Iterable[str]) -> str:
    """The one INFO line when the guard becomes active in a process."""
    stall = "off" if watchdog is None else f"stall threshold {watchdog * 1000:g} ms"
    return (
        f"active in process {os.getpid()}, mode {mode}; hooks: "
        f"{', '.join(families) or 'none'}; watchdog {stall}; reports to {', '.join(sinks)}"
    )


def missing_module_rules(sources: list[str]) -> str:
    """Allow rules whose place names no module that exists: most likely a typo."""
    verb = "names" if len(sources) == 1 else "name"
    return (
        f"{plural(len(sources), 'allow rule')} {verb} a module that cannot be found: "
        f"{', '.join(repr(source) for source in sources)} — such a rule never allows anything; "
        "check the spelling"
    )


def stale_rules(sources: list[str]) -> str:
    """Allow rules that never matched a call: they would hide the next blocking call there."""
    listed_rules = ", ".join(repr(source) for source in sources)
    return (
        f"{plural(len(sources), 'allow rule')} never matched a call: {listed_rules}"
        " — remove or fix them (a stale rule hides the next blocking call it names)"
    )


# The lines below go to the ``asyncguard`` logger, whose name says who speaks (the README's
# format is ``%(levelname)s %(name)s: %(message)s``): they carry no "asyncguard:" prefix.

# the guard's own error, logged once per place and kind (%-style: a logging call's arguments)
INTERNAL_ERROR = "internal error in %s (the original call went ahead); please report it: %s: %s"


# -- the JSON-lines file ----------------------------------------------------------------------


def json_unopenable(path: str, reason: str | None) -> str:
    return f"cannot open the asyncguard JSON-lines file {path!r}: {reason}"


def json_unwritable(path: str, reason: str | None) -> str:
    return (
        f"cannot write to the JSON-lines file {path!r} ({reason}): the guard goes "
        "on; lines that cannot be written are counted and the count is logged at exit"
    )


def json_reopened(path: str) -> str:
    return f"the JSON-lines file {path!r} was removed; it is created again"


def json_dropped(path: str, count: int) -> str:
    return f"{plural(count, 'line')} could not be written to {path!r}"


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``1 call``, ``2 calls``"""
    return f"{count} {noun if count == 1 else (nouns or noun + 's')}"


# -- a test that ran blocking calls (the pytest plugin) -------------------------------------------


def test_failure(when: str | None, total: int, lines: Iterable[str], keys: Iterable[str]) -> str:
    """The failure a test gets: each call site once, then how to allow them."""
    text = [f"asyncguard: {total} blocking call(s) ran on an event-loop thread during {when}:"]
    text += [f"  {i}. {line}" for i, line in enumerate(lines, 1)]
    quoted = ", ".join(f'"{key}"' for key in dict.fromkeys(keys))
    text.append(
        f"Fix each call, or allow it in this test: @pytest.mark.allow_blocking({quoted}, "
        "reason=...), or in every test: ini asyncguard_allow."
    )
    return "\n".join(text)


MARKER_FORMS = (
    "it takes allow rules as the ini and settings do: a call key ('time.sleep', "
    "'requests.*'), 'CALL in MODULE' ('time.sleep in myapp.legacy') or "
    "'CALL in MODULE.FUNCTION'; no argument allows every call"
)


# -- bad input ------------------------------------------------------------------------------------


def listed(choices: Iterable[str]) -> str:
    """``'raise', 'warn', 'offload', 'off'``"""
    return ", ".join(repr(choice) for choice in choices)


def bad_value(source: str, value: object, expected: str) -> str:
    """``ASYNC_GUARD_MODE = 'loud' is not valid: choose one of 'raise', 'warn', 'off'``"""
    return f"{source} = {value!r} is not valid: {expected}"
