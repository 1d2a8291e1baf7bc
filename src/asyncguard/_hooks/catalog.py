"""All hook families, and the set of call keys users may name in allow rules."""

from __future__ import annotations

import functools
from collections.abc import Iterable

from .._spec import AuditHook, Family, Hook, exclude_name
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


def library_names() -> tuple[str, ...]:
    """The libraries ``exclude`` can name one by one: ``"clients.redis"``..."""
    names = (
        exclude_name(family.name, hook.library)
        for family in FAMILIES
        for hook in family.hooks
        if hook.library is not None
    )
    return tuple(dict.fromkeys(names))


def exclude_choices() -> tuple[str, ...]:
    """What ``exclude`` accepts: a family, or one library of a family."""
    return family_names() + library_names()


def _skipped(family: Family, hook: Hook, skip: set[str]) -> bool:
    return family.name in skip or (
        hook.library is not None and exclude_name(family.name, hook.library) in skip
    )


def hooks(exclude: Iterable[str] = ()) -> list[Hook]:
    skip = set(exclude)
    return [
        hook for family in FAMILIES for hook in family.hooks if not _skipped(family, hook, skip)
    ]


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
