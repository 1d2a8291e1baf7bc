"""Reversible patching: module and class attributes, early-bound names, post-import hooks.

Every change is recorded as ``(owner, name, original, had_own)`` and undone in reverse order,
so after :func:`remove_all` each attribute is the identical original object again (or absent
from a class ``__dict__`` that only inherited it).  Only module dictionaries and Python
classes are written to; C types' dictionaries never are.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable, Iterable
from typing import Any

import wrapt

from ._report import internal_error
from ._spec import Gate, Hook

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)

Build = Callable[[Hook, Any], Any]  # (hook, original) -> the wrapper to patch in

_records: list[tuple[Any, str, Any, bool]] = []
_pending: dict[str, list[Hook]] = {}  # module name -> hooks waiting for its import
_registered_modules: set[str] = set()  # post-import hooks can't be removed: register once
_active = False
_build: Build | None = None  # given by apply(): the installer's wrapper builder
_SKIP_SWAP_PREFIXES = ("asyncguard", "importlib._bootstrap", "wrapt")


def _resolve(hook: Hook, module: types.ModuleType) -> tuple[Any, str] | None:
    owner: Any = module
    *path, name = hook.attr.split(".")
    for part in path:
        owner = getattr(owner, part, None)
        if owner is None:
            return None
    if not hasattr(owner, name):
        return None
    return owner, name


def _set(owner: Any, name: str, value: Any) -> None:
    had_own = name in vars(owner)
    original = vars(owner)[name] if had_own else getattr(owner, name)
    setattr(owner, name, value)
    _records.append((owner, name, original, had_own))


def _patch_module(
    module: types.ModuleType, hooks: Iterable[Hook], swaps: dict[int, tuple[Any, Any]]
) -> None:
    """Patch ``hooks`` on ``module``; module-level originals go into ``swaps`` for the
    early-bound scan (done once for all modules by the caller).  A hook whose ``gate`` gives a
    reason (its library is too old) is left out; each gate is asked once."""
    refused: dict[Gate, str | None] = {}
    for hook in hooks:
        gate = hook.gate
        if gate is not None:
            if gate not in refused:
                refused[gate] = gate()
            if refused[gate] is not None:
                continue
        target = _resolve(hook, module)
        if target is None:
            if hook.optional:
                continue
            raise AttributeError(f"asyncguard cannot hook {hook.module}.{hook.attr}: not found")
        owner, name = target
        original = getattr(owner, name)
        if getattr(original, "__asyncguard_hook__", None) is not None:
            continue  # already ours (installed twice through an alias)
        assert _build is not None  # apply() came first
        wrapper = _build(hook, original)
        _set(owner, name, wrapper)
        if isinstance(owner, types.ModuleType):
            swaps[id(original)] = (original, wrapper)


def _swap_early_bound(swaps: dict[int, tuple[Any, Any]]) -> None:
    """Replace module globals bound to an original before install (``from time import sleep``).

    Builtin and extension modules are skipped: their names are the originals' homes (``posix``
    for ``os.stat``), used by the import system itself.
    """
    for module_name, module in list(sys.modules.items()):
        if not isinstance(module, types.ModuleType) or module_name.startswith(_SKIP_SWAP_PREFIXES):
            continue
        if module_name in sys.builtin_module_names:
            continue
        filename = getattr(module, "__file__", None)
        if isinstance(filename, str) and not filename.endswith((".py", ".pyc")):
            continue  # extension module
        try:
            namespace = vars(module)
            items = list(namespace.items())
        except Exception:
            continue
        for name, value in items:
            swap = swaps.get(id(value))
            if swap is not None and swap[0] is value:
                _set(module, name, swap[1])


def apply(hooks: Iterable[Hook], build: Build) -> None:
    """Patch every hook whose module is imported, with ``build(hook, original)``; the rest when
    their module is imported."""
    global _active, _build
    _build = build
    by_module: dict[str, list[Hook]] = {}
    for hook in hooks:
        by_module.setdefault(hook.module, []).append(hook)
    _active = True
    swaps: dict[int, tuple[Any, Any]] = {}
    for module_name, module_hooks in by_module.items():
        module = sys.modules.get(module_name)
        if module is not None:
            _patch_module(module, module_hooks, swaps)
        else:
            _pending[module_name] = module_hooks
            if module_name not in _registered_modules:
                _registered_modules.add(module_name)
                wrapt.register_post_import_hook(_on_import, module_name)
    if swaps:
        _swap_early_bound(swaps)


def _on_import(module: types.ModuleType) -> None:
    hooks = _pending.pop(module.__name__, None)
    if not _active or not hooks:
        return
    try:
        swaps: dict[int, tuple[Any, Any]] = {}
        _patch_module(module, hooks, swaps)
        if swaps:
            _swap_early_bound(swaps)
    except Exception as exc:  # never break the user's import
        internal_error(f"patching {module.__name__} on import", exc)


def remove_all() -> None:
    global _active
    _active = False
    _pending.clear()
    while _records:
        owner, name, original, had_own = _records.pop()
        if had_own:
            setattr(owner, name, original)
        else:
            try:
                delattr(owner, name)
            except AttributeError:
                setattr(owner, name, original)


def patched() -> list[tuple[Any, str, Any]]:
    """``(owner, name, original)`` of every attribute currently patched."""
    return [(owner, name, original) for owner, name, original, _ in _records]
