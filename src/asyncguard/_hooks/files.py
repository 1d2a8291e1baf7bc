"""files hooks (placeholder)."""

from __future__ import annotations

from ._spec import Family

FAMILY = Family(name="files", description="files")
