"""Loop check: "does *this* thread run an asyncio event loop right now?".

``asyncio._get_running_loop()`` is a C function (~35 ns) that reads a per-thread slot set by
every running loop (asyncio's and uvloop's alike), so loops on worker threads (asgiref's
``async_to_sync``, Django's async ``TestCase``) are seen too.  Never compare with the main
thread: that misses every loop not on it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)

get_running_loop: Callable[[], asyncio.AbstractEventLoop | None] = asyncio._get_running_loop


def current_task_name() -> str | None:
    """Name of the asyncio task running on this thread, or ``None`` (callbacks, no loop)."""
    if get_running_loop() is None:
        return None
    try:
        task = asyncio.current_task()
    except RuntimeError:  # pragma: no cover - loop vanished between the two calls
        return None
    return task.get_name() if task is not None else None


def current_thread_name() -> str:
    return threading.current_thread().name
