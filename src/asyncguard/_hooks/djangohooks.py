"""Django internals that block (placeholder)."""

from __future__ import annotations

from ._spec import Family

FAMILY = Family(name="django", description="Django cache, storage, templates, sessions, mail, ORM")
