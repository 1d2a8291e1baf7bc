"""The Django app: ASYNC_GUARD settings, the ASYNC_GUARD_MODE override, system checks, and the
middleware reading the settings.  Each case runs Django for real in a subprocess with its own
settings module, as `manage.py` would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("django", reason="Django is an optional extra")

ROOT = Path(__file__).resolve().parent.parent


def run_django(
    tmp_path: Path, settings: str, code: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "agsettings.py").write_text(
        textwrap.dedent(
            """
            SECRET_KEY = "test"
            INSTALLED_APPS = ["django.contrib.contenttypes", "asyncguard.django"]
            DATABASES = {}
            USE_TZ = True
            ROOT_URLCONF = "agsettings"
            urlpatterns = []
            """
        )
        + textwrap.dedent(settings)
    )
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNC_GUARD")}
    full_env.update(
        DJANGO_SETTINGS_MODULE="agsettings",
        PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT / "src")]),
        **(env or {}),
    )
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=tmp_path,
        timeout=60,
    )


CHECK = "import django, sys; from django.core.management import call_command; django.setup(); "


def guard_state(
    tmp_path: Path, settings: str, env: dict[str, str] | None = None
) -> dict[str, object]:
    out = run_django(
        tmp_path,
        settings,
        """
        import json, django
        django.setup()
        import asyncguard
        from asyncguard import AsyncGuardMiddleware
        installed = asyncguard._guard.current()
        async def app(scope, receive, send): pass
        mw = AsyncGuardMiddleware(app)
        print(json.dumps({
            "after_setup": installed.mode if installed else None,
            "mode": mw.guard.mode,
            "rules": [r.source for r in mw.guard.rules],
            "min_duration": mw.guard.min_duration,
            "header": mw.debug_header,
        }))
        """,
        env,
    )
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def test_defaults_raise_under_debug(tmp_path: Path) -> None:
    state = guard_state(tmp_path, "DEBUG = True\n")
    assert state == {
        "after_setup": "raise",
        "mode": "raise",
        "rules": [],
        "min_duration": 0.0,
        "header": True,
    }


def test_defaults_off_without_debug(tmp_path: Path) -> None:
    state = guard_state(tmp_path, "DEBUG = False\n")
    assert state["after_setup"] is None  # not even installed by the app
    assert state["mode"] == "off"
    assert state["header"] is False


def test_settings_reach_the_middleware(tmp_path: Path) -> None:
    state = guard_state(
        tmp_path,
        """
        DEBUG = False
        ASYNC_GUARD = {"MODE": "warn", "ALLOW": ["time.sleep in legacy"], "MIN_DURATION": "50ms",
                       "DEBUG_HEADER": True}
        """,
    )
    assert state == {
        "after_setup": "warn",
        "mode": "warn",
        "rules": ["time.sleep in legacy"],
        "min_duration": 0.05,
        "header": True,
    }


def test_staging_settings_and_environment(tmp_path: Path) -> None:
    """The staging keys reach the guard; each ASYNC_GUARD_* variable overrides its key."""
    out = run_django(
        tmp_path,
        f"""
        DEBUG = False
        ASYNC_GUARD = {{"MODE": "warn", "STALL_THRESHOLD": 0.2, "RATE_LIMIT": 10,
                       "MAX_SITES": 50, "SUMMARY_INTERVAL": 30,
                       "JSON": {str(tmp_path / "settings.jsonl")!r}}}
        """,
        """
        import json, django
        django.setup()
        from asyncguard import AsyncGuardMiddleware
        async def app(scope, receive, send): pass
        options = AsyncGuardMiddleware(app).guard.options()
        print(json.dumps({k: options[k] for k in ("stall_threshold", "rate_limit",
              "max_sites", "summary_interval", "json")}))
        """,
        {"ASYNC_GUARD_RATE_LIMIT": "0", "ASYNC_GUARD_STALL_THRESHOLD": "off"},
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) == {
        "stall_threshold": None,
        "rate_limit": 0,
        "max_sites": 50,
        "summary_interval": 30.0,
        "json": str(tmp_path / "settings.jsonl"),
    }


def test_offload_mode_from_settings(tmp_path: Path) -> None:
    pytest.importorskip("greenlet")
    state = guard_state(tmp_path, 'DEBUG = True\nASYNC_GUARD = {"MODE": "offload"}\n')
    assert state["after_setup"] == state["mode"] == "offload"


def test_environment_overrides_the_mode(tmp_path: Path) -> None:
    state = guard_state(
        tmp_path, 'DEBUG = True\nASYNC_GUARD = {"MODE": "raise"}\n', {"ASYNC_GUARD_MODE": "warn"}
    )
    assert state["mode"] == "warn"


@pytest.mark.parametrize(
    ("settings", "env", "message"),
    [
        (
            'ASYNC_GUARD = {"MODE": "rasie"}',
            {},
            "ASYNC_GUARD['MODE'] = 'rasie' is not valid: "
            "choose one of 'raise', 'warn', 'offload', 'off'",
        ),
        ("", {"ASYNC_GUARD_MODE": "loud"}, "ASYNC_GUARD_MODE = 'loud' is not valid: choose"),
        (
            'ASYNC_GUARD = {"MOOD": "warn"}',
            {},
            "ASYNC_GUARD['MOOD'] is not a setting; did you mean 'MODE'? (valid keys are MODE, ",
        ),
        ('ASYNC_GUARD = {"ALLOW": ["time.slep"]}', {}, "did you mean 'time.sleep'"),
        (
            'ASYNC_GUARD = {"EXCLUDE": ["nets"]}',
            {},
            "ASYNC_GUARD['EXCLUDE'] = ['nets'] is not valid: unknown hook family 'nets'",
        ),
        (
            'ASYNC_GUARD = {"MIN_DURATION": -1}',
            {},
            "ASYNC_GUARD['MIN_DURATION'] = -1 is not valid: seconds >= 0",
        ),
        (
            'ASYNC_GUARD = {"STALL_THRESHOLD": "soon"}',
            {},
            "ASYNC_GUARD['STALL_THRESHOLD'] = 'soon' is not valid: seconds >= 0",
        ),
        (
            'ASYNC_GUARD = {"MAX_SITES": 0}',
            {},
            "ASYNC_GUARD['MAX_SITES'] = 0 is not valid: a whole number >= 1",
        ),
        ('ASYNC_GUARD = {"JSON": 3}', {}, "ASYNC_GUARD['JSON'] = 3 is not valid: a file path"),
        ("", {"ASYNC_GUARD_RATE_LIMIT": "x"}, "ASYNC_GUARD_RATE_LIMIT = 'x' is not valid"),
        (
            'ASYNC_GUARD = {"MODE": "warn", "JSON": "/no-such-dir/guard.jsonl"}',
            {},
            "ASYNC_GUARD['JSON']: cannot open the asyncguard JSON-lines file "
            "'/no-such-dir/guard.jsonl': No such file or directory",
        ),
        (
            'ASYNC_GUARD = {"MODE": "warn"}',
            {"ASYNC_GUARD_JSON": "/no-such-dir/env.jsonl"},
            "ASYNC_GUARD_JSON: cannot open the asyncguard JSON-lines file '/no-such-dir/env.jsonl'",
        ),
    ],
)
def test_bad_settings(tmp_path: Path, settings: str, env: dict[str, str], message: str) -> None:
    """Bad settings stop Django at setup -- ``manage.py check``, a server process (which runs
    no system checks) and the middleware alike -- naming the value and the choices."""
    setup = run_django(
        tmp_path, "DEBUG = True\n" + settings + "\n", "import django; django.setup()", env
    )
    assert setup.returncode != 0
    assert "django.core.exceptions.ImproperlyConfigured: " in setup.stderr, setup.stderr
    assert message in setup.stderr and setup.stderr.count("Traceback") == 1, setup.stderr
    check = run_django(
        tmp_path, "DEBUG = True\n" + settings + "\n", CHECK + "call_command('check')", env
    )
    assert check.returncode != 0
    assert message in check.stderr, check.stderr
    build = run_django(
        tmp_path,
        "DEBUG = True\n" + settings + "\n",
        """
        import django
        django.setup()
        from asyncguard import AsyncGuardMiddleware
        async def app(scope, receive, send): pass
        AsyncGuardMiddleware(app)
        """,
        env,
    )
    assert build.returncode != 0
    assert "django.core.exceptions.ImproperlyConfigured" in build.stderr
    assert message in build.stderr
    assert build.stderr.count("Traceback") == 1


def test_exclude_names_a_family_or_one_client_library(tmp_path: Path) -> None:
    out = run_django(
        tmp_path,
        'DEBUG = True\nASYNC_GUARD = {"EXCLUDE": ["clients.redis", "sync"]}\n',
        CHECK + "call_command('check'); import asyncguard; "
        "print(sorted(asyncguard._guard.current().exclude))",
    )
    assert out.returncode == 0, out.stderr
    assert "asyncguard.E001" not in out.stderr
    assert out.stdout.splitlines()[-1] == "['clients.redis', 'sync']"


def test_raise_mode_without_debug_is_a_deploy_warning(tmp_path: Path) -> None:
    settings = 'DEBUG = False\nALLOWED_HOSTS = ["x"]\nASYNC_GUARD = {"MODE": "raise"}\n'
    out = run_django(
        tmp_path, settings, CHECK + "call_command('check', deploy=True, tags=['compatibility'])"
    )
    assert "asyncguard.W001" in out.stderr, out.stderr
    assert "ASYNC_GUARD_MODE=warn" in out.stderr
    clean = run_django(
        tmp_path,
        'DEBUG = False\nALLOWED_HOSTS = ["x"]\nASYNC_GUARD = {"MODE": "warn"}\n',
        CHECK + "call_command('check', deploy=True, tags=['compatibility'])",
    )
    assert "asyncguard.W001" not in clean.stderr + clean.stdout


def test_an_allow_rule_naming_a_missing_module_is_a_check_warning(tmp_path: Path) -> None:
    out = run_django(
        tmp_path,
        'DEBUG = True\nASYNC_GUARD = {"ALLOW": ["time.sleep in shopp.views", "os.stat"]}\n',
        CHECK + "call_command('check')",
    )
    assert out.returncode == 0, out.stderr
    assert "asyncguard.W002" in out.stderr, out.stderr
    assert "the allow rule 'time.sleep in shopp.views' names a module that cannot be found" in (
        out.stderr
    )
    assert "'os.stat'" not in out.stderr.split("asyncguard.W002", 1)[1].split("\n", 1)[0]
