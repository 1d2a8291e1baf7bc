"""Third-party synchronous clients, hooked when the application imports them: one module per
library, registered in ``LIBRARIES``.

Every hook names a module that asyncguard itself never imports: the patcher applies it with a
post-import hook when the application imports ``requests``, ``redis``, ``psycopg``...

- HTTP: ``requests``, ``urllib3``, ``httpx`` (``httpx.AsyncClient`` is never touched).
- Redis: ``redis`` (``redis.asyncio`` is a separate class tree).
- PostgreSQL: ``psycopg2`` (C types: guarded subclasses passed as factories) and ``psycopg`` 3's
  sync classes (``psycopg.AsyncConnection`` is a separate class tree).
- memcached: ``pymemcache``.
- SMTP: ``smtplib``'s commands on a connected client (connecting is the network family's).

A call reports at the outermost hook: ``requests.get`` -> ``Session.request`` -> urllib3 ->
socket raises at ``requests.get`` in raise mode, and in warn mode the inner calls run inside the
reported one (they are covered by it) -- one report per call.

``exclude=["clients"]`` leaves them all alone, ``exclude=["clients.redis"]`` one library.
Adding a library: a module here declaring ``LIBRARY`` (see ``_common.Library``), and its name
in ``LIBRARIES``.
"""

from __future__ import annotations

import importlib

from .._spec import Family
from ._common import FAMILY as NAME
from ._common import Library

# the modules of this package, one per library, in the order their hooks are applied
LIBRARIES: tuple[str, ...] = (
    "requests",
    "urllib3",
    "httpx",
    "redis",
    "psycopg2",
    "psycopg",
    "pymemcache",
    "smtplib",
)

_LIBRARIES: tuple[Library, ...] = tuple(
    importlib.import_module(f"{__name__}.{module}").LIBRARY for module in LIBRARIES
)

FAMILY = Family(
    name=NAME,
    description=(
        "third-party sync clients, hooked when imported: "
        + ", ".join(library.name for library in _LIBRARIES)
    ),
    hooks=tuple(hook for library in _LIBRARIES for hook in library.family_hooks()),
    extra=tuple(key for library in _LIBRARIES for key in library.extra),
)
