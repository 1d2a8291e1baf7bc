#!/usr/bin/env python3
"""The demo: an asyncio program that makes blocking calls, guarded in raise and in warn mode.

Usage: python3 scripts/demo.py
"""

from __future__ import annotations

import sys

from _bootstrap import ROOT, ensure_venv, run

if __name__ == "__main__":
    python = ensure_venv(".venv-demo", "-e", str(ROOT), "uvloop>=0.19")
    sys.exit(run([str(python), str(ROOT / "examples" / "blocking_demo.py"), *sys.argv[1:]]))
