"""Opening the SQLite file: pragmas, versioned migrations and clear errors.

`open_database` is the one place that opens the file. It turns on WAL, foreign keys and a busy
timeout, brings the schema up to date (`PRAGMA user_version`, one transaction per migration) and
turns every way the file can be unusable (locked, not a database, read-only, from a newer version)
into a `StorageError` whose message says what to fix, at start-up.

Migrations are the SQLite steps of `storage.schema` (`storage/migrations/sqlite/` or `common/`), applied
in order. A file from before both dialects shared one numbering, at `user_version` 2, is renumbered to 3
first (see `renumber_legacy`).

`Database.run(fn)` executes a synchronous function on aiosqlite's worker thread with the raw
`sqlite3.Connection`: a whole transaction is one hop to that thread, and the thread runs one function
at a time, so calls on one `Database` never interleave.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from storage.interface import StorageError
from storage.schema import Migration, load_migrations, pending

T = TypeVar("T")

DEFAULT_BUSY_TIMEOUT_S = 5.0

MIGRATIONS = load_migrations("sqlite")
SCHEMA_VERSION = MIGRATIONS[-1].version if MIGRATIONS else 0


def split_statements(sql: str) -> list[str]:
    """Split a migration script into complete statements (comments and quoted `;` are respected)."""
    statements: list[str] = []
    buffered = ""
    for line in sql.splitlines(keepends=True):
        buffered += line
        if sqlite3.complete_statement(buffered):
            statements.append(buffered.strip())
            buffered = ""
    rest = "\n".join(ln for ln in buffered.splitlines() if not ln.strip().startswith("--")).strip()
    if rest:
        raise ValueError(f"incomplete SQL statement at the end of a migration: {rest[:80]!r}")
    return statements


def describe_error(err: sqlite3.Error, path: Path, busy_timeout_s: float) -> str:
    """A message that names the file and what to do about `err`."""
    code = (getattr(err, "sqlite_errorcode", None) or 0) & 0xFF
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "locked" in str(err):
        return (
            f"database {path} is locked by another process (waited {busy_timeout_s:g} s): "
            "stop the other program using it, or give it a longer busy timeout"
        )
    if code in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT):
        return (
            f"{path} is not a usable SQLite database ({err}): point DATABASE_PATH at another file "
            "or restore a backup"
        )
    if code in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM):
        return f"database {path} is read-only ({err}): make the file and its folder writable by the bot"
    if code == sqlite3.SQLITE_CANTOPEN:
        return f"cannot open database {path} ({err}): check that its folder exists and is writable"
    if code in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR):
        return f"disk error on database {path} ({err}): check free space and the disk"
    return f"database error on {path}: {err}"


def _is_busy(err: sqlite3.Error) -> bool:
    code = (getattr(err, "sqlite_errorcode", None) or 0) & 0xFF
    return code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "database is locked" in str(err)


@contextmanager
def write_transaction(conn: sqlite3.Connection, busy_timeout_s: float) -> Iterator[None]:
    """`BEGIN IMMEDIATE` … `COMMIT` (rolled back on any error).

    SQLite's busy handler already waits up to the busy timeout for the write lock; if it still
    reports "database is locked" early (WAL recovery, a checkpoint), we retry until the deadline.
    """
    deadline = time.monotonic() + busy_timeout_s
    delay = 0.001
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            break
        except sqlite3.OperationalError as err:
            if not _is_busy(err) or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)  # on the database thread, never the event loop
            delay = min(delay * 2, 0.05)
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@contextmanager
def read_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """A deferred transaction: one consistent snapshot for several reads (never blocks writers)."""
    conn.execute("BEGIN")
    try:
        yield
    finally:
        if conn.in_transaction:
            conn.execute("COMMIT")


def user_version(conn: sqlite3.Connection) -> int:
    """The schema version stored in the file (0 for a new file)."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


# Before the steps of both dialects shared one numbering, SQLite's step 2 was today's steps 2 and 3 in
# one file; only such a file has the partial-refunds column at user_version 2.
_LEGACY_VERSIONS = {2: 3}


def renumber_legacy(conn: sqlite3.Connection, version: int) -> int:
    """The version of a file in today's numbering: a file at `user_version` 2 that already has step 3's
    `usage_ledger.refunded_images` was written by the old numbering, where 2 meant steps 2 and 3 (its
    `user_version` is set to 3). Call inside a write transaction."""
    if version not in _LEGACY_VERSIONS:
        return version
    columns = {str(row[1]) for row in conn.execute("PRAGMA table_info(usage_ledger)")}
    if "refunded_images" not in columns:
        return version
    renumbered = _LEGACY_VERSIONS[version]
    conn.execute(f"PRAGMA user_version = {int(renumbered)}")
    return renumbered


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration], busy_timeout_s: float) -> int:
    """Bring the schema up to the last of `migrations`, each in its own transaction; return the version.

    A file newer than the last migration raises `StorageError`. Another process migrating at the same
    time is fine: each step re-reads the version under the write lock.
    """
    with write_transaction(conn, busy_timeout_s):  # also proves we can take the write lock
        version = renumber_legacy(conn, user_version(conn))
    where = f"database {_db_path(conn)}"
    for migration in pending(migrations, version, where, "DATABASE_PATH at another file"):
        with write_transaction(conn, busy_timeout_s):
            current = user_version(conn)
            if current >= migration.version:
                version = current
                continue
            for statement in split_statements(migration.sql):
                conn.execute(statement)
            # PRAGMA takes no bound parameters; the value is an int from our own list, not user data.
            conn.execute(f"PRAGMA user_version = {int(migration.version)}")
        version = migration.version
    return version


def _db_path(conn: sqlite3.Connection) -> str:
    row = conn.execute("PRAGMA database_list").fetchone()
    return str(row[2]) if row else "?"


def _check_path(path: Path) -> None:
    """Fail early, with a plain message, on paths SQLite would reject obscurely."""
    if path.is_dir():
        raise StorageError(f"database path {path} is a folder: DATABASE_PATH must name a file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StorageError(f"cannot create the folder for database {path}: {err.strerror or err}") from err
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise StorageError(f"database {path} is not readable and writable by this user: fix its permissions")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        # WAL needs the -wal and -shm files next to the database.
        raise StorageError(
            f"folder {path.parent} is not writable ({os.strerror(errno.EACCES)}): "
            "the database needs to create files next to itself"
        )


class Database:
    """One open SQLite file behind one aiosqlite connection."""

    def __init__(self, conn: aiosqlite.Connection, path: Path, busy_timeout_s: float) -> None:
        self._conn = conn
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self._closed = False

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(connection)` on the database thread; SQLite errors become `StorageError`."""
        if self._closed:
            raise StorageError(f"database {self.path} is closed")
        conn = self._conn

        def call() -> T:
            return fn(conn._conn)

        try:
            result: T = await conn._execute(call)  # type: ignore[no-untyped-call]
        except sqlite3.Error as err:
            raise StorageError(describe_error(err, self.path, self.busy_timeout_s)) from err
        return result

    async def close(self) -> None:
        """Close the connection (idempotent)."""
        if not self._closed:
            self._closed = True
            await self._conn.close()


def _prepare(conn: sqlite3.Connection, migrations: Sequence[Migration], busy_timeout_s: float) -> int:
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
    conn.execute("PRAGMA foreign_keys = ON")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StorageError(f"database {_db_path(conn)} cannot use WAL journaling (got {mode!r})")
    # In WAL mode NORMAL loses no committed transaction on a process crash (only on power loss).
    conn.execute("PRAGMA synchronous = NORMAL")
    return migrate(conn, migrations, busy_timeout_s)


async def open_database(
    path: Path | str,
    *,
    busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
    migrations: Sequence[Migration] | None = None,
) -> Database:
    """Open (creating if needed) and migrate the database at `path`; `StorageError` if it is unusable."""
    path = Path(path)
    if busy_timeout_s < 0:
        raise ValueError("busy_timeout_s must be >= 0")
    _check_path(path)
    kwargs: dict[str, Any] = {"timeout": busy_timeout_s, "isolation_level": None}
    try:
        conn = await aiosqlite.connect(path, **kwargs)
    except sqlite3.Error as err:
        raise StorageError(describe_error(err, path, busy_timeout_s)) from err
    db = Database(conn, path, busy_timeout_s)
    chosen = MIGRATIONS if migrations is None else tuple(migrations)
    try:
        await db.run(lambda c: _prepare(c, chosen, busy_timeout_s))
    except BaseException:
        with suppress(Exception):
            await db.close()
        raise
    return db
