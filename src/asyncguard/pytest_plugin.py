"""The pytest plugin (entry point ``pytest11: asyncguard``): installing asyncguard makes every
test fail in which a blocking call ran on an event-loop thread — during setup, call or
teardown, also when the code under test swallowed the ``BlockingCallError``, in a
fire-and-forget task, a ``call_soon`` callback, or a Django view behind ``client`` /
``async_client``.

``--asyncguard-mode=raise|warn|off`` (ini ``asyncguard_mode``; ``-p no:asyncguard`` disables
the plugin); ``@pytest.mark.allow_blocking`` / ``allow_blocking("time.sleep", reason=...)``;
ini ``asyncguard_allow`` (one rule a line); fixture ``asyncguard``; ``--asyncguard-report``.
Never imports Django.
"""

from __future__ import annotations

import contextlib
import warnings
from collections import Counter
from collections.abc import Generator
from typing import Any, cast

import pytest

from . import __version__, _guard, _report
from ._allow import allow_blocking
from ._frames import display_path
from ._violation import Violation

MODES = _guard.MODES
_STASH_KEY = pytest.StashKey["_Session"]()


class AsyncGuardWarning(pytest.PytestWarning):
    """A blocking call on an event-loop thread, reported in ``--asyncguard-mode=warn``."""


class _Session:
    def __init__(self, mode: str, rules: list[str], report: bool) -> None:
        self.mode = mode
        self.rules = rules
        self.report = report
        self.collector = _report.Collector()
        self.sites: Counter[tuple[str, str]] = Counter()  # (call, where) -> count
        self.tests: dict[tuple[str, str], set[str]] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Count sites from the reports (under xdist the controller gets them this way)."""
        for name, value in report.user_properties:
            if name != "asyncguard":
                continue
            for call, where, _ in cast("list[tuple[str, str, str]]", value):
                site = (call, where)
                self.sites[site] += 1
                self.tests.setdefault(site, set()).add(report.nodeid)


class AsyncGuardFixture:
    """What the ``asyncguard`` fixture gives a test: its violations so far, and ``allow()``."""

    def __init__(self, session: _Session, start: int) -> None:
        self._session = session
        self._start = start

    @property
    def violations(self) -> list[Violation]:
        return self._session.collector.violations[self._start :]

    @property
    def mode(self) -> str:
        return self._session.mode

    def allow(self, *calls: str, reason: str | None = None) -> allow_blocking:
        """``with asyncguard.allow("time.sleep"):`` — allow blocking calls in a block."""
        return allow_blocking(*calls, reason=reason)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("asyncguard", "asyncguard: fail tests that block an event loop")
    group.addoption(
        "--asyncguard-mode",
        choices=MODES,
        default=None,
        help="raise (default): fail tests with blocking calls on a loop thread; warn: report "
        "them as warnings; off: no checks. Overrides ini asyncguard_mode.",
    )
    group.addoption(
        "--asyncguard-report",
        action="store_true",
        default=False,
        help="at the end, list blocking call sites by count and by test",
    )
    parser.addini("asyncguard_mode", "asyncguard mode: raise, warn or off", default="raise")
    parser.addini(
        "asyncguard_allow",
        "asyncguard allow rules, one a line: 'time.sleep' or 'time.sleep in mypkg.legacy'",
        type="linelist",
        default=[],
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "allow_blocking(*calls, reason=None): allow blocking calls on event-loop threads in "
        "this test (all calls, or only the given call keys, e.g. 'time.sleep')",
    )
    mode = config.getoption("asyncguard_mode") or config.getini("asyncguard_mode")
    if mode not in MODES:
        raise pytest.UsageError(
            f"asyncguard_mode = {mode!r} is not a valid mode; choose one of "
            f"{', '.join(map(repr, MODES))}"
        )
    rules = list(config.getini("asyncguard_allow"))
    try:
        _guard.install(mode=mode, allow=rules, log=False)
    except ValueError as exc:
        raise pytest.UsageError(f"asyncguard_allow: {exc}") from None
    session = _Session(mode, rules, bool(config.getoption("asyncguard_report")))
    _report.add_collector(session.collector)
    config.stash[_STASH_KEY] = session
    config.pluginmanager.register(session, "asyncguard-session")


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(_STASH_KEY, None)
    if session is None:
        return
    config.pluginmanager.unregister(session)
    _report.remove_collector(session.collector)
    _guard.uninstall()


def pytest_report_header(config: pytest.Config) -> str:
    session = config.stash[_STASH_KEY]
    rules = f", {len(session.rules)} allow rule(s)" if session.rules else ""
    return f"asyncguard: {__version__}, mode={session.mode}{rules}"


def _marker_allow(item: pytest.Item) -> allow_blocking | None:
    marker = item.get_closest_marker("allow_blocking")
    if marker is None:
        return None
    reason = marker.kwargs.get("reason")
    unknown = set(marker.kwargs) - {"reason"}
    if unknown:
        pytest.fail(
            f"@pytest.mark.allow_blocking takes call keys and reason=..., not "
            f"{', '.join(sorted(unknown))}",
            pytrace=False,
        )
    try:
        return allow_blocking(*marker.args, reason=reason)
    except ValueError as exc:
        error = f"@pytest.mark.allow_blocking: {exc}"
    pytest.fail(error, pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, object, object]:
    session = item.config.stash[_STASH_KEY]
    item.stash[_START_KEY] = len(session.collector.violations)
    allowed = None
    if item.get_closest_marker("allow_blocking") is not None:
        try:
            allowed = _marker_allow(item)
        except pytest.fail.Exception:
            allowed = None  # reported at setup
    with allowed if allowed is not None else contextlib.nullcontext():
        return (yield)


_START_KEY = pytest.StashKey[int]()
_PHASE_KEY = pytest.StashKey[int]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("allow_blocking") is not None:
        _marker_allow(item)  # a bad marker fails here, with its message


@pytest.fixture
def asyncguard(request: pytest.FixtureRequest) -> AsyncGuardFixture:
    """This test's blocking-call violations so far, and ``allow()`` for a block."""
    session = request.config.stash[_STASH_KEY]
    return AsyncGuardFixture(session, request.node.stash.get(_START_KEY, 0))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    session = item.config.stash.get(_STASH_KEY, None)
    if session is None:
        return report
    violations = session.collector.violations
    start = item.stash.get(_PHASE_KEY, item.stash.get(_START_KEY, len(violations)))
    new = violations[start:]
    item.stash[_PHASE_KEY] = len(violations)
    if not new:
        return report
    report.user_properties.append(
        (
            "asyncguard",
            [(v.call, f"{display_path(v.location[0])}:{v.location[1]}", v.message()) for v in new],
        )
    )
    if session.mode == "warn":
        try:
            for violation in new:
                filename, lineno, _ = violation.location
                warnings.warn_explicit(
                    AsyncGuardWarning(violation.message()), AsyncGuardWarning, filename, lineno
                )
        except AsyncGuardWarning as exc:  # filterwarnings = error: the test fails with it
            if report.outcome == "passed":
                report.outcome = "failed"
                report.longrepr = f"asyncguard (warning turned into an error): {exc}"
        return report
    if session.mode == "raise" and report.outcome != "skipped":
        lines = [
            f"asyncguard: {len(new)} blocking call(s) ran on an event-loop thread during "
            f"{report.when}:"
        ]
        lines += [f"  {i}. {v.message()}" for i, v in enumerate(new, 1)]
        lines.append(
            'Fix each call, or allow it: @pytest.mark.allow_blocking("<call key>", '
            "reason=...) or ini asyncguard_allow."
        )
        text = "\n".join(lines)
        if report.outcome == "passed":
            report.outcome = "failed"
            report.longrepr = text
        else:
            report.sections.append(("asyncguard", text))
    return report


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    session = config.stash.get(_STASH_KEY, None)
    if session is None or not session.report:
        return
    terminalreporter.section("asyncguard: blocking calls on event-loop threads")
    if not session.sites:
        terminalreporter.write_line("none")
        return
    for (call, where), count in session.sites.most_common():
        tests = sorted(session.tests[(call, where)])
        terminalreporter.write_line(f"{count:5d}  {call} at {where}  ({len(tests)} test(s))")
        for nodeid in tests[:5]:
            terminalreporter.write_line(f"         {nodeid}")
        if len(tests) > 5:
            terminalreporter.write_line(f"         … and {len(tests) - 5} more")
