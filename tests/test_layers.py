"""The layers of docs/architecture.md hold: no asyncguard module is imported inside a function
(the import-linter contracts in pyproject.toml, run by the lint session, check the layers, the
families' independence and the absence of cycles), and importing asyncguard imports none of its
optional integrations."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import asyncguard

SRC = Path(asyncguard.__file__).parent


def _imports_inside_functions() -> list[str]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                if (
                    isinstance(node, ast.ImportFrom)
                    and (node.level > 0 or (node.module or "").startswith("asyncguard"))
                ) or (
                    isinstance(node, ast.Import)
                    and any(alias.name.startswith("asyncguard") for alias in node.names)
                ):
                    found.append(f"{path.relative_to(SRC)}:{node.lineno}")
    return found


def test_no_asyncguard_module_is_imported_inside_a_function() -> None:
    assert _imports_inside_functions() == []


def test_importing_asyncguard_imports_no_optional_integration() -> None:
    optional = ["django", "pytest", "_pytest", "sentry_sdk", "opentelemetry", "debug_toolbar"]
    code = f"import sys, asyncguard\nprint([m for m in {optional!r} if m in sys.modules])\n"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
