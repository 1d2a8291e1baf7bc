"""asyncguard: find blocking calls on event-loop threads, and raise, warn or offload them.

Importing asyncguard never imports Django or pytest.
"""

from __future__ import annotations

from ._allow import allow_blocking
from ._guard import Guard
from ._hooks.catalog import known_keys as _known_keys
from ._install import guarded, install, uninstall
from ._offload import offloaded, offloading
from ._report import Collector
from ._violation import BlockingCallError, Violation
from .middleware import AsyncGuardMiddleware

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)

__version__ = "0.1.0"

# tracebacks and reprs name the public path: asyncguard.BlockingCallError
BlockingCallError.__module__ = Violation.__module__ = __name__

__all__ = [
    "AsyncGuardMiddleware",
    "BlockingCallError",
    "Collector",
    "Guard",
    "Violation",
    "allow_blocking",
    "guarded",
    "install",
    "known_calls",
    "offloaded",
    "offloading",
    "uninstall",
]


def known_calls() -> list[str]:
    """Every call key asyncguard can report, i.e. what allow rules may name."""
    return sorted(_known_keys())
