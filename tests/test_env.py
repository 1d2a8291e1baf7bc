"""Staging configuration from environment variables alone (``ASYNC_GUARD_*``)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import asyncguard
from asyncguard import AsyncGuardMiddleware
from asyncguard._env import VARIABLES, options_from_env


@pytest.fixture(autouse=True)
def _clean() -> object:
    yield
    asyncguard.uninstall()


def test_every_option_from_the_environment(tmp_path: Path) -> None:
    env = {
        "ASYNC_GUARD_MODE": "warn",
        "ASYNC_GUARD_ALLOW": "time.sleep in legacy, os.stat",
        "ASYNC_GUARD_EXCLUDE": "console,sync",
        "ASYNC_GUARD_MIN_DURATION": "5ms",
        "ASYNC_GUARD_STALL_THRESHOLD": "0.25",
        "ASYNC_GUARD_JSON": str(tmp_path / "out.jsonl"),
        "ASYNC_GUARD_RATE_LIMIT": "30",
        "ASYNC_GUARD_MAX_SITES": "500",
        "ASYNC_GUARD_SUMMARY_INTERVAL": "60s",
        "ASYNC_GUARD_LOG": "false",
        "ASYNC_GUARD_OFFLOAD_THREADS": "64",
    }
    assert options_from_env(env) == {
        "mode": "warn",
        "allow": ("time.sleep in legacy", "os.stat"),
        "exclude": ("console", "sync"),
        "min_duration": 0.005,
        "stall_threshold": 0.25,
        "json": str(tmp_path / "out.jsonl"),
        "rate_limit": 30,
        "max_sites": 500,
        "summary_interval": 60.0,
        "log": False,
        "offload_threads": 64,
    }
    assert {"ASYNC_GUARD_" + suffix for suffix in VARIABLES} == set(env)


def test_stall_threshold_off() -> None:
    assert options_from_env({"ASYNC_GUARD_STALL_THRESHOLD": "off"}) == {"stall_threshold": None}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"ASYNC_GUARD_MODE": "loud"},
            "ASYNC_GUARD_MODE = 'loud' is not valid: choose one of 'raise', 'warn', 'offload'",
        ),
        (
            {"ASYNC_GUARD_MIN_DURATION": "fast"},
            "ASYNC_GUARD_MIN_DURATION = 'fast' is not valid: seconds >= 0, like 0.5, '500ms' "
            "or '0.5s'",
        ),
        (
            {"ASYNC_GUARD_RATE_LIMIT": "-3"},
            "ASYNC_GUARD_RATE_LIMIT = '-3' is not valid: a whole number >= 0",
        ),
        ({"ASYNC_GUARD_LOG": "maybe"}, "ASYNC_GUARD_LOG = 'maybe' is not valid: 1 or 0"),
        (
            {"ASYNC_GUARD_ALLOW": "time.slep"},
            "ASYNC_GUARD_ALLOW = 'time.slep' is not valid: unknown call key",
        ),
        (
            {"ASYNC_GUARD_EXCLUDE": "nets"},
            "ASYNC_GUARD_EXCLUDE = 'nets' is not valid: unknown hook family 'nets'",
        ),
        (
            {"ASYNC_GUARD_STAL_THRESHOLD": "1"},
            "unknown environment variable ASYNC_GUARD_STAL_THRESHOLD; did you mean "
            "ASYNC_GUARD_STALL_THRESHOLD?",
        ),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError) as info:
        options_from_env(env)
    assert str(info.value).startswith(message), info.value


def test_the_environment_beats_keyword_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASYNC_GUARD_MODE", "warn")
    monkeypatch.setenv("ASYNC_GUARD_MIN_DURATION", "0.5")

    async def app(scope: object, receive: object, send: object) -> None:
        pass

    middleware = AsyncGuardMiddleware(app, mode="raise", min_duration=0.1, rate_limit=5)
    assert middleware.guard.mode == "warn"
    assert middleware.guard.min_duration == 0.5
    assert middleware.guard.rate_limit == 5  # not set in the environment: the argument holds


def test_a_staging_process_configured_by_environment_only(tmp_path: Path) -> None:
    """An ASGI app served in-process, nothing configured in code but the middleware."""
    script = tmp_path / "app.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio, time
            from asyncguard import AsyncGuardMiddleware

            async def app(scope, receive, send):
                time.sleep(0.002)
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.body", "body": b"ok"})

            application = AsyncGuardMiddleware(app)

            async def main():
                sent = []
                async def receive():
                    return {"type": "http.request"}
                async def send(message):
                    sent.append(message)
                for _ in range(3):
                    await application({"type": "http", "method": "GET", "path": "/x"},
                                      receive, send)
                print(sent[0]["status"])

            asyncio.run(main())
            """
        )
    )
    env = {
        **os.environ,
        "ASYNC_GUARD_MODE": "warn",
        "ASYNC_GUARD_JSON": str(tmp_path / "out.jsonl"),
        "ASYNC_GUARD_LOG": "0",
    }
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "200\n"
    assert result.stderr == ""  # LOG=0: the JSON file is the only output
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["type"] for r in records] == ["violation", "site", "flush"]
    assert records[0]["request"] == "GET /x"
    assert records[1]["count"] == 3


def test_a_bad_variable_stops_the_app_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASYNC_GUARD_RATE_LIMIT", "lots")

    async def app(scope: object, receive: object, send: object) -> None:
        pass

    # ValueError, or Django's ImproperlyConfigured when Django is set up in this process
    with pytest.raises(Exception, match="ASYNC_GUARD_RATE_LIMIT = 'lots' is not valid") as info:
        AsyncGuardMiddleware(app)
    assert isinstance(info.value, ValueError) or type(info.value).__name__ == "ImproperlyConfigured"
    assert asyncio.run(asyncio.sleep(0, "loop still fine")) == "loop still fine"
