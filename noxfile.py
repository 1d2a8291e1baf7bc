"""Test matrix: the interpreters and Django versions that matter, plus lint.

`python3 scripts/test.py` bootstraps nox and runs every session; in CI (CI=true) a missing
interpreter is an error instead of a skip, and ASYNCGUARD_REQUIRE_SERVICES=1 turns test skips
into failures.
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests", "lint"]

MATRIX = [
    ("3.11", "django>=5.2,<5.3"),
    ("3.13", "django>=6.0,<7"),
    ("3.10", "django>=4.2,<4.3"),
]

TEST_DEPS = [
    "pytest>=8",
    "uvloop>=0.19",
    "asgiref>=3.7",
    "coverage>=7",
    # third-party clients and the services' client libraries
    "requests",
    "urllib3",
    "httpx",
    "redis",
    "psycopg2-binary",
    "psycopg[binary]",
    "aiosmtpd",
    "pymemcache",
    "pymysql",  # only to show its password never reaches a message
    # offload mode, and a greenlet user it must coexist with (SQLAlchemy's asyncio layer)
    "greenlet>=3.0",
    "sqlalchemy>=2.0",
    "aiosqlite",
    # the real ASGI servers example_project is served by
    "uvicorn[standard]>=0.30",
    "daphne>=4.1",
    "hypercorn>=0.17",
    "granian>=1.6",
    # the outer ASGI router that does not forward lifespan (ProtocolTypeRouter)
    "channels>=4",
    # runners the pytest plugin is proven with
    "pytest-asyncio>=0.24",
    "anyio>=4",
    "pytest-xdist>=3.5",
    "pytest-django>=4.8",
    # an error tracker that captures frame locals: no secret may reach it through the guard
    "sentry-sdk>=2",
]


@nox.session
@nox.parametrize(("python", "django"), MATRIX, ids=[f"py{p}" for p, _ in MATRIX])
def tests(session: nox.Session, django: str) -> None:
    """The whole test suite on one interpreter/Django pair."""
    session.install("-e", ".", django, *TEST_DEPS)
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff (lint + format check), mypy --strict on src, and the import contracts."""
    session.install(
        "-e", ".", "ruff>=0.6", "mypy>=1.11", "pytest>=8", "django-stubs", "import-linter>=2.1"
    )
    paths = ["src", "tests", "bench", "scripts", "examples", "example_project", "noxfile.py"]
    session.run("ruff", "check", *paths)
    session.run("ruff", "format", "--check", *paths)
    session.run("mypy")
    session.run("lint-imports")  # the layers, no cycles, families independent (pyproject)


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Overhead benchmark against no guard and blockbuster (not part of the default run)."""
    session.install("-e", ".", "blockbuster>=1.5")
    session.run("python", "bench/overhead.py", *session.posargs)


@nox.session(python="3.11")
def loadtest(session: nox.Session) -> None:
    """Staging warn mode + watchdog vs no guard under uvicorn load (not part of the default
    run): `python3 scripts/test.py -s loadtest`."""
    session.install("-e", ".[django]", "uvicorn", "uvloop", "requests", "httpx", "django>=5.2,<5.3")
    session.run("python", "bench/loadtest.py", *session.posargs)


@nox.session(python="3.11")
def offload(session: nox.Session) -> None:
    """Offload mode's greenlet driver: warn vs offload servers under uvicorn load, then the
    driver alone in one process (not part of the default run): `python3 scripts/test.py -s
    offload`."""
    session.install(
        "-e", ".[django,offload]", "uvicorn", "uvloop", "requests", "httpx", "django>=5.2,<5.3"
    )
    session.run("python", "bench/offload.py", *session.posargs)
    session.run("python", "bench/offload_inprocess.py")
