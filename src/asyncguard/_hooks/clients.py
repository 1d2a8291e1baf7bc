"""Third-party sync clients, hooked when imported (placeholder)."""

from __future__ import annotations

from ._spec import Family

FAMILY = Family(name="clients", description="requests, urllib3, httpx, redis, psycopg2, psycopg")
