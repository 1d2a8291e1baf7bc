"""All hook families, and the set of call keys users may name in allow rules."""

from __future__ import annotations

import functools
from collections.abc import Iterable

from .._spec import AuditHook, Family, Hook
from . import clients, console, database, djangohooks, files, network, processes, sleep, sync

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)
__asyncguard_work__ = True  # the guard judging or reporting a call (_frames)

FAMILIES: tuple[Family, ...] = (
    sleep.FAMILY,
    files.FAMILY,
    network.FAMILY,
    processes.FAMILY,
    database.FAMILY,
    sync.FAMILY,
    console.FAMILY,
    djangohooks.FAMILY,
    clients.FAMILY,
)

# Keys of hooks that live outside this catalog (third-party clients, Django, the watchdog).
EXTRA_KEYS: set[str] = {"stall"}  # the watchdog's key


def family_names() -> tuple[str, ...]:
    return tuple(family.name for family in FAMILIES)


def hooks(exclude: Iterable[str] = ()) -> list[Hook]:
    skip = set(exclude)
    return [hook for family in FAMILIES if family.name not in skip for hook in family.hooks]


def audit_hooks(exclude: Iterable[str] = ()) -> list[AuditHook]:
    skip = set(exclude)
    return [spec for family in FAMILIES if family.name not in skip for spec in family.audit]


def routes() -> tuple[tuple[str, str], ...]:
    """Offload routes the families declare, by call key pattern (the first match wins)."""
    return tuple(route for family in FAMILIES for route in family.routes)


@functools.lru_cache(maxsize=1)
def _catalog_keys() -> frozenset[str]:
    keys: set[str] = set()
    for family in FAMILIES:
        keys.update(hook.key for hook in family.hooks)
        keys.update(spec.key for spec in family.audit)
        keys.update(key for key, _, _ in family.extra)
    return frozenset(keys)


def known_keys() -> frozenset[str]:
    return _catalog_keys() | EXTRA_KEYS
