"""Where violations go: the active ``guarded()`` collectors, ``on_violation`` callbacks and the
``asyncguard`` logger.  Everything here runs with blocking allowed, so a sink (a logging handler
writing a file on the loop thread) can never re-enter the guard."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable

from ._allow import ALL, allowed_var
from ._request import request_var
from ._violation import Violation

logger = logging.getLogger("asyncguard")

Callback = Callable[[Violation], object]

_collectors: list[Collector] = []
_reported_errors: set[tuple[str, str]] = set()


class Collector:
    """What ``guarded()`` yields: every violation seen while it is active, swallowed or not."""

    def __init__(self) -> None:
        self.violations: list[Violation] = []

    @property
    def calls(self) -> list[str]:
        """The call keys of :attr:`violations`, in order."""
        return [v.call for v in self.violations]

    def clear(self) -> None:
        self.violations.clear()

    def __repr__(self) -> str:
        return f"<asyncguard collector: {len(self.violations)} violation(s)>"


def add_collector(collector: Collector) -> None:
    _collectors.append(collector)


def remove_collector(collector: Collector) -> None:
    with contextlib.suppress(ValueError):
        _collectors.remove(collector)


def internal_error(where: str, exc: BaseException) -> None:
    """Log an error of the guard itself once per place and kind; never raise."""
    key = (where, type(exc).__name__)
    if key in _reported_errors:
        return
    _reported_errors.add(key)
    token = allowed_var.set(ALL)
    try:
        logger.error(
            "asyncguard: internal error in %s (the original call went ahead); "
            "please report it: %s: %s",
            where,
            type(exc).__name__,
            exc,
            exc_info=exc,
        )
    except Exception:  # pragma: no cover - a broken logging setup
        pass
    finally:
        allowed_var.reset(token)


def dispatch(
    violation: Violation, *, raised: bool, callbacks: Iterable[Callback], log: bool
) -> None:
    token = allowed_var.set(ALL)
    try:
        request = request_var.get()
        if request is not None:
            request.add(violation.duration)
        for collector in tuple(_collectors):
            collector.violations.append(violation)
        for callback in callbacks:
            try:
                callback(violation)
            except Exception as exc:
                internal_error(f"on_violation callback {callback!r}", exc)
        if log:
            # raise mode: the exception is the report; the log line (DEBUG) is for swallowed ones
            level = logging.DEBUG if raised else logging.WARNING
            logger.log(level, "%s", violation.message(), extra={"asyncguard_violation": violation})
    except Exception as exc:
        internal_error("reporting", exc)
    finally:
        allowed_var.reset(token)
