"""The option table: every configuration option, one row each, and the readers built on it.

A row (:class:`Option`) holds an option's name, default, validator, the spelling of each source
that can set it (the ``ASYNC_GUARD_*`` environment variable, the key of Django's
``ASYNC_GUARD`` setting, the pytest ini key and command-line flag) and a one-line doc.
``install()`` (:func:`from_kwargs`), the environment (:func:`from_env`), Django's settings
(:func:`from_settings`) and the pytest plugin (:func:`parse_pytest`) all validate through the
row, so a value means the same thing wherever it is written, and every bad value gets the same
message, naming where it came from::

    ASYNC_GUARD_MODE = 'loud' is not valid: choose one of 'raise', 'warn', 'offload', 'off'

Adding an option is one row here, plus the code that uses it (``Guard.configure``); the
README's Django settings block and environment table are checked against this table
(tests/test_config.py).

This module sits below the integrations: it imports neither Django nor pytest.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from . import _offload, _sites, _watchdog, _wording
from ._allow import AllowRule, set_known_keys, validate_call_pattern
from ._hooks import catalog

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)

# allow rules (here, in markers, in allow_blocking()) name the hook families' call keys
set_known_keys(catalog.known_keys)

MODES = ("raise", "warn", "offload", "off")
ROUTES = ("thread_sensitive", "pool", "inline")
DEFAULT_RATE_LIMIT = 60  # log lines a minute
DEFAULT_SUMMARY_INTERVAL = 300.0  # seconds
PYTEST_MODES = ("raise", "warn", "off")  # offload needs a driven coroutine: not for tests
PYTEST_STALL_THRESHOLD = 0.05  # seconds: lower than staging's 0.1, tests run small inputs
ENV_PREFIX = "ASYNC_GUARD_"
SETTING = "ASYNC_GUARD"  # Django's setting


class ConfigError(ValueError):
    """Invalid configuration: ``problems`` holds one sentence per problem, each naming the
    source (``mode``, ``ASYNC_GUARD_MODE``, ``ASYNC_GUARD['MODE']``, ``--asyncguard-mode``,
    ``asyncguard_mode``), the value and what is accepted; ``str()`` is all of them."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class OptionValueError(ValueError):
    """Raised by a validator: what is wrong, when the row's ``expects`` does not say it."""

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or "")
        self.detail = detail


listed = _wording.listed
message = _wording.bad_value


# -- validators: a Python value (keyword argument, Django setting, or what a text parser made
# of a text) -> the value the guard applies; OptionValueError otherwise ----------------------


def _mode(value: object) -> str:
    if isinstance(value, str) and value in MODES:
        return value
    raise OptionValueError


def _strings(value: object) -> tuple[object, ...]:
    """One string, or an iterable of them (their type is checked by the caller)."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Iterable) and not isinstance(value, (bytes, Mapping)):
        return tuple(value)
    raise OptionValueError


def _allow(value: object) -> tuple[str, ...]:
    rules = _strings(value)
    for rule in rules:
        try:
            AllowRule.parse(rule)  # type: ignore[arg-type]  # it names a non-string itself
        except ValueError as exc:
            raise OptionValueError(str(exc)) from None
    return rules  # type: ignore[return-value]  # each one parsed: strings


def _callbacks(value: object) -> tuple[Callable[..., Any], ...]:
    if value is None:
        return ()
    if callable(value):
        return (value,)
    if not isinstance(value, Iterable) or isinstance(value, (str, bytes)):
        raise OptionValueError
    callbacks = tuple(value)
    for callback in callbacks:
        if not callable(callback):
            raise OptionValueError(
                f"{callback!r} is not callable; give a callable or a list of them"
            )
    return callbacks


def _families(value: object) -> tuple[str, ...]:
    """Hook families (``"clients"``) or one library of a family (``"clients.redis"``)."""
    names: list[str] = []
    choices = catalog.exclude_choices()
    for name in _strings(value):
        if not isinstance(name, str) or name not in choices:
            raise OptionValueError(
                f"unknown hook family {name!r}; choose from {listed(catalog.family_names())}, "
                f"or one library: {listed(catalog.library_names())}"
            )
        names.append(name)
    return tuple(sorted(set(names)))


def _seconds(value: object) -> float:
    """A duration: a number of seconds, or a text like ``"0.5"``, ``"500ms"``, ``"0.5s"``."""
    if isinstance(value, str):
        text = value.strip().lower()
        scale = 1.0
        if text.endswith("ms"):
            text, scale = text[:-2], 0.001
        elif text.endswith("s"):
            text = text[:-1]
        try:
            seconds = float(text) * scale
        except ValueError:
            raise OptionValueError from None
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise OptionValueError
    else:
        seconds = float(value)
    if seconds < 0 or math.isnan(seconds):
        raise OptionValueError
    return seconds


def _threshold(value: object) -> float | None:
    """A duration, or off: ``None``, ``0``, ``"off"``, ``"none"``."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("off", "none")):
        return None
    seconds = _seconds(value)
    return seconds if seconds > 0 else None


def _whole(minimum: int) -> Callable[[object], int]:
    def check(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise OptionValueError
        return value

    return check


def _flag(value: object) -> bool:
    if isinstance(value, bool):
        return value
    raise OptionValueError


def _flag_or_none(value: object) -> bool | None:
    return None if value is None else _flag(value)


def _path(value: object) -> str | None:
    if value is None or (isinstance(value, str) and value):
        return value
    raise OptionValueError


def _routes(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise OptionValueError
    routes = dict(value)
    for pattern, route in routes.items():
        if route not in ROUTES:
            raise OptionValueError(
                f"the route for {pattern!r} is {route!r}; choose one of {listed(ROUTES)}"
            )
        try:
            validate_call_pattern(pattern, what="call key in offload_routes")
        except ValueError as exc:
            raise OptionValueError(str(exc)) from None
    return routes


# -- text parsers: the text of an environment variable, ini key or flag -> a Python value ---


def _items(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _int(text: str) -> int:
    return int(text.strip())


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


# -- the table ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pytest:
    """How the pytest plugin exposes an option (its own default: a test suite is not staging)."""

    ini: str  # ini key, also the command-line option's dest
    ini_help: str
    default: str | list[str]
    ini_type: Literal["string", "linelist"] = "string"  # linelist: one item a line
    flag: str | None = None
    flag_help: str = ""
    metavar: str | None = None
    choices: tuple[str, ...] | None = None  # narrower than the option's own


@dataclass(frozen=True)
class Option:
    name: str  # the keyword argument of install()
    default: Any  # before validation (the validator makes the value applied)
    check: Callable[[Any], Any]  # Python value -> applied value; raises OptionValueError
    expects: str  # what a valid value is, for messages
    doc: str  # one line
    env: str | None = None  # ASYNC_GUARD_<NAME>, or None: not from the environment
    django: str | None = None  # key of the ASYNC_GUARD setting, or None
    text: Callable[[str], Any] | None = None  # text form (env, ini, flag) -> Python value
    text_expects: str | None = None  # what a valid text is, when it differs from ``expects``
    pytest: Pytest | None = None
    install: bool = True  # False: an option of the middleware and Django only


_SECONDS = "like 0.5, '500ms' or '0.5s'"

TABLE: tuple[Option, ...] = (
    Option(
        "mode",
        "raise",
        _mode,
        f"choose one of {listed(MODES)}",
        "raise: error at the call site; warn: run, time and report; offload: run it in a "
        "worker thread; off: report nothing",
        env="ASYNC_GUARD_MODE",
        django="MODE",
        text=str.strip,
        pytest=Pytest(
            "asyncguard_mode",
            "asyncguard mode: raise, warn or off",
            "raise",
            flag="--asyncguard-mode",
            flag_help="raise (default): fail tests with blocking calls on a loop thread; warn: "
            "report them as warnings; off: no checks.",
            metavar="{raise,warn,off}",
            choices=PYTEST_MODES,
        ),
    ),
    Option(
        "allow",
        (),
        _allow,
        "allow rules like 'time.sleep' or 'time.sleep in myapp.legacy'",
        "allow rules: 'KEY' or 'KEY in module[.function]'",
        env="ASYNC_GUARD_ALLOW",
        django="ALLOW",
        text=_items,
        text_expects="comma-separated allow rules like 'time.sleep in myapp.legacy, os.stat'",
        pytest=Pytest(
            "asyncguard_allow",
            "asyncguard allow rules, one a line: 'time.sleep' or 'time.sleep in mypkg.legacy'",
            [],
            ini_type="linelist",
        ),
    ),
    Option(
        "on_violation",
        None,
        _callbacks,
        "a callable or a list of callables",
        "callables receiving each Violation",
    ),
    Option(
        "min_duration",
        0.0,
        _seconds,
        f"seconds >= 0, {_SECONDS}",
        "warn: report only calls that blocked at least this long (all are counted)",
        env="ASYNC_GUARD_MIN_DURATION",
        django="MIN_DURATION",
    ),
    Option(
        "exclude",
        (),
        _families,
        f"hook families or client libraries; choose from {listed(catalog.exclude_choices())}",
        "hook families (or one client library, clients.<library>) to leave alone",
        env="ASYNC_GUARD_EXCLUDE",
        django="EXCLUDE",
        text=_items,
    ),
    Option(
        "log",
        True,
        _flag,
        "True or False",
        "False: the asyncguard logger stays quiet",
        env="ASYNC_GUARD_LOG",
        django="LOG",
        text=_bool,
        text_expects="1 or 0 (true/false, yes/no, on/off)",
    ),
    Option(
        "debug_header",
        None,
        _flag_or_none,
        "True, False, or None (on when DEBUG)",
        "the X-AsyncGuard-Blocking response header; None: on when DEBUG",
        django="DEBUG_HEADER",
        install=False,
    ),
    Option(
        "stall_threshold",
        _watchdog.DEFAULT_THRESHOLD,
        _threshold,
        f"seconds >= 0, {_SECONDS}, or None / 'off' for no watchdog",
        "the stall watchdog: report a loop blocked this long by anything; None: off",
        text_expects=f"seconds >= 0, {_SECONDS}, or 'off' for no watchdog",
        env="ASYNC_GUARD_STALL_THRESHOLD",
        django="STALL_THRESHOLD",
        pytest=Pytest(
            "asyncguard_stall_threshold",
            "asyncguard stall watchdog threshold in seconds, or 'off'",
            str(PYTEST_STALL_THRESHOLD),
            flag="--asyncguard-stall-threshold",
            flag_help="report (and fail) a test whose event loop was blocked this long by code "
            "no hook knows (CPU work, C extensions): seconds like 0.05 or 50ms; 'off' disables "
            f"the watchdog. Default {PYTEST_STALL_THRESHOLD}.",
            metavar="SECONDS",
        ),
    ),
    Option(
        "json",
        None,
        _path,
        "a file path, or '-' for standard error",
        "a JSON-lines file for log aggregators ('-': stderr)",
        env="ASYNC_GUARD_JSON",
        django="JSON",
        text=str.strip,
    ),
    Option(
        "rate_limit",
        DEFAULT_RATE_LIMIT,
        _whole(0),
        "a whole number >= 0 of log lines a minute (0: no limit)",
        "log lines a minute; 0: no limit",
        env="ASYNC_GUARD_RATE_LIMIT",
        django="RATE_LIMIT",
        text=_int,
    ),
    Option(
        "max_sites",
        _sites.DEFAULT_MAX_SITES,
        _whole(1),
        "a whole number >= 1 of call sites",
        "call sites tracked; calls at further sites are only counted",
        env="ASYNC_GUARD_MAX_SITES",
        django="MAX_SITES",
        text=_int,
    ),
    Option(
        "summary_interval",
        DEFAULT_SUMMARY_INTERVAL,
        _seconds,
        f"seconds >= 0, {_SECONDS} (0: only at exit)",
        "seconds between summaries of the top offenders; 0: only at exit",
        env="ASYNC_GUARD_SUMMARY_INTERVAL",
        django="SUMMARY_INTERVAL",
    ),
    Option(
        "offload_threads",
        _offload.DEFAULT_THREADS,
        _whole(1),
        "a whole number >= 1 of worker threads",
        "offload mode: worker threads for calls that wait",
        env="ASYNC_GUARD_OFFLOAD_THREADS",
        django="OFFLOAD_THREADS",
        text=_int,
    ),
    Option(
        "offload_routes",
        None,
        _routes,
        f"a dict {{'call key pattern': route}}; routes: {listed(ROUTES)}",
        "offload mode: {'call key pattern': route}, before the default routes",
        django="OFFLOAD_ROUTES",
    ),
)

BY_NAME: dict[str, Option] = {option.name: option for option in TABLE}
INSTALL_OPTIONS: tuple[str, ...] = tuple(option.name for option in TABLE if option.install)
ENV: dict[str, Option] = {option.env: option for option in TABLE if option.env}
SETTINGS: dict[str, Option] = {option.django: option for option in TABLE if option.django}
PYTEST: dict[str, Pytest] = {option.name: option.pytest for option in TABLE if option.pytest}


# -- reading a source -----------------------------------------------------------------------


def parse(option: Option, value: object, source: str) -> Any:
    """``value`` (a Python value from ``source``) validated by its row."""
    try:
        return option.check(value)
    except OptionValueError as exc:
        raise ConfigError([message(source, value, exc.detail or option.expects)]) from None


def parse_text(option: Option, text: str, source: str) -> Any:
    """``text`` (an environment variable's, an ini key's or a flag's) validated by its row."""
    try:
        return option.check(option.text(text) if option.text is not None else text)
    except OptionValueError as exc:
        expected = exc.detail or option.text_expects or option.expects
    except ValueError:  # the text parser's
        expected = option.text_expects or option.expects
    raise ConfigError([message(source, text, expected)])


def parse_pytest(option: Option, value: object, source: str) -> Any:
    """A pytest ini value or flag (text, or a list for a ``linelist`` ini key), validated by
    its row and the plugin's narrower choices."""
    choices = option.pytest.choices if option.pytest is not None else None
    try:
        if isinstance(value, str):
            parsed = parse_text(option, value, source)
        else:
            parsed = parse(option, value, source)
    except ConfigError:
        if choices is None:
            raise
        parsed = None  # the message names the plugin's choices, not the option's
    if choices is not None and parsed not in choices:
        raise ConfigError([message(source, value, f"choose one of {listed(choices)}")])
    return parsed


def defaults() -> dict[str, Any]:
    """Every install option at its default."""
    return {name: BY_NAME[name].check(BY_NAME[name].default) for name in INSTALL_OPTIONS}


def _did_you_mean(name: str, known: Iterable[str], *, quoted: bool = True) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    if not close:
        return ""
    return f"; did you mean {close[0]!r}?" if quoted else f"; did you mean {close[0]}?"


def from_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Every install option: the keyword arguments given, validated, and the defaults."""
    problems: list[str] = []
    options = defaults()
    for name, value in kwargs.items():
        if name not in options:
            hint = _did_you_mean(name, INSTALL_OPTIONS)
            problems.append(
                f"unknown asyncguard option {name!r}{hint} "
                f"(valid options are {listed(INSTALL_OPTIONS)})"
            )
            continue
        try:
            options[name] = parse(BY_NAME[name], value, name)
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return options


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """``ASYNC_GUARD_*`` variables that are not ours (a typo would silently do nothing)."""
    return sorted(name for name in environ if name.startswith(ENV_PREFIX) and name not in ENV)


def from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """The options the ``ASYNC_GUARD_*`` variables set (empty ones are unset), validated;
    unknown ``ASYNC_GUARD_*`` names are errors."""
    problems = [
        f"unknown environment variable {name}{_did_you_mean(name, ENV, quoted=False)} "
        f"(asyncguard reads {', '.join(ENV)})"
        for name in unknown_variables(environ)
    ]
    options: dict[str, Any] = {}
    for variable, option in ENV.items():
        text = environ.get(variable)
        if text is None or not text.strip():
            continue
        try:
            options[option.name] = parse_text(option, text, variable)
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return options


def setting_source(key: object) -> str:
    """How a key of Django's setting is named in messages: ``ASYNC_GUARD['MODE']``."""
    return f"{SETTING}[{key!r}]"


def from_settings(raw: object) -> dict[str, Any]:
    """The options Django's ``ASYNC_GUARD`` setting (a dict) sets, validated (including
    ``debug_header``, which is not an install option); every problem is in the error."""
    if not isinstance(raw, Mapping):
        raise ConfigError([f"{SETTING} must be a dict like {{'MODE': 'warn'}}, got {raw!r}"])
    problems: list[str] = []
    options: dict[str, Any] = {}
    for key, value in raw.items():
        option = SETTINGS.get(key)
        if option is None:
            hint = _did_you_mean(str(key).upper(), SETTINGS)
            problems.append(
                f"{setting_source(key)} is not a setting{hint} (valid keys are "
                f"{', '.join(SETTINGS)})"
            )
            continue
        try:
            options[option.name] = parse(option, value, setting_source(key))
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return options
