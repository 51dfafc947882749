"""The storage interface on PostgreSQL (asyncpg), for several bot processes sharing one database.

`open_pg_store(url, defaults)` connects a pool, brings the schema up to date and returns a
`PostgresStore`: the `storage.store.SqlStore` operations (the same programs, and so the same
semantics, as the SQLite store) and `storage.queue.JobQueue` (`storage.pg_queue`): the jobs table is
the fair queue every process claims from.

- Migrations are the PostgreSQL steps of `storage.schema` (`storage/migrations/postgres/` or `common/`),
  recorded in `schema_version`, each applied in one transaction while holding an advisory lock, so
  processes opening at once apply each one once.
- `reserve` is atomic across processes: its transaction first takes a transaction-scoped advisory lock
  on the (guild, member) pair, so one member's check-and-spend steps run one at a time everywhere,
  while different members proceed in parallel.
- Every failure to reach or use the server becomes a `StorageError` naming the server (never the
  password) and what to check.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg

from storage import ops, settings_ops
from storage.interface import Limits, NewJob, Refusal, Reservation, StorageError
from storage.pg_queue import PgJobQueue, status_count
from storage.schema import Migration, load_migrations, pending
from storage.sql import POSTGRES, Fetch, Program, Step, run_async
from storage.store import Access, SqlStore

T = TypeVar("T")

DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_POOL_SIZE = 10
_PG_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)

PG_MIGRATIONS = load_migrations("postgres")
PG_SCHEMA_VERSION = PG_MIGRATIONS[-1].version


# migrations ---------------------------------------------------------------------------------------


async def schema_version(conn: asyncpg.Connection) -> int:
    """The schema version in the connection's schema (0 before the first migration)."""
    exists = await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL")
    if not exists:
        return 0
    return int(await conn.fetchval("SELECT COALESCE(max(version), 0) FROM schema_version"))


async def migrate(conn: asyncpg.Connection, migrations: Sequence[Migration] = PG_MIGRATIONS) -> int:
    """Apply the pending `migrations`, each in one transaction, under an advisory lock (per schema)
    that makes concurrent callers wait for each other; return the resulting version.

    The step numbers are those PostgreSQL always had (1 initial, 2 job_queue, 3 message index and
    partial refunds), so a schema of any earlier release needs no renumbering."""
    lock_sql = "hashtextextended('imagine-migrate:' || current_schema(), 0)"
    await conn.execute(f"SELECT pg_advisory_lock({lock_sql})")
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
            " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        version = await schema_version(conn)
        where, instead = "the PostgreSQL database", "DATABASE_URL at another database"
        for migration in pending(migrations, version, where, instead):
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_version (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
            version = migration.version
        return version
    finally:
        await conn.execute(f"SELECT pg_advisory_unlock({lock_sql})")


# errors -------------------------------------------------------------------------------------------


def redact_url(url: str) -> str:
    """`url` without its password (for messages and logs)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable DATABASE_URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def describe_connect_error(err: BaseException, url: str) -> str:
    """A message that names the server and what to check about `err`."""
    where = redact_url(url)
    if isinstance(err, asyncpg.InvalidPasswordError):
        return f"PostgreSQL at {where} refused the password: check the user and password in DATABASE_URL"
    if isinstance(err, asyncpg.InvalidAuthorizationSpecificationError):
        return (
            f"PostgreSQL at {where} refused the login ({err}): check the user in DATABASE_URL and pg_hba.conf"
        )
    if isinstance(err, asyncpg.InvalidCatalogNameError):
        return f"PostgreSQL at {where}: {err}: create it (createdb) or fix the database name in DATABASE_URL"
    if isinstance(err, asyncpg.InsufficientPrivilegeError):
        return f"PostgreSQL at {where}: {err}: grant the bot's user rights on its database and schema"
    if isinstance(err, TimeoutError):
        return f"PostgreSQL at {where} did not answer in time: check the host, port and firewall"
    if isinstance(err, OSError):
        reason = err.strerror or str(err) or type(err).__name__
        return (
            f"cannot reach PostgreSQL at {where} ({reason}): is the server running, and the host/port right?"
        )
    if isinstance(err, asyncpg.ClientConfigurationError | ValueError):
        return f"DATABASE_URL {where} is not usable: {err}"
    return f"PostgreSQL at {where}: {type(err).__name__}: {err}"


# the store ----------------------------------------------------------------------------------------


class PostgresStore(SqlStore, PgJobQueue):
    """`Store` and `JobQueue` on a PostgreSQL database, through an asyncpg pool."""

    dialect = POSTGRES

    def __init__(self, pool: asyncpg.Pool, defaults: Limits, url: str) -> None:
        super().__init__(defaults)
        self._pool = pool
        self._where = redact_url(url)
        self._closed = False

    @property
    def pool(self) -> asyncpg.Pool:
        """The connection pool (tests, benchmarks and `storage.pg_signals`)."""
        return self._pool

    async def close(self) -> None:
        """Close every connection (idempotent)."""
        if not self._closed:
            self._closed = True
            await self._pool.close()

    @asynccontextmanager
    async def _conn(self, *, transaction: bool = False) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection (in a transaction if asked); server errors become `StorageError`."""
        if self._closed:
            raise StorageError(f"the PostgreSQL store for {self._where} is closed")
        try:
            async with self._pool.acquire() as conn:
                if transaction:
                    async with conn.transaction():
                        yield conn
                else:
                    yield conn
        except StorageError:
            raise
        except _PG_ERRORS as err:
            raise StorageError(f"PostgreSQL at {self._where}: {type(err).__name__}: {err}") from err

    async def _run(self, program: Program[T], access: Access) -> T:
        """Run `program` on one pooled connection; a snapshot in a repeatable-read transaction."""
        async with self._conn(transaction=access is Access.SNAPSHOT) as conn:
            if access is Access.SNAPSHOT:
                await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            return await run_async(program, _steps(conn))

    async def reserve(self, job: NewJob, role_ids: tuple[int, ...], now: float) -> Reservation | Refusal:
        """Check every limit and, if all pass, record the spend and queue the job: one transaction,
        serialised per member across processes by a transaction-scoped advisory lock."""
        return await self._as_member(
            job.guild_id, job.owner_id, ops.reserve(self.dialect, self.defaults, job, role_ids, now)
        )

    async def set_macro(self, guild_id: int, user_id: int, name: str, value: str, limit: int) -> bool:
        """Add or replace a member's macro; False when adding it would pass `limit`. Under the member's
        lock: two concurrent statements would each count the macros before the other's insert."""
        return bool(
            await self._as_member(
                guild_id, user_id, settings_ops.set_macro(guild_id, user_id, name, value, limit)
            )
        )

    async def _as_member(self, guild_id: int, user_id: int, program: Program[T]) -> T:
        """Run `program` in one transaction holding the member's advisory lock (one per guild and
        member, across processes)."""
        async with self._conn(transaction=True) as conn:
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended("
                "'imagine-member:' || $1::bigint || ':' || $2::bigint, 0))",
                guild_id,
                user_id,
            )
            return await run_async(program, _steps(conn))


def _steps(conn: asyncpg.Connection) -> Callable[[Step], Awaitable[Any]]:
    """How `run_async` answers a step on `conn`: the rows of a `Fetch`, the row count of an `Execute`."""

    async def do(step: Step) -> Any:
        if isinstance(step, Fetch):
            return await conn.fetch(step.sql, *step.args)
        return status_count(await conn.execute(step.sql, *step.args))

    return do


async def open_pg_store(
    url: str,
    defaults: Limits,
    *,
    min_size: int = 1,
    max_size: int = DEFAULT_POOL_SIZE,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
) -> PostgresStore:
    """Connect to `url` (postgresql://…), migrate, and return the store; `StorageError` if the server
    cannot be reached, refuses the login, or holds a newer schema."""
    try:
        pool = await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            timeout=connect_timeout_s,
        )
    except (*_PG_ERRORS, ValueError) as err:
        raise StorageError(describe_connect_error(err, url)) from err
    assert pool is not None
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
    except BaseException as err:
        with suppress(Exception):
            await pool.close()
        if isinstance(err, _PG_ERRORS):
            raise StorageError(describe_connect_error(err, url)) from err
        raise
    return PostgresStore(pool, defaults, url)


__all__ = [
    "PG_MIGRATIONS",
    "PG_SCHEMA_VERSION",
    "PostgresStore",
    "describe_connect_error",
    "migrate",
    "open_pg_store",
    "redact_url",
    "schema_version",
]
