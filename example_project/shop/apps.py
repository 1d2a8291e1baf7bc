import time
from typing import Any

from django.apps import AppConfig
from django.db.backends.signals import connection_created


class ShopConfig(AppConfig):
    name = "shop"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import upstream

        upstream.start()  # before any request: starting it makes blocking calls of its own
        connection_created.connect(add_sleep_function)


def add_sleep_function(sender: object, connection: Any, **kwargs: Any) -> None:
    """``SELECT sleep(0.2)`` on SQLite, as ``pg_sleep`` on PostgreSQL: a query that waits in
    the database (the /slow/query view)."""
    if connection.vendor == "sqlite":
        connection.connection.create_function("sleep", 1, _sleep)


def _sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds
