"""What is allowed to block for the current task: one contextvar, read on the hot path.

``allow_blocking()`` (``_allow``) sets it, per task, and it survives ``await``; the guard sets it
to ``ALL`` around its own work (timing a call, reporting) so nested hooks stay quiet.
"""

from __future__ import annotations

import fnmatch
from contextvars import ContextVar
from dataclasses import dataclass

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)


class AllKeys:
    """Everything is allowed (``allow_blocking()`` without call keys, or the guard's own work)."""

    __slots__ = ()

    def allows(self, key: str) -> bool:
        return True

    def __repr__(self) -> str:
        return "ALL"


ALL = AllKeys()


@dataclass(frozen=True)
class SomeKeys:
    keys: frozenset[str]
    patterns: tuple[str, ...]

    def allows(self, key: str) -> bool:
        if key in self.keys:
            return True
        return any(fnmatch.fnmatchcase(key, pattern) for pattern in self.patterns)

    def union(self, other: SomeKeys) -> SomeKeys:
        return SomeKeys(self.keys | other.keys, self.patterns + other.patterns)


Allowed = AllKeys | SomeKeys

allowed_var: ContextVar[Allowed | None] = ContextVar("asyncguard_allowed", default=None)
