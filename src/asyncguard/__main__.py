"""``python -m asyncguard``: see :mod:`asyncguard._cli`."""

from ._cli import main

raise SystemExit(main())
