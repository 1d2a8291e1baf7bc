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

``exclude=["clients"]`` leaves them all alone, ``exclude=["clients.redis"]`` one library.  A
library older than the version its hooks were written for is not hooked: checked when it is
imported, logged once (INFO), and listed by ``not_enabled()``.

Adding a library: a module here declaring ``LIBRARY`` (see ``_common.Library``), and its name
in ``LIBRARIES``.
"""

from __future__ import annotations

from ..._allowed import ALL, allowed_var
from ..._spec import Family
from . import httpx, psycopg, psycopg2, pymemcache, redis, requests, smtplib, urllib3
from ._common import FAMILY as NAME
from ._common import Library

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)
__asyncguard_work__ = True  # the guard judging or reporting a call (_frames)

# the registration list: one module per library, in the order their hooks are applied
LIBRARIES: tuple[Library, ...] = (
    requests.LIBRARY,
    urllib3.LIBRARY,
    httpx.LIBRARY,
    redis.LIBRARY,
    psycopg2.LIBRARY,
    psycopg.LIBRARY,
    pymemcache.LIBRARY,
    smtplib.LIBRARY,
)
REGISTERED: tuple[str, ...] = tuple(library.name for library in LIBRARIES)

FAMILY = Family(
    name=NAME,
    description=(
        "third-party sync clients, hooked when imported: "
        + ", ".join(library.name for library in LIBRARIES)
    ),
    hooks=tuple(hook for library in LIBRARIES for hook in library.family_hooks()),
    extra=tuple(key for library in LIBRARIES for key in library.extra),
)


def not_enabled() -> dict[str, str]:
    """``{library: reason}`` for each client library installed (imported or not) whose hooks
    are not applied because it is older than they are, e.g. ``{"redis": "redis 3.5.3 is older
    than 4.2.0, the oldest version asyncguard's hooks were written for"}``.  Reads the
    installed versions (package metadata) when called."""
    token = allowed_var.set(ALL)  # the guard's own file I/O
    try:
        reasons = {library.name: library.reason() for library in LIBRARIES}
    finally:
        allowed_var.reset(token)
    return {name: reason for name, reason in reasons.items() if reason is not None}
