"""No frame of asyncguard shows a hooked call's arguments: every function of ours that passes a
call's arguments on (``original(*args, **kwargs)``, the fast path and the slow path alike) is
marked hidden for Django's error pages and reports (``__traceback_hide__``), for Sentry (which
honours both) and for pytest (``__tracebackhide__``)."""

from __future__ import annotations

import ast
from pathlib import Path

import asyncguard

SRC = Path(asyncguard.__file__).parent
MARKERS = {"__tracebackhide__", "__traceback_hide__"}
# They pass options on, never a call's arguments, and are not on the stack of a guarded call.
CONFIGURATION = {
    "_cli.py _get",
    "_install.py install",
    "_install.py guarded",
    "_hooks/network.py _audit",
    "django/apps.py ready",
    "middleware.py __init__",
    "pytest_plugin.py apply",
    "pytest_plugin.py allow",
}


def _own_nodes(func: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.AST]:
    """The nodes of ``func``'s body, not those of the functions defined inside it."""
    nodes: list[ast.AST] = []
    todo: list[ast.AST] = list(func.body)
    while todo:
        node = todo.pop()
        nodes.append(node)
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            todo.extend(ast.iter_child_nodes(node))
    return nodes


def _forwards_arguments(func: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """``func`` calls something with ``*args``/``**kwargs`` (its own or a closure's)."""
    for node in _own_nodes(func):
        if not isinstance(node, ast.Call):
            continue
        starred = [a.value for a in node.args if isinstance(a, ast.Starred)]
        starred += [k.value for k in node.keywords if k.arg is None]
        if any(isinstance(value, ast.Name) for value in starred):
            return True
    return False


def _marks(func: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    marked: set[str] = set()
    for node in func.body:
        if isinstance(node, ast.Assign):
            marked.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return marked & MARKERS


def _unmarked() -> list[str]:
    missing = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if f"{path.relative_to(SRC)} {node.name}" in CONFIGURATION:
                    continue
                if _forwards_arguments(node) and _marks(node) != MARKERS:
                    missing.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name}")
    return missing


def test_every_function_that_forwards_a_call_is_hidden() -> None:
    assert _unmarked() == []
