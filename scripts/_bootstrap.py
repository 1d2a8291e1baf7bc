"""Create a private virtualenv with the given packages and return its interpreter."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def ensure_venv(name: str, *packages: str) -> Path:
    """``ROOT/name`` with ``packages`` installed (re-installed when the list changes)."""
    env = ROOT / name
    python = env / ("Scripts" if os.name == "nt" else "bin") / "python"
    stamp = env / ".asyncguard-installed"
    wanted = "\n".join(packages)
    if not python.exists():
        print(f"==> creating {env}", flush=True)
        venv.create(env, with_pip=True)
    if not stamp.exists() or stamp.read_text() != wanted:
        print(f"==> installing {' '.join(packages)} into {env}", flush=True)
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        # pip's output is kept out of the way unless the install fails
        done = subprocess.run(
            [*pip, *packages], cwd=ROOT, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            sys.stderr.write(done.stdout + done.stderr)
            raise SystemExit(f"pip install failed in {env} (exit {done.returncode})")
        stamp.write_text(wanted)
    return python


def add_pyenv_interpreters() -> None:
    """Put pyenv's 3.10/3.12/3.13 on PATH (as python3.X) so nox finds the whole matrix."""
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    dirs = []
    for minor in ("3.10", "3.11", "3.12", "3.13"):
        found = sorted(glob.glob(os.path.join(root, "versions", f"{minor}.*", "bin")))
        if found:
            dirs.append(found[-1])
    if dirs:
        os.environ["PATH"] = os.pathsep.join([*dirs, os.environ.get("PATH", "")])


def run(argv: list[str]) -> int:
    return subprocess.run(argv, cwd=ROOT).returncode


if __name__ == "__main__":  # pragma: no cover
    sys.exit("import this module")
