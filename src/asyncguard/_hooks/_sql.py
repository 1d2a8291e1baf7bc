"""The SQL of a DB-API call for messages: the statement, never its parameters or literals.

Shared by the database family (sqlite3) and the django family (raw cursors).
"""

from __future__ import annotations

import re
from typing import Any

from .._format import short

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)
__asyncguard_work__ = True  # the guard judging or reporting a call (_frames)

_SQL_STRING = re.compile(r"'(?:[^']|'')*'")


def fmt_sql(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """The statement, never its parameters nor its string literals (they are the data:
    passwords, personal data, ``PRAGMA key='...'``)."""
    sql = args[1] if len(args) > 1 else kwargs.get("sql", kwargs.get("sql_script"))
    if sql is None:
        return ""
    text = short(_SQL_STRING.sub("'…'", sql) if isinstance(sql, str) else sql)
    has_params = len(args) > 2 or "parameters" in kwargs
    return text + ", …" if has_params else text
