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

import os
import warnings
from collections import Counter
from collections.abc import Generator
from typing import Any, cast

import pytest

from . import __version__, _config, _guard, _install, _report, _watchdog, _wording
from ._allow import AllowRule, allow_blocking, begin_usage, unused
from ._frames import display_path
from ._violation import Violation

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)

MODES = _config.PYTEST_MODES  # offload needs a driven coroutine: not a test-suite mode
DEFAULT_STALL_THRESHOLD = _config.PYTEST_STALL_THRESHOLD
_STASH_KEY = pytest.StashKey["_Session"]()


class AsyncGuardWarning(pytest.PytestWarning):
    """A blocking call on an event-loop thread, reported in ``--asyncguard-mode=warn``."""


class _Session:
    def __init__(
        self, mode: str, rules: list[str], report: bool, stall_threshold: float | None
    ) -> None:
        self.mode = mode
        self.stall_threshold = stall_threshold
        self.rules = rules
        self.report = report
        self.collector = _report.Collector()
        self.usage_epoch = 0  # the allow rules' usage is counted from here (_allow)
        self.sites: Counter[tuple[str, str]] = Counter()  # (call, where) -> count
        self.tests: dict[tuple[str, str], set[str]] = {}

    def apply(self, extra_rules: tuple[str, ...] = ()) -> None:
        """(Re)assert the plugin's configuration, plus a test's marker rules.

        Called before every test: the guard's mode and rules are the plugin's for the whole
        session even when the code under test reconfigured it (``AsyncGuardMiddleware(app)``
        installs the guard when a test module imports the project's ``asgi.py``, with mode
        ``off`` when Django's ``DEBUG`` is false; a test may call ``install()``).

        A marker's keys are allow *rules* for the test's duration rather than an
        ``allow_blocking()`` context: rules hold on every thread and task (a ``live_server``
        thread, anyio's long-lived runner task, an ``IsolatedAsyncioTestCase`` context copied
        when the case was collected).  Other options somebody set (``on_violation``,
        ``exclude``, ``min_duration``) are kept.
        """
        guard = _guard.current()
        options = guard.options() if guard is not None and guard.installed else {}
        options.update(
            mode=self.mode,
            allow=[*self.rules, *extra_rules],
            log=False,
            stall_threshold=self.stall_threshold,
            summary_interval=0,
        )
        _install.install(**options)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Count sites from the reports (under xdist the controller gets them this way)."""
        for name, value in report.user_properties:
            if name != "asyncguard":
                continue
            for call, where, count, _ in cast("list[tuple[str, str, int, str]]", value):
                site = (call, where)
                self.sites[site] += count
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
    # the option table's rows with a pytest part: their flags and ini keys
    for spec in _config.PYTEST.values():
        if spec.flag is not None:
            group.addoption(
                spec.flag,
                dest=spec.ini,
                default=None,
                metavar=spec.metavar,
                help=f"{spec.flag_help} Overrides ini {spec.ini}.",
            )
    group.addoption(
        "--asyncguard-report",
        action="store_true",
        default=False,
        help="at the end, list blocking call sites by count and by test",
    )
    for spec in _config.PYTEST.values():
        parser.addini(spec.ini, spec.ini_help, type=spec.ini_type, default=spec.default)


def _option(config: pytest.Config, name: str) -> Any:
    """An option of the option table from the command line, else its ``ASYNC_GUARD_*``
    environment variable, else the ini file, validated by its row (``pytest.UsageError``
    naming the flag, variable or ini key, the value and the choices)."""
    spec = _config.PYTEST[name]
    row = _config.BY_NAME[name]
    raw: object = config.getoption(spec.ini) if spec.flag is not None else None
    source = spec.flag or spec.ini
    if (raw is None or raw == "") and row.env and os.environ.get(row.env, "").strip():
        raw, source = os.environ[row.env], row.env
    if raw is None or raw == "":
        raw, source = config.getini(spec.ini), spec.ini
    try:
        return _config.parse_pytest(_config.BY_NAME[name], raw, source)
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "allow_blocking(*rules, reason=None): allow blocking calls on event-loop threads in "
        "this test (all calls, or the given call keys or allow rules, e.g. 'time.sleep' or "
        "'time.sleep in myapp.legacy')",
    )
    mode = _option(config, "mode")
    rules = list(_option(config, "allow"))
    threshold = _option(config, "stall_threshold")
    try:
        _install.install(
            mode=mode, allow=rules, log=False, stall_threshold=threshold, summary_interval=0
        )
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    epoch = begin_usage()  # the ini rules are judged over this session's tests
    session = _Session(mode, rules, bool(config.getoption("asyncguard_report")), threshold)
    session.usage_epoch = epoch
    _report.add_collector(session.collector)
    config.stash[_STASH_KEY] = session
    config.pluginmanager.register(session, "asyncguard-session")


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(_STASH_KEY, None)
    if session is None:
        return
    config.pluginmanager.unregister(session)
    _report.remove_collector(session.collector)
    _install.uninstall()


def pytest_report_header(config: pytest.Config) -> str:
    session = config.stash[_STASH_KEY]
    rules = f", {len(session.rules)} allow rule(s)" if session.rules else ""
    stall = session.stall_threshold
    if session.mode == "off":
        watchdog = ""
    elif stall is None:
        watchdog = ", watchdog off"
    else:
        watchdog = f", stall threshold {stall * 1000:g} ms"
    return f"asyncguard: {__version__}, mode={session.mode}{watchdog}{rules}"


def _marker_rules(item: pytest.Item) -> tuple[str, ...]:
    """The allow rules of the test's ``allow_blocking`` marker(s): ``("*",)`` for all calls.

    Raises ``pytest.fail.Exception`` naming the problem (an unknown call key, with the close
    matches; an unknown keyword argument)."""
    rules: list[str] = []
    for marker in item.iter_markers("allow_blocking"):
        unknown = set(marker.kwargs) - {"reason"}
        if unknown:
            pytest.fail(
                f"@pytest.mark.allow_blocking takes allow rules and reason=..., not "
                f"{', '.join(sorted(unknown))}; {_wording.MARKER_FORMS}",
                pytrace=False,
            )
        reason = marker.kwargs.get("reason")
        if reason is not None and not isinstance(reason, str):
            pytest.fail(
                f"@pytest.mark.allow_blocking: reason must be a string, got {reason!r}",
                pytrace=False,
            )
        if not marker.args:
            return ("*",)
        try:
            for arg in marker.args:  # the forms of allow rules; unknown keys get a did-you-mean
                AllowRule.parse(arg)
        except ValueError as exc:
            error = f"@pytest.mark.allow_blocking: {exc}; {_wording.MARKER_FORMS}"
        else:
            rules.extend(marker.args)
            continue
        pytest.fail(error, pytrace=False)
    return tuple(rules)


_START_KEY = pytest.StashKey[int]()
_PHASE_KEY = pytest.StashKey[int]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, object, object]:
    session = item.config.stash[_STASH_KEY]
    item.stash[_START_KEY] = len(session.collector.violations)
    try:
        rules = _marker_rules(item)
    except pytest.fail.Exception:
        rules = ()  # reported as the test's setup error by pytest_runtest_setup
    session.apply(rules)
    try:
        return (yield)
    finally:
        if rules:
            session.apply()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _marker_rules(item)  # a bad marker fails the test here, with its message


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
    watchdog = _watchdog.current()
    if watchdog is not None:
        watchdog.flush()  # a stall whose heartbeat already came back belongs to this phase
    violations = session.collector.violations
    start = item.stash.get(_PHASE_KEY, item.stash.get(_START_KEY, len(violations)))
    new = violations[start:]
    item.stash[_PHASE_KEY] = len(violations)
    if not new:
        return report
    groups = _grouped(new)
    report.user_properties.append(
        (
            "asyncguard",
            [
                (v.call, f"{display_path(v.location[0])}:{v.location[1]}", count, v.message())
                for v, count in groups
            ],
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
        text = _failure_text(report.when, len(new), groups)
        if report.outcome == "passed":
            report.outcome = "failed"
            report.longrepr = text
        else:
            report.sections.append(("asyncguard", text))
    return report


def _grouped(violations: list[Violation]) -> list[tuple[Violation, int]]:
    """The violations by call and location, first seen first, with how often each ran."""
    groups: dict[tuple[str, tuple[str, int, str]], list[Violation]] = {}
    for violation in violations:
        groups.setdefault((violation.call, violation.location), []).append(violation)
    return [(group[0], len(group)) for group in groups.values()]


def _failure_text(when: str | None, total: int, groups: list[tuple[Violation, int]]) -> str:
    lines = [f"{v.message()}{f' [{n} times]' if n > 1 else ''}" for v, n in groups]
    return _wording.test_failure(when, total, lines, (v.call for v, _ in groups))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    session = config.stash.get(_STASH_KEY, None)
    if session is None:
        return
    stale = []
    if session.mode != "off":
        stale = unused(map(AllowRule.parse, session.rules), session.usage_epoch)
    if stale:  # ini asyncguard_allow rules no test needed
        text = _wording.stale_rules([rule.source for rule in stale])
        terminalreporter.write_line(f"asyncguard: {text}")
    if not session.report:
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
