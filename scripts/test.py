#!/usr/bin/env python3
"""Run the whole test suite: lint, then pytest on Python 3.11/Django 5.2, 3.13/Django 6.x and
3.10/Django 4.2 (each interpreter that is installed; in CI a missing one is an error).

Usage: python3 scripts/test.py [nox arguments]   e.g. -s tests-py3.11 -- -k sleep
"""

from __future__ import annotations

import sys

from _bootstrap import add_pyenv_interpreters, ensure_venv, run

if __name__ == "__main__":
    python = ensure_venv(".venv-tools", "nox>=2024.4")
    add_pyenv_interpreters()
    sys.exit(run([str(python), "-m", "nox", *sys.argv[1:]]))
