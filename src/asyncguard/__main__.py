"""``python -m asyncguard``: see :mod:`asyncguard._cli`."""

from ._cli import main

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)

raise SystemExit(main())
