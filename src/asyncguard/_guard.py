"""The guard: its configuration (``Guard``, applied from the option table, ``_config``).

``_install`` patches the hook families and hands the configured guard to the engine
(:func:`set_current` -> ``_judge.set_current``), whose slow path reads it on every judged call.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from typing import Any

from . import _config, _judge, _offload, _report
from ._allow import AllowRule
from ._hooks import catalog
from ._report import Callback
from ._sinks import JsonLines, RateLimiter, since_start_text
from ._sites import SiteTable

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)

MODES = _config.MODES
OPTIONS = _config.INSTALL_OPTIONS  # install()'s keyword arguments, from the option table
ROUTES = _config.ROUTES
_DEFAULT_ROUTES = catalog.routes()  # the families' own offload routes, after the user's


class Guard:
    """The process-wide guard returned by :func:`install`.

    Calling :func:`install` again while installed reconfigures this same object (mode, rules,
    callbacks, ...); changing ``exclude`` re-patches.  :func:`uninstall` restores every patched
    attribute to the identical original object.
    """

    def __init__(self) -> None:
        self.json_path: str | None = None
        self.json: JsonLines | None = None
        self.sites = SiteTable(_config.BY_NAME["max_sites"].default)
        self.limiter = RateLimiter(_config.BY_NAME["rate_limit"].default)
        self.installed = False
        self.summarized_calls = 0  # calls covered by the last final summary
        self.configure(_config.defaults())

    def __repr__(self) -> str:
        state = "installed" if self.installed else "not installed"
        return f"<asyncguard.Guard mode={self.mode!r} {state}>"

    def options(self) -> dict[str, Any]:
        """The install options in effect (``install(**guard.options())`` gives them back)."""
        options = dict(self._options)
        options["offload_routes"] = dict(options["offload_routes"])
        return options

    def route(self, key: str) -> str:
        """Where offload mode sends ``key``: ``thread_sensitive``, ``pool`` or ``inline`` (the
        user's ``offload_routes`` first, then the hook families' own)."""
        for pattern, route in (*self.offload_routes.items(), *_DEFAULT_ROUTES):
            if fnmatch.fnmatchcase(key, pattern):
                return route
        return "pool"

    def summary(self, top: int = 10) -> str:
        """The top ``top`` call sites by blocked time since install, as logged at exit."""
        return since_start_text(self.sites, top=top, suppressed=0)

    def configure(self, options: Mapping[str, Any]) -> None:
        """Apply every install option, validated already (``_config.from_kwargs``)."""
        if options["mode"] == "offload" and not _offload.available():
            raise ValueError(
                "mode 'offload' needs the greenlet package: pip install greenlet (or asyncguard's "
                "'offload' extra)"
            )
        json = options["json"]
        if json != self.json_path:
            sink = JsonLines(json) if json is not None else None  # ValueError if unwritable
            if self.json is not None:
                _report.summarize(self, final=True)
                self.json.close()
            self.json, self.json_path = sink, json
        self.mode: str = options["mode"]
        self.rules: tuple[AllowRule, ...] = tuple(map(AllowRule.parse, options["allow"]))
        self.callbacks: tuple[Callback, ...] = options["on_violation"]
        self.min_duration: float = options["min_duration"]
        self.exclude: frozenset[str] = frozenset(options["exclude"])
        self.log: bool = options["log"]
        self.stall_threshold: float | None = options["stall_threshold"]
        if options["rate_limit"] != self.limiter.per_minute:
            self.limiter = RateLimiter(options["rate_limit"])
        self.rate_limit: int = options["rate_limit"]
        self.sites.max_sites = self.max_sites = options["max_sites"]
        self.summary_interval: float = options["summary_interval"]
        self.offload_threads: int = options["offload_threads"]
        self.offload_routes: dict[str, str] = dict(options["offload_routes"])
        self._options = {**options, "offload_routes": dict(self.offload_routes)}

    def close_json(self) -> None:
        """Close the JSON-lines file (the caller wrote its last summary)."""
        if self.json is not None:
            self.json.close()
        self.json = None
        self.json_path = None
        self._options["json"] = None


_guard: Guard | None = None  # the installed guard (also the engine's: _judge.set_current)


def current() -> Guard | None:
    """The installed guard, or ``None``."""
    return _guard


def set_current(guard: Guard | None) -> None:
    """Make ``guard`` the installed one (``_install.install`` / ``uninstall``), for the engine
    too."""
    global _guard
    _guard = guard
    _judge.set_current(guard)
