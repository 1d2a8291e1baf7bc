"""The option table (``asyncguard._config``): one row per option, one validator per option.

Row by row, every entry point that can set the option — ``install()``'s keyword arguments,
the ``ASYNC_GUARD_*`` variable, Django's ``ASYNC_GUARD`` setting, the pytest ini key and flag
— rejects a bad value with a message naming that source, the value and the choices, and
accepts the same good forms.  And the README's lists of options are checked against the table.
"""

from __future__ import annotations

import ast
import re
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import asyncguard
from asyncguard import AsyncGuardMiddleware, _config, _env, pytest_plugin

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
FAMILIES = "choose from 'sleep', 'files', 'network'"


@dataclass(frozen=True)
class Case:
    """A bad value (Python, and as text where the option has a text source), what its error
    must say besides the source and the value, and good values with what they become."""

    bad: Any
    expect: str
    good: list[tuple[Any, Any]]
    bad_text: str | None = None
    good_text: list[tuple[str, Any]] = field(default_factory=list)
    text_expect: str | None = None  # what the error for ``bad_text`` says, if not ``expect``


DURATIONS = [(0.5, 0.5), ("500ms", 0.5), ("0.5s", 0.5), (2, 2.0)]
DURATION_TEXTS = [("0.5", 0.5), ("500ms", 0.5), ("0.5s", 0.5), (" 2 ", 2.0)]
SECONDS = "seconds >= 0, like 0.5, '500ms' or '0.5s'"

CASES: dict[str, Case] = {
    "mode": Case(
        "loud",
        "choose one of 'raise', 'warn'",
        [("warn", "warn"), ("off", "off")],
        "loud",
        [("warn", "warn"), (" off ", "off")],
    ),
    "allow": Case(
        ["time.slep"],
        "unknown call key in allow rule 'time.slep'; did you mean 'time.sleep'?",
        [(["time.sleep in legacy", "os.stat"], ("time.sleep in legacy", "os.stat"))],
        "time.slep",
        [("time.sleep in legacy, os.stat", ("time.sleep in legacy", "os.stat"))],
    ),
    "on_violation": Case([42], "42 is not callable", [(print, (print,)), (None, ())]),
    "min_duration": Case(-1, SECONDS, DURATIONS, "fast", DURATION_TEXTS),
    "exclude": Case(
        ["nets"],
        f"unknown hook family 'nets'; {FAMILIES}",
        [(["sync", "console"], ("console", "sync")), ("sleep", ("sleep",))],
        "nets",
        [("sync, console", ("console", "sync"))],
    ),
    "log": Case(
        "yes",
        "True or False",
        [(False, False)],
        "maybe",
        [("0", False), ("yes", True)],
        text_expect="1 or 0 (true/false, yes/no, on/off)",
    ),
    "debug_header": Case("on", "True, False, or None", [(True, True), (None, None)]),
    "stall_threshold": Case(
        -0.1,
        SECONDS + ", or None / 'off' for no watchdog",
        [*DURATIONS, (None, None), ("off", None), (0, None)],
        "soon",
        [*DURATION_TEXTS, ("off", None), ("0", None)],
        text_expect=SECONDS + ", or 'off' for no watchdog",
    ),
    "json": Case("", "a file path, or '-' for standard error", [("-", "-")], None, [("-", "-")]),
    "rate_limit": Case(-1, "a whole number >= 0", [(0, 0), (30, 30)], "-3", [("30", 30)]),
    "max_sites": Case(0, "a whole number >= 1", [(500, 500)], "0", [("500", 500)]),
    "summary_interval": Case("5m", SECONDS, DURATIONS, "5m", DURATION_TEXTS),
    "offload_threads": Case(0, "a whole number >= 1", [(64, 64)], "many", [("64", 64)]),
    "offload_routes": Case(
        {"time.sleep": "elsewhere"},
        "choose one of 'thread_sensitive', 'pool', 'inline'",
        [({"time.sleep": "inline"}, {"time.sleep": "inline"})],
    ),
}


def rows(attribute: str) -> list[Any]:
    return [
        pytest.param(option, id=option.name)
        for option in _config.TABLE
        if getattr(option, attribute)
    ]


def assert_names(error: BaseException, source: str, value: object, expect: str) -> None:
    text = str(error)
    assert text.startswith(f"{source} = {value!r} is not valid: "), text
    assert expect in text, text


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> object:
    for name in _config.ENV:
        monkeypatch.delenv(name, raising=False)
    yield
    asyncguard.uninstall()


def test_every_row_has_a_case() -> None:
    assert list(CASES) == [option.name for option in _config.TABLE]


def test_each_row_has_one_spelling_per_source() -> None:
    for option in _config.TABLE:
        if option.env is not None:
            assert option.env == "ASYNC_GUARD_" + option.name.upper()
        if option.django is not None:
            assert option.django == option.name.upper()
        if option.pytest is not None:
            assert option.pytest.ini == "asyncguard_" + option.name
            assert option.pytest.flag in (None, "--asyncguard-" + option.name.replace("_", "-"))
        assert option.doc and "\n" not in option.doc
        option.check(option.default)  # the default is valid


def test_the_defaults_are_the_guards() -> None:
    assert _config.defaults() == asyncguard.Guard().options()
    assert tuple(_config.defaults()) == asyncguard._guard.OPTIONS


# -- install() -----------------------------------------------------------------------------


@pytest.mark.parametrize("option", rows("install"))
def test_install_rejects_a_bad_value_naming_it(option: _config.Option) -> None:
    case = CASES[option.name]
    with pytest.raises(ValueError) as info:
        asyncguard.install(**{option.name: case.bad})
    assert_names(info.value, option.name, case.bad, case.expect)
    assert asyncguard._guard.current() is None


@pytest.mark.parametrize("option", rows("install"))
def test_install_accepts_the_good_forms(option: _config.Option) -> None:
    for value, expected in CASES[option.name].good:
        assert _config.from_kwargs({option.name: value})[option.name] == expected, value


def test_install_applies_duration_texts() -> None:
    guard = asyncguard.install(
        mode="warn", min_duration="5ms", stall_threshold="0.25s", summary_interval="500ms"
    )
    assert (guard.min_duration, guard.stall_threshold, guard.summary_interval) == (
        0.005,
        0.25,
        0.5,
    )
    assert asyncguard.install(**guard.options()).options() == guard.options()


def test_the_middleware_checks_debug_header() -> None:
    async def app(scope: object, receive: object, send: object) -> None:
        pass

    case = CASES["debug_header"]
    with pytest.raises(ValueError) as info:
        AsyncGuardMiddleware(app, debug_header=case.bad)
    assert_names(info.value, "debug_header", case.bad, case.expect)
    assert AsyncGuardMiddleware(app, debug_header=True).debug_header is True


def test_unknown_options_get_a_did_you_mean() -> None:
    with pytest.raises(ValueError, match=r"^unknown asyncguard option 'stall_treshold'; did you"):
        asyncguard.install(stall_treshold=0.1)
    with pytest.raises(ValueError, match=r"did you mean 'stall_threshold'\?"):
        asyncguard.install(stall_treshold=0.1)


def test_every_problem_is_in_the_error() -> None:
    with pytest.raises(_config.ConfigError) as info:
        asyncguard.install(mode="loud", rate_limit=-1)
    assert [problem.split(" = ")[0] for problem in info.value.problems] == ["mode", "rate_limit"]


# -- the environment -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "option",
    [row for row in rows("env") if CASES[row.values[0].name].bad_text is not None],
)  # (every non-empty text is a valid json path)
def test_the_env_var_rejects_a_bad_value_naming_it(option: _config.Option) -> None:
    case = CASES[option.name]
    assert option.env is not None and case.bad_text is not None
    with pytest.raises(ValueError) as info:
        _env.options_from_env({option.env: case.bad_text})
    assert_names(info.value, option.env, case.bad_text, case.text_expect or case.expect)


@pytest.mark.parametrize("option", rows("env"))
def test_the_env_var_accepts_the_good_forms(option: _config.Option) -> None:
    assert option.env is not None
    for text, expected in CASES[option.name].good_text:
        assert _env.options_from_env({option.env: text}) == {option.name: expected}, text
    assert _env.options_from_env({option.env: "  "}) == {}  # empty: unset


def test_unknown_env_vars_get_a_did_you_mean() -> None:
    with pytest.raises(ValueError, match=r"did you mean ASYNC_GUARD_RATE_LIMIT\?"):
        _env.options_from_env({"ASYNC_GUARD_RATELIMIT": "5"})


# -- Django's ASYNC_GUARD setting ------------------------------------------------------------


@pytest.fixture
def django_settings(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Django's settings as the app's conf module sees them (no Django project needed)."""
    pytest.importorskip("django", reason="Django is an optional extra")
    import django.conf

    fake = types.SimpleNamespace(DEBUG=True, ASYNC_GUARD={})
    monkeypatch.setattr(django.conf, "settings", fake)  # the conf module reads it when called
    return fake


@pytest.mark.parametrize("option", rows("django"))
def test_the_django_setting_rejects_a_bad_value_naming_it(
    option: _config.Option, django_settings: Any
) -> None:
    from asyncguard.django import conf

    case = CASES[option.name]
    django_settings.ASYNC_GUARD = {option.django: case.bad}
    (problem,) = conf.problems()
    assert_names(ValueError(problem), f"ASYNC_GUARD[{option.django!r}]", case.bad, case.expect)
    with pytest.raises(Exception, match=re.escape(problem)) as info:
        conf.load_options()
    assert type(info.value).__name__ == "ImproperlyConfigured"


@pytest.mark.parametrize("option", rows("django"))
def test_the_django_setting_accepts_the_good_forms(
    option: _config.Option, django_settings: Any
) -> None:
    from asyncguard.django import conf

    for value, expected in CASES[option.name].good:
        django_settings.ASYNC_GUARD = {option.django: value}
        assert conf.problems() == [], value
        options, header = conf.load_options()
        if option.name == "debug_header":  # None: on when DEBUG
            assert header == (django_settings.DEBUG if expected is None else expected)
        else:
            assert options[option.name] == expected, value


def test_django_mode_none_is_the_default(django_settings: Any) -> None:
    from asyncguard.django import conf

    django_settings.ASYNC_GUARD = {"MODE": None}
    assert conf.problems() == [] and conf.mode() == "raise"
    django_settings.DEBUG = False
    assert conf.load_options()[0]["mode"] == "off"


def test_unknown_setting_keys_get_a_did_you_mean(django_settings: Any) -> None:
    from asyncguard.django import conf

    django_settings.ASYNC_GUARD = {"STALL_TRESHOLD": 0.1, "offload_threads": 4}
    assert [problem.split(" (")[0] for problem in conf.problems()] == [
        "ASYNC_GUARD['STALL_TRESHOLD'] is not a setting; did you mean 'STALL_THRESHOLD'?",
        "ASYNC_GUARD['offload_threads'] is not a setting; did you mean 'OFFLOAD_THREADS'?",
    ]
    django_settings.ASYNC_GUARD = ["MODE"]
    assert conf.problems() == ["ASYNC_GUARD must be a dict like {'MODE': 'warn'}, got ['MODE']"]


# -- the pytest plugin's ini keys and flags ------------------------------------------------


class FakeConfig:
    """What the plugin reads of ``pytest.Config``: flags by dest, ini keys (with defaults)."""

    def __init__(self, flags: dict[str, object], ini: dict[str, object]) -> None:
        self.flags, self.ini = flags, ini

    def getoption(self, dest: str) -> object:
        return self.flags.get(dest)

    def getini(self, name: str) -> object:
        spec = _config.BY_NAME[name.removeprefix("asyncguard_")].pytest
        assert spec is not None
        return self.ini.get(name, spec.default)


def pytest_sources(option: _config.Option, value: object) -> list[tuple[str, FakeConfig]]:
    """``value`` given through the ini key, and through the flag where there is one."""
    spec = option.pytest
    assert spec is not None
    sources = [(spec.ini, FakeConfig({}, {spec.ini: value}))]
    if spec.flag is not None:
        sources.append((spec.flag, FakeConfig({spec.ini: value}, {})))
    return sources


@pytest.mark.parametrize("option", rows("pytest"))
def test_the_pytest_options_reject_a_bad_value_naming_it(option: _config.Option) -> None:
    case = CASES[option.name]
    assert option.pytest is not None
    listed = option.pytest.ini_type == "linelist"
    bad = case.bad if listed else case.bad_text
    expect = case.expect if listed else case.text_expect or case.expect
    for source, config in pytest_sources(option, bad):
        with pytest.raises(pytest.UsageError) as info:
            pytest_plugin._option(config, option.name)  # type: ignore[arg-type]
        assert_names(info.value, source, bad, expect)


@pytest.mark.parametrize("option", rows("pytest"))
def test_the_pytest_options_accept_the_good_forms(option: _config.Option) -> None:
    case = CASES[option.name]
    assert option.pytest is not None
    good = case.good if option.pytest.ini_type == "linelist" else case.good_text
    for value, expected in good:
        for source, config in pytest_sources(option, value):
            parsed = pytest_plugin._option(config, option.name)  # type: ignore[arg-type]
            assert parsed == expected, (source, value)


def test_pytest_has_no_offload_mode() -> None:
    for source, config in pytest_sources(_config.BY_NAME["mode"], "offload"):
        with pytest.raises(pytest.UsageError) as info:
            pytest_plugin._option(config, "mode")  # type: ignore[arg-type]
        assert str(info.value) == (
            f"{source} = 'offload' is not valid: choose one of 'raise', 'warn', 'off'"
        )


def test_pytest_defaults() -> None:
    config = FakeConfig({}, {})
    assert pytest_plugin._option(config, "mode") == "raise"  # type: ignore[arg-type]
    assert pytest_plugin._option(config, "allow") == ()  # type: ignore[arg-type]
    assert pytest_plugin._option(config, "stall_threshold") == 0.05  # type: ignore[arg-type]


# -- the README ----------------------------------------------------------------------------


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def test_the_readme_settings_block_lists_every_setting() -> None:
    (block,) = [
        block
        for block in re.findall(r"```python\n(.*?)```", section("Django"), re.S)
        if "ASYNC_GUARD = {" in block
    ]
    (assign,) = [
        node
        for node in ast.walk(ast.parse(block))
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and node.targets[0].id == "ASYNC_GUARD"
    ]
    settings = ast.literal_eval(assign.value)
    assert list(settings) == list(_config.SETTINGS)  # every key, in the table's order
    _config.from_settings(settings)  # every example is a valid value


def test_the_readme_env_table_lists_every_variable() -> None:
    rows = re.findall(r"^\| `(ASYNC_GUARD_\w+)` \| (.*) \|$", section("Staging"), re.M)
    assert sorted(name for name, _ in rows) == sorted(_config.ENV)
    assert len(rows) == len(_config.ENV)
    for name, value in rows:  # every example in the value column is accepted
        for example in re.findall(r"`([^`]+)`", value):
            _config.parse_text(_config.ENV[name], example, name)


def test_the_readme_install_table_lists_every_option() -> None:
    start = README.index("Options of `install()`")
    table = README[start : README.index("\n\n", README.index("| option |", start))]
    names = re.findall(r"^\| `(\w+)` \|", table, re.M)
    assert names == list(_config.INSTALL_OPTIONS)


def test_the_option_table_imports_no_integration() -> None:
    """_config sits below the integrations: no Django, no pytest, no middleware, no app."""
    tree = ast.parse((ROOT / "src" / "asyncguard" / "_config.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add("." * node.level + (node.module or ""))
            imported.update(alias.name for alias in node.names if node.level)
    banned = {"django", "pytest", "middleware", "pytest_plugin", "_guard", "_install", "_env"}
    assert not {name.lstrip(".").split(".")[0] for name in imported} & banned, imported
