from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from sqlite3 import connect as early_bound_connect
from typing import Any

import pytest

import asyncguard
from asyncguard._format import short
from conftest import expect_clean_off_loop, expect_clean_on_loop, expect_violation, run_on

HINT = "use an async driver (aiosqlite)"


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "app.sqlite3"


@pytest.fixture
def conn(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection opened at start-up, off the loop, after install -- used later on a loop
    (check_same_thread=False: the "thread" loop runs on another thread)."""
    asyncguard.install("raise")
    conn = sqlite3.connect(path, check_same_thread=False)
    conn.execute("CREATE TABLE t (x INTEGER)")
    conn.executemany("INSERT INTO t VALUES (?)", [(1,), (2,), (3,)])
    conn.commit()
    try:
        yield conn
    finally:
        conn.close()


# -- sqlite3.connect ------------------------------------------------------------------------------


def test_connect(loop_kind: str, mode: str, path: Path) -> None:
    conns: list[sqlite3.Connection] = []

    def blocking() -> None:
        conns.append(sqlite3.connect(path, check_same_thread=False))

    violation = expect_violation(loop_kind, mode, blocking, "sqlite3.connect", category="database")
    assert violation.args == short(path)
    assert HINT in violation.message()
    for conn in conns:
        assert isinstance(conn, sqlite3.Connection)
        conn.close()


def test_connect_bound_before_install(loop_kind: str, mode: str) -> None:
    conns: list[sqlite3.Connection] = []

    def blocking() -> None:
        conns.append(early_bound_connect(":memory:", check_same_thread=False))

    violation = expect_violation(loop_kind, mode, blocking, "sqlite3.connect")
    assert violation.call_expr == "sqlite3.connect(':memory:')"
    for conn in conns:
        conn.close()


def test_connection_built_directly_is_seen_by_the_audit_hook(loop_kind: str, path: Path) -> None:
    def blocking() -> None:
        sqlite3.Connection(str(path))

    violation = expect_violation(loop_kind, "raise", blocking, "sqlite3.connect")
    assert violation.args == short(str(path))


# -- connections opened off the loop, used on it --------------------------------------------------


def test_connection_execute(loop_kind: str, mode: str, conn: sqlite3.Connection) -> None:
    rows: list[Any] = []

    def blocking() -> None:
        rows.append(conn.execute("SELECT x FROM t WHERE x > ?", (1,)))

    violation = expect_violation(loop_kind, mode, blocking, "sqlite3.Connection.execute")
    # the statement, never its parameters
    assert violation.call_expr == "sqlite3.Connection.execute('SELECT x FROM t WHERE x > ?', …)"
    if mode == "warn":
        assert rows[0].fetchall() == [(2,), (3,)]


def test_messages_leave_out_data(loop_kind: str, conn: sqlite3.Connection) -> None:
    def blocking() -> None:
        conn.execute("UPDATE t SET x = 1 WHERE 'it''s' = 'secret'")

    violation = expect_violation(loop_kind, "raise", blocking, "sqlite3.Connection.execute")
    assert violation.args == repr("UPDATE t SET x = 1 WHERE '…' = '…'")

    def uri() -> None:
        sqlite3.connect("file:app.db?mode=ro&key=hunter2", uri=True)

    violation = expect_violation(loop_kind, "raise", uri, "sqlite3.connect")
    assert violation.call_expr == "sqlite3.connect('file:app.db?…')"


def test_connection_executemany(loop_kind: str, mode: str, conn: sqlite3.Connection) -> None:
    def blocking() -> None:
        conn.executemany("INSERT INTO t VALUES (?)", [(4,), (5,)])

    expect_violation(loop_kind, mode, blocking, "sqlite3.Connection.executemany")
    expected = 5 if mode == "warn" else 3
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (expected,)


def test_connection_executescript(loop_kind: str, mode: str, conn: sqlite3.Connection) -> None:
    def blocking() -> None:
        conn.executescript("INSERT INTO t VALUES (9); INSERT INTO t VALUES (10);")

    violation = expect_violation(loop_kind, mode, blocking, "sqlite3.Connection.executescript")
    assert violation.args.startswith("'INSERT INTO t VALUES (9);")


def test_connection_commit(loop_kind: str, mode: str, conn: sqlite3.Connection) -> None:
    conn.execute("INSERT INTO t VALUES (4)")  # opens a transaction, off the loop

    def blocking() -> None:
        conn.commit()

    violation = expect_violation(loop_kind, mode, blocking, "sqlite3.Connection.commit")
    assert violation.call_expr == "sqlite3.Connection.commit()"
    assert conn.in_transaction is (mode == "raise")


def test_connection_rollback(loop_kind: str, mode: str, conn: sqlite3.Connection) -> None:
    conn.execute("INSERT INTO t VALUES (4)")

    def blocking() -> None:
        conn.rollback()

    expect_violation(loop_kind, mode, blocking, "sqlite3.Connection.rollback")
    assert conn.in_transaction is (mode == "raise")


def test_connection_backup(loop_kind: str, mode: str, conn: sqlite3.Connection) -> None:
    target = sqlite3.connect(":memory:", check_same_thread=False)

    def blocking() -> None:
        conn.backup(target)

    try:
        expect_violation(loop_kind, mode, blocking, "sqlite3.Connection.backup")
        if mode == "warn":
            assert target.execute("SELECT count(*) FROM t").fetchone() == (3,)
    finally:
        target.close()


def test_with_connection_commits(loop_kind: str, mode: str, conn: sqlite3.Connection) -> None:
    def blocking() -> None:
        with asyncguard.allow_blocking():
            conn.execute("INSERT INTO t VALUES (4)")
        with conn:  # <- blocks
            pass

    expect_violation(loop_kind, mode, blocking, "sqlite3.Connection.commit")
    assert conn.in_transaction is (mode == "raise")


def test_with_connection_rolls_back(loop_kind: str, mode: str, conn: sqlite3.Connection) -> None:
    def blocking() -> None:
        with asyncguard.allow_blocking():
            conn.execute("INSERT INTO t VALUES (4)")
        with conn:  # <- blocks
            raise KeyError("boom")

    def call() -> None:
        with pytest.raises(KeyError):
            blocking()

    if mode == "raise":  # BlockingCallError raised by __exit__ replaces the KeyError
        expect_violation(loop_kind, mode, blocking, "sqlite3.Connection.rollback")
    else:
        expect_violation(loop_kind, mode, call, "sqlite3.Connection.rollback", line_of=blocking)
        assert not conn.in_transaction


def test_commit_without_transaction_is_not_blocking(
    loop_kind: str, conn: sqlite3.Connection
) -> None:
    def call() -> None:
        assert not conn.in_transaction
        conn.commit()
        conn.rollback()
        with conn:
            pass

    expect_clean_on_loop(loop_kind, call)


# -- cursors ------------------------------------------------------------------------------------


def test_cursor_execute(loop_kind: str, mode: str, conn: sqlite3.Connection) -> None:
    cursor = conn.cursor()

    def blocking() -> None:
        cursor.execute("SELECT x FROM t")

    violation = expect_violation(loop_kind, mode, blocking, "sqlite3.Cursor.execute")
    assert violation.call_expr == "sqlite3.Cursor.execute('SELECT x FROM t')"
    cursor.close()


def test_cursor_executemany(loop_kind: str, mode: str, conn: sqlite3.Connection) -> None:
    cursor = conn.cursor()

    def blocking() -> None:
        cursor.executemany("INSERT INTO t VALUES (?)", [(7,)])

    expect_violation(loop_kind, mode, blocking, "sqlite3.Cursor.executemany")
    cursor.close()


def test_cursor_executescript(loop_kind: str, mode: str, conn: sqlite3.Connection) -> None:
    cursor = conn.cursor()

    def blocking() -> None:
        cursor.executescript("SELECT 1;")

    expect_violation(loop_kind, mode, blocking, "sqlite3.Cursor.executescript")
    cursor.close()


@pytest.mark.parametrize("name", ["fetchone", "fetchmany", "fetchall"])
def test_cursor_fetch(loop_kind: str, mode: str, conn: sqlite3.Connection, name: str) -> None:
    cursor = conn.execute("SELECT x FROM t ORDER BY x")  # off the loop
    rows: list[Any] = []

    def fetchone() -> None:
        rows.append(cursor.fetchone())

    def fetchmany() -> None:
        rows.append(cursor.fetchmany(2))

    def fetchall() -> None:
        rows.append(cursor.fetchall())

    blocking = {"fetchone": fetchone, "fetchmany": fetchmany}.get(name, fetchall)
    violation = expect_violation(loop_kind, mode, blocking, f"sqlite3.Cursor.{name}")
    if mode == "warn":
        assert rows == [{"fetchone": (1,), "fetchmany": [(1,), (2,)]}.get(name, [(1,), (2,), (3,)])]
    if name == "fetchmany":
        assert violation.call_expr == "sqlite3.Cursor.fetchmany(2)"
    cursor.close()


def test_fetch_on_the_cursor_returned_by_connection_execute(
    loop_kind: str, mode: str, conn: sqlite3.Connection
) -> None:
    """``conn.execute()`` returns a guarded cursor on every version (3.11+ builds it in C)."""
    cursor = conn.execute("SELECT x FROM t")

    def blocking() -> None:
        cursor.fetchall()

    expect_violation(loop_kind, mode, blocking, "sqlite3.Cursor.fetchall")


def test_fetch_without_result_set_is_not_blocking(loop_kind: str, conn: sqlite3.Connection) -> None:
    cursor = conn.execute("INSERT INTO t VALUES (4)")  # no result set: description is None
    fresh = conn.cursor()

    def call() -> None:
        assert cursor.fetchall() == []
        assert cursor.fetchone() is None
        assert fresh.fetchmany() == []

    expect_clean_on_loop(loop_kind, call)


def test_off_loop_is_not_flagged(path: Path) -> None:
    def call() -> None:
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE t (x)")
        with conn:
            conn.executemany("INSERT INTO t VALUES (?)", [(1,), (2,)])
        cursor = conn.cursor()
        cursor.execute("SELECT x FROM t")
        assert cursor.fetchone() == (1,)
        assert cursor.fetchall() == [(2,)]
        conn.executescript("DELETE FROM t;")
        conn.rollback()
        conn.close()

    expect_clean_off_loop(call)
    path.unlink()
    expect_clean_off_loop(call, mode="warn")


# -- the guarded classes --------------------------------------------------------------------------


def test_guarded_connection_behaves_like_sqlite3(path: Path) -> None:
    plain = sqlite3.Connection(str(path))  # no install: a plain C connection
    plain.execute("CREATE TABLE t (x INTEGER, y TEXT)")
    plain.executemany("INSERT INTO t VALUES (?, ?)", [(1, "a"), (2, "b")])
    plain.commit()
    asyncguard.install("raise")
    guarded = sqlite3.connect(path)
    try:
        assert type(guarded) is not sqlite3.Connection
        assert isinstance(guarded, sqlite3.Connection)
        assert repr(guarded).startswith("<sqlite3.Connection object at ")
        with pytest.raises(AttributeError):
            guarded.anything = 1  # type: ignore[attr-defined]  # no __dict__, like the original
        for connection in (plain, guarded):
            connection.row_factory = sqlite3.Row
        query = "SELECT x, y FROM t ORDER BY x"
        plain_rows = [tuple(r) for r in plain.execute(query)]
        guarded_rows = [tuple(r) for r in guarded.execute(query)]
        assert plain_rows == guarded_rows == [(1, "a"), (2, "b")]
        cursor = guarded.execute(query)
        assert isinstance(cursor, sqlite3.Cursor)
        assert cursor.connection is guarded
        assert isinstance(cursor.fetchone(), sqlite3.Row)
        assert guarded.execute("SELECT count(*) FROM t").fetchone()[0] == 2
        assert guarded.executescript("SELECT 1;").connection is guarded
        assert guarded.executemany("INSERT INTO t VALUES (?, ?)", []).rowcount == 0
        assert list(guarded.iterdump()) == list(plain.iterdump())
    finally:
        guarded.close()
        plain.close()


def test_user_factories_are_respected(loop_kind: str, mode: str) -> None:
    class MyCursor(sqlite3.Cursor):
        def double(self) -> list[int]:
            return [row[0] * 2 for row in self.fetchall()]

    class MyConnection(sqlite3.Connection):
        def answer(self) -> int:
            return 42

    asyncguard.install("raise")
    conn = sqlite3.connect(":memory:", factory=MyConnection, check_same_thread=False)
    again = sqlite3.connect(":memory:", factory=MyConnection)
    try:
        assert isinstance(conn, MyConnection)
        assert conn.answer() == 42
        assert type(conn) is type(again)  # built once per factory
        cursor = conn.cursor(MyCursor)
        assert isinstance(cursor, MyCursor)
        cursor.execute("SELECT 21")

        def blocking() -> None:
            cursor.double()

        # the call is made in the user's own cursor method
        expect_violation(
            loop_kind, mode, blocking, "sqlite3.Cursor.fetchall", line_of=MyCursor.double
        )
    finally:
        conn.close()
        again.close()


def test_cursor_subclass_calling_super_reports_once(loop_kind: str, mode: str) -> None:
    """Like Django's ``SQLiteCursorWrapper``: ``execute`` overridden, calling ``super()``."""

    class Wrapper(sqlite3.Cursor):
        def execute(self, sql: str, params: Any = ()) -> Any:  # type: ignore[override]
            return super().execute(sql.replace("%s", "?"), params)

    asyncguard.install("raise")
    conn = sqlite3.connect(":memory:", check_same_thread=False)
    cursor = conn.cursor(factory=Wrapper)

    def blocking() -> None:
        cursor.execute("SELECT %s", (1,))

    try:
        violation = expect_violation(loop_kind, mode, blocking, "sqlite3.Cursor.execute")
        assert violation.call_expr == "sqlite3.Cursor.execute('SELECT %s', …)"
        if mode == "warn":
            assert cursor.fetchall() == [(1,)]
    finally:
        conn.close()


def test_connection_with_its_own_cursor_method() -> None:
    class Special(sqlite3.Connection):
        def cursor(self, factory: Any = None) -> Any:  # type: ignore[override]
            return super().cursor(factory or sqlite3.Cursor)

    asyncguard.install("raise")
    conn = sqlite3.connect(":memory:", factory=Special)
    try:
        assert type(conn.cursor()) is sqlite3.Cursor  # kept as the user wrote it
        assert conn.execute("SELECT 1").fetchall() == [(1,)]
    finally:
        conn.close()


def test_a_factory_that_cannot_be_subclassed_is_left_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Picky(sqlite3.Connection):
        def __init_subclass__(cls, *, flavour: str) -> None:
            super().__init_subclass__()

    asyncguard.install("raise")
    conn = sqlite3.connect(":memory:", factory=Picky)
    try:
        assert type(conn) is Picky  # unguarded, but the application still works
        assert conn.execute("SELECT 1").fetchall() == [(1,)]
    finally:
        conn.close()
    assert "internal error in guarding" in caplog.text


def test_allow_blocking_by_key(loop_kind: str, conn: sqlite3.Connection) -> None:
    def call() -> None:
        with asyncguard.allow_blocking("sqlite3.Connection.execute", "sqlite3.Cursor.fetchall"):
            assert conn.execute("SELECT count(*) FROM t").fetchall() == [(3,)]

    expect_clean_on_loop(loop_kind, call)


def test_excluding_the_family_quiets_existing_connections(conn: sqlite3.Connection) -> None:
    async def main() -> None:
        assert conn.execute("SELECT count(*) FROM t").fetchall() == [(3,)]

    with asyncguard.guarded(mode="raise", exclude=["database"]) as guard:
        run_on("main", main)
    assert guard.violations == []


def test_keys_are_known() -> None:
    known = set(asyncguard.known_calls())
    for key in (
        "sqlite3.connect",
        "sqlite3.Connection.execute",
        "sqlite3.Connection.executemany",
        "sqlite3.Connection.executescript",
        "sqlite3.Connection.commit",
        "sqlite3.Connection.rollback",
        "sqlite3.Connection.backup",
        "sqlite3.Cursor.execute",
        "sqlite3.Cursor.executemany",
        "sqlite3.Cursor.executescript",
        "sqlite3.Cursor.fetchone",
        "sqlite3.Cursor.fetchmany",
        "sqlite3.Cursor.fetchall",
    ):
        assert key in known


def test_uninstall_restores_connect() -> None:
    import sqlite3.dbapi2

    original = sqlite3.connect
    with asyncguard.guarded():
        assert sqlite3.connect is not original
        assert sqlite3.dbapi2.connect is sqlite3.connect
        conn = sqlite3.connect(":memory:")
        conn.close()
    assert sqlite3.connect is original
    assert sqlite3.dbapi2.connect is original
    plain = sqlite3.connect(":memory:")
    assert type(plain) is sqlite3.Connection
    plain.close()


def test_sqlite3_imported_after_install(tmp_path: Path) -> None:
    """The hook is applied when the application imports sqlite3 (a post-import hook)."""
    script = textwrap.dedent(
        """
        import asyncio, sys
        import asyncguard

        from asyncguard._hooks import catalog

        assert "sqlite3" not in sys.modules, "asyncguard must not import sqlite3"
        others = [name for name in catalog.family_names() if name != "database"]
        asyncguard.install("raise", exclude=others)
        import sqlite3

        assert getattr(sqlite3.connect, "__asyncguard_hook__", None) is not None
        conn = sqlite3.connect(":memory:")  # at start-up, off the loop

        async def main():
            try:
                conn.execute("SELECT 1")
            except asyncguard.BlockingCallError as exc:
                print(exc.violation.call)

        asyncio.run(main())
        conn.close()
        """
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "sqlite3.Connection.execute\n"
