"""`SqliteStore`: the `storage.interface.Store` on one SQLite file.

Open it with `store = await open_store(path, defaults)` or `async with open_store(path, defaults) as store`.
Each operation (`storage.store.SqlStore`, over `storage.ops`) is one function run on the connection's
thread, inside one transaction; writes use `BEGIN IMMEDIATE`, so several processes sharing the file
never overspend (they queue on SQLite's write lock, waiting up to the busy timeout).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Generator
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from storage.db import DEFAULT_BUSY_TIMEOUT_S, Database, open_database, read_transaction, write_transaction
from storage.interface import LedgerEntry, Limits
from storage.sql import SQLITE, Fetch, Program, Step, run_sync
from storage.store import Access, SqlStore

__all__ = ["LedgerEntry", "SqliteStore", "open_store"]  # LedgerEntry lives in storage.interface

T = TypeVar("T")


class SqliteStore(SqlStore):
    """Limits, usage, jobs and blocked words in one SQLite file (see `storage.interface.Store`)."""

    dialect = SQLITE

    def __init__(self, db: Database, defaults: Limits) -> None:
        super().__init__(defaults)
        self._db = db

    @property
    def path(self) -> Path:
        """The database file."""
        return self._db.path

    async def close(self) -> None:
        """Close the database (idempotent)."""
        await self._db.close()

    async def _run(self, program: Program[T], access: Access) -> T:
        """Run `program` on the database thread: `BEGIN IMMEDIATE` for a write, else `BEGIN`."""
        timeout = self._db.busy_timeout_s

        def tx(conn: sqlite3.Connection) -> T:
            def do(step: Step) -> Any:
                cursor = conn.execute(SQLITE.sql(step.sql), step.args)
                return cursor.fetchall() if isinstance(step, Fetch) else cursor.rowcount

            with write_transaction(conn, timeout) if access is Access.WRITE else read_transaction(conn):
                return run_sync(program, do)

        return await self._db.run(tx)


class _Opening:
    """What `open_store` returns: await it, or use it with `async with` (closes on exit)."""

    def __init__(self, path: Path, defaults: Limits, busy_timeout_s: float) -> None:
        self._args = (path, defaults, busy_timeout_s)
        self._store: SqliteStore | None = None

    async def _open(self) -> SqliteStore:
        path, defaults, timeout = self._args
        return SqliteStore(await open_database(path, busy_timeout_s=timeout), defaults)

    def __await__(self) -> Generator[Any, None, SqliteStore]:
        return self._open().__await__()

    async def __aenter__(self) -> SqliteStore:
        self._store = await self._open()
        return self._store

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._store is not None:
            await self._store.close()


def open_store(
    path: Path | str, defaults: Limits, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S
) -> _Opening:
    """Open (create, migrate) the store at `path`; `StorageError` with a clear message if unusable.

    `defaults` are the settings' limits, used where neither guild nor overrides set a field.
    Use as `store = await open_store(...)` (then `await store.close()`) or
    `async with open_store(...) as store`.
    """
    return _Opening(Path(path), defaults, busy_timeout_s)
