"""The README's examples and the examples/ programs say what the code really does."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VIEWS = ROOT / "example_project" / "shop" / "views.py"
README = ROOT / "README.md"


def _blocking_lines() -> dict[str, set[int]]:
    """Function name -> the lines of example_project's views marked ``# blocks``."""
    source = VIEWS.read_text()
    lines = source.splitlines()
    found: dict[str, set[int]] = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            end = node.end_lineno or node.lineno
            marked = {n for n in range(node.lineno, end + 1) if lines[n - 1].endswith("# blocks")}
            if marked:
                found[node.name] = marked
    return found


def test_every_view_line_the_readme_quotes_is_a_blocking_line_of_that_view() -> None:
    """Output quoted in the README names ``shop/views.py:LINE (function)``: that line must be
    one the demo really reports (a line marked ``# blocks`` in that function)."""
    blocking = _blocking_lines()
    quoted = re.findall(r"shop/views\.py:(\d+) \((\w+)\)", README.read_text())
    assert quoted
    wrong = [
        f"shop/views.py:{line} ({function})"
        for line, function in quoted
        if int(line) not in blocking.get(function, set())
    ]
    assert wrong == [], f"the README quotes lines the views do not block at: {wrong}"


def test_blocking_demo_catches_every_blocking_handler(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNC_GUARD_")}
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "blocking_demo.py")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "not caught" not in output
    assert (
        "raise mode caught 5 blocking calls: time.sleep, open, socket.socket.connect, "
        "subprocess.run, threading.Lock.acquire" in output
    ), output
    assert "fixed handlers: 0 violations" in output
