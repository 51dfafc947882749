"""The storage interface on PostgreSQL (asyncpg), for several bot processes sharing one database.

`open_pg_store(url, defaults)` connects a pool, brings the schema up to date and returns a
`PostgresStore`, which implements `storage.interface.Store` with the same semantics as the SQLite
store (the limit arithmetic is `storage.limits`, shared by both) and `storage.queue.JobQueue`: the jobs
table is the fair queue every process claims from.

- Migrations are `storage/pg_migrations/NNNN_name.sql`, recorded in `schema_version`, each applied in
  one transaction while holding an advisory lock, so processes opening at once apply each one once.
- `reserve` is atomic across processes: its transaction first takes a transaction-scoped advisory lock
  on the (guild, member) pair, so one member's check-and-spend steps run one at a time everywhere,
  while different members proceed in parallel.
- Every failure to reach or use the server becomes a `StorageError` naming the server (never the
  password) and what to check.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from importlib import resources
from urllib.parse import urlsplit

import asyncpg

from storage import limits as limit_math
from storage.interface import (
    JobRecord,
    JobState,
    LedgerEntry,
    Limits,
    LimitsPatch,
    LimitsView,
    NewJob,
    Refusal,
    Reservation,
    Scope,
    StorageError,
    Usage,
)

DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_POOL_SIZE = 10
_MIGRATION_NAME = re.compile(r"^(\d{4})_([A-Za-z0-9_]+)\.sql$")
_LIMIT_COLUMNS = "images_per_hour, images_per_day, max_queued, cooldown_seconds"
_CLAIM_SLACK = 32  # candidates beyond `limit` that claim_next considers, for claimers racing it
_JOB_COLUMNS = """
    j.job_id, j.guild_id, j.channel_id, j.owner_id, j.request_json, j.images, j.state, j.created_at,
    j.interaction_id, j.interaction_token, j.token_expires_at, j.parent_job_id, j.parent_index, j.error,
    j.seeds, j.image_paths, j.result_message_id, j.result_channel_id, j.batch_key,
    COALESCE(l.refunded, FALSE) AS refunded
"""
_JOB_FROM = "jobs j LEFT JOIN usage_ledger l ON l.job_id = j.job_id"
_PG_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


# migrations ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PgMigration:
    """One schema step: applying it takes the schema from `version - 1` to `version`."""

    version: int
    name: str
    sql: str


def load_pg_migrations() -> tuple[PgMigration, ...]:
    """The shipped PostgreSQL migrations, in order; versions run 1, 2, 3, … without gaps."""
    folder = resources.files("storage").joinpath("pg_migrations")
    found: list[PgMigration] = []
    for entry in folder.iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(PgMigration(int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise RuntimeError(f"migration {migration.version:04d}_{migration.name} is out of sequence")
    return tuple(found)


PG_MIGRATIONS = load_pg_migrations()
PG_SCHEMA_VERSION = PG_MIGRATIONS[-1].version


async def schema_version(conn: asyncpg.Connection) -> int:
    """The schema version in the connection's schema (0 before the first migration)."""
    exists = await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL")
    if not exists:
        return 0
    return int(await conn.fetchval("SELECT COALESCE(max(version), 0) FROM schema_version"))


async def migrate(conn: asyncpg.Connection, migrations: Sequence[PgMigration] = PG_MIGRATIONS) -> int:
    """Apply the pending `migrations`, each in one transaction, under an advisory lock (per schema)
    that makes concurrent callers wait for each other; return the resulting version."""
    latest = migrations[-1].version if migrations else 0
    lock_sql = "hashtextextended('imagine-migrate:' || current_schema(), 0)"
    await conn.execute(f"SELECT pg_advisory_lock({lock_sql})")
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
            " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        version = await schema_version(conn)
        if version > latest:
            raise StorageError(
                f"the PostgreSQL database has schema version {version}, but this version of imagine only "
                f"knows up to {latest}: upgrade imagine, or point DATABASE_URL at another database"
            )
        for migration in migrations:
            if migration.version <= version:
                continue
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


# records ------------------------------------------------------------------------------------------


def _patch(row: asyncpg.Record | None) -> LimitsPatch | None:
    if row is None:
        return None
    return LimitsPatch(
        images_per_hour=row["images_per_hour"],
        images_per_day=row["images_per_day"],
        max_queued=row["max_queued"],
        cooldown_seconds=row["cooldown_seconds"],
    )


def _job(row: asyncpg.Record) -> JobRecord:
    return JobRecord(
        job_id=row["job_id"],
        guild_id=row["guild_id"],
        channel_id=row["channel_id"],
        owner_id=row["owner_id"],
        request_json=row["request_json"],
        images=row["images"],
        state=JobState(row["state"]),
        created_at=row["created_at"],
        interaction_id=row["interaction_id"],
        interaction_token=row["interaction_token"],
        token_expires_at=row["token_expires_at"],
        parent_job_id=row["parent_job_id"],
        parent_index=row["parent_index"],
        error=row["error"],
        seeds=tuple(row["seeds"]),
        image_paths=tuple(row["image_paths"]),
        result_message_id=row["result_message_id"],
        result_channel_id=row["result_channel_id"],
        refunded=row["refunded"],
        batch_key=row["batch_key"],
    )


def _status_count(status: str) -> int:
    """The row count of a command status such as `UPDATE 3`."""
    return int(status.rsplit(" ", 1)[-1])


# the store ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Member:
    """What `reserve` and `usage` read about one member, in one transaction."""

    limits: Limits
    spends: list[tuple[float, int]]  # (at, images not refunded) after now - DAY_S, oldest first
    last_spend_at: float | None  # the latest spend not wholly refunded (the cooldown runs from it)
    active: int  # queued and running jobs


class PostgresStore:
    """`Store` and `JobQueue` on a PostgreSQL database, through an asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool, defaults: Limits, url: str) -> None:
        self._pool = pool
        self.defaults = defaults
        self._where = redact_url(url)
        self._closed = False

    @property
    def pool(self) -> asyncpg.Pool:
        """The connection pool (tests and benchmarks)."""
        return self._pool

    async def close(self) -> None:
        """Close every connection (idempotent)."""
        if not self._closed:
            self._closed = True
            await self._pool.close()

    async def __aenter__(self) -> PostgresStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

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

    # limits ---------------------------------------------------------------------------------------

    async def _read_limits(
        self, conn: asyncpg.Connection, guild_id: int, user_id: int, role_ids: Sequence[int]
    ) -> Limits:
        rows = await conn.fetch(
            f"""
            SELECT 'guild' AS level, {_LIMIT_COLUMNS} FROM guild_limits WHERE guild_id = $1
            UNION ALL
            SELECT 'role', {_LIMIT_COLUMNS} FROM role_limits
            WHERE guild_id = $1 AND role_id = ANY($3::bigint[])
            UNION ALL
            SELECT 'user', {_LIMIT_COLUMNS} FROM user_limits WHERE guild_id = $1 AND user_id = $2
            """,
            guild_id,
            user_id,
            list(role_ids),
        )
        guild = next((_patch(r) for r in rows if r["level"] == "guild"), None)
        user = next((_patch(r) for r in rows if r["level"] == "user"), None)
        roles = [p for r in rows if r["level"] == "role" and (p := _patch(r)) is not None]
        return limit_math.resolve(self.defaults, guild, roles, user)

    async def _read_member(
        self, conn: asyncpg.Connection, guild_id: int, user_id: int, role_ids: Sequence[int], now: float
    ) -> _Member:
        limits = await self._read_limits(conn, guild_id, user_id, role_ids)
        rows = await conn.fetch(
            """
            SELECT at, images - refunded_images AS images FROM usage_ledger
            WHERE guild_id = $1 AND user_id = $2 AND NOT refunded AND at > $3
            ORDER BY at, id
            """,
            guild_id,
            user_id,
            now - limit_math.DAY_S,
        )
        facts = await conn.fetchrow(
            """
            SELECT
                (SELECT max(at) FROM usage_ledger
                 WHERE guild_id = $1 AND user_id = $2 AND NOT refunded) AS last_spend_at,
                (SELECT count(*) FROM jobs
                 WHERE guild_id = $1 AND owner_id = $2 AND state IN ('queued', 'running')) AS active
            """,
            guild_id,
            user_id,
        )
        spends = [(float(r["at"]), int(r["images"])) for r in rows]
        last = facts["last_spend_at"]
        return _Member(limits, spends, None if last is None else float(last), int(facts["active"]))

    async def reserve(self, job: NewJob, role_ids: tuple[int, ...], now: float) -> Reservation | Refusal:
        """Check every limit and, if all pass, record the spend and queue the job: one transaction,
        serialised per member across processes by a transaction-scoped advisory lock."""
        if job.images < 1:
            raise ValueError(f"a job spends at least one image, not {job.images}")
        async with self._conn(transaction=True) as conn:
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended("
                "'imagine-member:' || $1::bigint || ':' || $2::bigint, 0))",
                job.guild_id,
                job.owner_id,
            )
            member = await self._read_member(conn, job.guild_id, job.owner_id, role_ids, now)
            refusal = limit_math.check(
                member.limits, member.spends, member.last_spend_at, member.active, job.images, now
            )
            if refusal is not None:
                return refusal
            try:
                row = await conn.fetchrow(
                    f"""
                    WITH j AS (
                        INSERT INTO jobs (job_id, guild_id, channel_id, owner_id, request_json, images, state,
                            created_at, interaction_id, interaction_token, token_expires_at, parent_job_id,
                            parent_index, batch_key)
                        VALUES ($1, $2, $3, $4, $5, $6, 'queued', $7, $8, $9, $10, $11, $12, $13)
                        RETURNING *
                    ), l AS (
                        INSERT INTO usage_ledger (guild_id, user_id, job_id, images, at)
                        SELECT guild_id, owner_id, job_id, images, created_at FROM j
                        RETURNING job_id, refunded
                    )
                    SELECT {_JOB_COLUMNS} FROM j LEFT JOIN l ON l.job_id = j.job_id
                    """,
                    job.job_id,
                    job.guild_id,
                    job.channel_id,
                    job.owner_id,
                    job.request_json,
                    job.images,
                    now,
                    job.interaction_id,
                    job.interaction_token,
                    job.token_expires_at,
                    job.parent_job_id,
                    job.parent_index,
                    job.batch_key,
                )
            except asyncpg.UniqueViolationError as err:
                raise ValueError(f"job id {job.job_id!r} already exists") from err
            return Reservation(_job(row))

    async def refund(self, job_id: str, now: float) -> bool:
        """Give back what is left of a job's spend, once."""
        async with self._conn() as conn:
            status = await conn.execute(
                "UPDATE usage_ledger SET refunded = TRUE, refunded_images = images, refunded_at = $2 "
                "WHERE job_id = $1 AND NOT refunded",
                job_id,
                now,
            )
        return _status_count(status) == 1

    async def refund_images(self, job_id: str, count: int, now: float) -> bool:
        """Give back up to `count` of the job's images, at most what is left unrefunded (see
        `storage.interface.Store.refund_images`); False if nothing was left or the job is unknown."""
        limit_math.validate_refund_count(count)
        async with self._conn() as conn:
            status = await conn.execute(
                """
                UPDATE usage_ledger SET refunded_images = LEAST(images, refunded_images + $2),
                    refunded = refunded_images + $2 >= images, refunded_at = $3
                WHERE job_id = $1 AND NOT refunded
                """,
                job_id,
                count,
                now,
            )
        return _status_count(status) == 1

    async def effective_limits(self, guild_id: int, user_id: int, role_ids: tuple[int, ...]) -> Limits:
        """User override, else the most generous role override, else guild default, else settings."""
        async with self._conn() as conn:
            return await self._read_limits(conn, guild_id, user_id, role_ids)

    async def usage(self, guild_id: int, user_id: int, role_ids: tuple[int, ...], now: float) -> Usage:
        """What the member spent in each window, what waits, and when each refills."""
        async with self._conn(transaction=True) as conn:
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            member = await self._read_member(conn, guild_id, user_id, role_ids, now)
        return limit_math.usage(member.limits, member.spends, member.last_spend_at, member.active, now)

    async def show_limits(
        self, guild_id: int, user_id: int | None = None, role_ids: tuple[int, ...] = ()
    ) -> LimitsView:
        """The guild default, every role override of the guild, and the member's if asked."""
        async with self._conn(transaction=True) as conn:
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            guild = _patch(
                await conn.fetchrow(
                    f"SELECT {_LIMIT_COLUMNS} FROM guild_limits WHERE guild_id = $1", guild_id
                )
            )
            role_rows = await conn.fetch(
                f"SELECT role_id, {_LIMIT_COLUMNS} FROM role_limits WHERE guild_id = $1 ORDER BY role_id",
                guild_id,
            )
            user: LimitsPatch | None = None
            effective: Limits | None = None
            if user_id is not None:
                user = _patch(
                    await conn.fetchrow(
                        f"SELECT {_LIMIT_COLUMNS} FROM user_limits WHERE guild_id = $1 AND user_id = $2",
                        guild_id,
                        user_id,
                    )
                )
                effective = await self._read_limits(conn, guild_id, user_id, role_ids)
        roles = {int(r["role_id"]): p for r in role_rows if (p := _patch(r)) is not None}
        return LimitsView(
            guild_default=guild or LimitsPatch(),
            role_overrides=roles,
            user_override=user,
            effective=effective,
        )

    async def set_limits(
        self, guild_id: int, scope: Scope, target_id: int | None, patch: LimitsPatch
    ) -> None:
        """Set the fields `patch` gives on the guild default (`target_id` None), a role or a user
        (others unchanged). `UNLIMITED` sets a count to unlimited."""
        table, keys, key_values = _scope_table(guild_id, scope, target_id)
        limit_math.validate_patch(patch)
        values = [patch.images_per_hour, patch.images_per_day, patch.max_queued, patch.cooldown_seconds]
        names = _LIMIT_COLUMNS.split(", ")
        first = len(key_values) + 1
        params = ", ".join(f"${i}" for i in range(1, first + len(names)))
        updates = ", ".join(f"{n} = COALESCE(EXCLUDED.{n}, {table}.{n})" for n in names)
        async with self._conn() as conn:
            await conn.execute(
                f"INSERT INTO {table} ({', '.join(keys)}, {_LIMIT_COLUMNS}) VALUES ({params}) "
                f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}",
                *key_values,
                *values,
            )

    async def reset_limits(self, guild_id: int, scope: Scope, target_id: int | None) -> bool:
        """Remove an override (or the guild default); False if there was none."""
        table, keys, key_values = _scope_table(guild_id, scope, target_id)
        where = " AND ".join(f"{k} = ${i}" for i, k in enumerate(keys, start=1))
        async with self._conn() as conn:
            status = await conn.execute(f"DELETE FROM {table} WHERE {where}", *key_values)
        return _status_count(status) > 0

    # blocked words --------------------------------------------------------------------------------

    async def add_blocked_word(self, guild_id: int, phrase: str) -> bool:
        """Block `phrase` (normalised) in the guild; False if it already was."""
        norm = limit_math.checked_phrase(phrase)
        async with self._conn() as conn:
            status = await conn.execute(
                "INSERT INTO blocked_words (guild_id, phrase) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                guild_id,
                norm,
            )
        return _status_count(status) == 1

    async def remove_blocked_word(self, guild_id: int, phrase: str) -> bool:
        """Unblock `phrase`; False if it was not blocked."""
        norm = limit_math.checked_phrase(phrase)
        async with self._conn() as conn:
            status = await conn.execute(
                "DELETE FROM blocked_words WHERE guild_id = $1 AND phrase = $2", guild_id, norm
            )
        return _status_count(status) == 1

    async def blocked_words(self, guild_id: int) -> list[str]:
        """The guild's blocked phrases, sorted."""
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT phrase FROM blocked_words WHERE guild_id = $1 ORDER BY phrase", guild_id
            )
        return [r["phrase"] for r in rows]

    # jobs -----------------------------------------------------------------------------------------

    async def _jobs(self, where: str, *args: object) -> list[JobRecord]:
        async with self._conn() as conn:
            rows = await conn.fetch(f"SELECT {_JOB_COLUMNS} FROM {_JOB_FROM} WHERE {where}", *args)
        return [_job(r) for r in rows]

    async def get_job(self, job_id: str) -> JobRecord | None:
        """The job, or None."""
        found = await self._jobs("j.job_id = $1", job_id)
        return found[0] if found else None

    async def job_by_message(self, message_id: int) -> JobRecord | None:
        """The job whose result was posted as message `message_id`, or None."""
        found = await self._jobs(
            "j.result_message_id = $1 ORDER BY j.created_at DESC, j.job_id DESC LIMIT 1", message_id
        )
        return found[0] if found else None

    async def set_job_state(self, job_id: str, state: JobState, error: str | None = None) -> None:
        """Set a job's state and error text (None clears it); any state but running ends its lease.
        KeyError if the job is unknown."""
        async with self._conn() as conn:
            status = await conn.execute(
                """
                UPDATE jobs SET state = $2, error = $3,
                    lease_owner = CASE WHEN $2 = 'running' THEN lease_owner END,
                    lease_expires_at = CASE WHEN $2 = 'running' THEN lease_expires_at END
                WHERE job_id = $1
                """,
                job_id,
                JobState(state).value,
                error,
            )
        _found(status, job_id)

    async def record_images(self, job_id: str, seeds: tuple[int, ...], image_paths: tuple[str, ...]) -> None:
        """Mark the job done with its saved images (not yet delivered); ends its lease. KeyError if
        the job is unknown."""
        async with self._conn() as conn:
            status = await conn.execute(
                """
                UPDATE jobs SET state = 'done', seeds = $2, image_paths = $3, error = NULL,
                    lease_owner = NULL, lease_expires_at = NULL
                WHERE job_id = $1
                """,
                job_id,
                [int(x) for x in seeds],
                [str(x) for x in image_paths],
            )
        _found(status, job_id)

    async def record_delivery(self, job_id: str, message_id: int, channel_id: int) -> None:
        """Remember the message that carries the job's result. KeyError if the job is unknown."""
        async with self._conn() as conn:
            status = await conn.execute(
                "UPDATE jobs SET result_message_id = $2, result_channel_id = $3 WHERE job_id = $1",
                job_id,
                message_id,
                channel_id,
            )
        _found(status, job_id)

    async def unfinished_jobs(self) -> list[JobRecord]:
        """Queued or running jobs, oldest first."""
        return await self._jobs("j.state IN ('queued', 'running') ORDER BY j.created_at, j.job_id")

    async def undelivered_jobs(self) -> list[JobRecord]:
        """Done jobs whose result was never posted, oldest first."""
        return await self._jobs(
            "j.state = 'done' AND j.result_message_id IS NULL ORDER BY j.created_at, j.job_id"
        )

    async def queued_jobs(self, guild_id: int) -> list[JobRecord]:
        """Queued and running jobs of a guild, oldest first."""
        return await self._jobs(
            "j.guild_id = $1 AND j.state IN ('queued', 'running') ORDER BY j.created_at, j.job_id", guild_id
        )

    # audit ----------------------------------------------------------------------------------------

    async def ledger(self, guild_id: int, user_id: int | None = None) -> list[LedgerEntry]:
        """The guild's usage ledger (optionally one member's), oldest first."""
        async with self._conn() as conn:
            rows = await conn.fetch(
                """
                SELECT user_id, job_id, images, at, refunded, refunded_images FROM usage_ledger
                WHERE guild_id = $1 AND ($2::bigint IS NULL OR user_id = $2) ORDER BY at, id
                """,
                guild_id,
                user_id,
            )
        return [
            LedgerEntry(r["user_id"], r["job_id"], r["images"], r["at"], r["refunded"], r["refunded_images"])
            for r in rows
        ]

    # the shared queue -----------------------------------------------------------------------------

    async def claim_next(
        self,
        worker_id: str,
        now: float,
        lease_s: float,
        batch_key: str | None = None,
        limit: int = 1,
    ) -> list[JobRecord]:
        """Claim up to `limit` queued jobs in round-robin order by owner (see `storage.queue`)."""
        if limit < 1:
            raise ValueError("limit must be >= 1")
        if lease_s <= 0:
            raise ValueError("lease_s must be > 0")
        async with self._conn(transaction=True) as conn:
            # Each owner's k-th queued job comes in round k; within a round, the owner served least
            # recently (never: first) leads. The fair order is computed once, unlocked, for a few more
            # candidates than asked; then they are locked in that order, and SKIP LOCKED passes over
            # those another claimer is taking. (A join of the ranking to `jobs` instead can plan
            # badly, quadratic, on a table without statistics yet.)
            ids = await conn.fetch(
                """
                WITH c AS (
                    SELECT ARRAY(
                        SELECT r.job_id FROM (
                            SELECT q.job_id, q.created_at, o.last_served,
                                row_number() OVER (
                                    PARTITION BY q.guild_id, q.owner_id ORDER BY q.created_at, q.job_id
                                ) AS turn
                            FROM jobs q LEFT JOIN queue_owners o
                                ON o.guild_id = q.guild_id AND o.owner_id = q.owner_id
                            WHERE q.state = 'queued' AND ($2::text IS NULL OR q.batch_key = $2)
                        ) r
                        ORDER BY r.turn, r.last_served NULLS FIRST, r.created_at, r.job_id
                        LIMIT $3
                    ) AS ids
                )
                SELECT j.job_id FROM jobs j, c
                WHERE j.job_id = ANY(c.ids) AND j.state = 'queued'
                ORDER BY array_position(c.ids, j.job_id)
                LIMIT $1
                FOR UPDATE OF j SKIP LOCKED
                """,
                limit,
                batch_key,
                limit + _CLAIM_SLACK,
            )
            if not ids:
                return []
            order = [r["job_id"] for r in ids]
            rows = await conn.fetch(
                f"""
                WITH j AS (
                    UPDATE jobs SET state = 'running', lease_owner = $2, lease_expires_at = $3,
                        claimed_at = $4
                    WHERE job_id = ANY($1::text[])
                    RETURNING *
                )
                SELECT {_JOB_COLUMNS} FROM j LEFT JOIN usage_ledger l ON l.job_id = j.job_id
                """,
                order,
                worker_id,
                now + lease_s,
                now,
            )
            by_id = {r["job_id"]: _job(r) for r in rows}
            claimed = [by_id[i] for i in order]
            # The owners move to the back of the rotation in the order they were served. Their rows
            # are written in one fixed order (by key), whatever the serving order: two claimers
            # upserting the same owners in different orders would deadlock.
            served: dict[tuple[int, int], None] = {}
            for job in claimed:
                served.pop((job.guild_id, job.owner_id), None)
                served[(job.guild_id, job.owner_id)] = None
            numbers = sorted(
                r[0]
                for r in await conn.fetch(
                    "SELECT nextval('queue_serve_seq') FROM generate_series(1, $1::int)", len(served)
                )
            )
            ranked = sorted(zip(served, numbers, strict=True))
            await conn.execute(
                """
                INSERT INTO queue_owners (guild_id, owner_id, last_served)
                SELECT s.guild_id, s.owner_id, s.last_served
                FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS s(guild_id, owner_id, last_served)
                ORDER BY s.guild_id, s.owner_id
                ON CONFLICT (guild_id, owner_id) DO UPDATE SET last_served = EXCLUDED.last_served
                """,
                [g for (g, _), _ in ranked],
                [o for (_, o), _ in ranked],
                [n for _, n in ranked],
            )
        return claimed

    async def renew_lease(
        self, job_ids: Sequence[str], worker_id: str, now: float, lease_s: float
    ) -> list[str]:
        """Extend the leases `worker_id` still holds; returns the ids renewed."""
        async with self._conn() as conn:
            rows = await conn.fetch(
                """
                UPDATE jobs SET lease_expires_at = $3
                WHERE job_id = ANY($1::text[]) AND state = 'running' AND lease_owner = $2
                RETURNING job_id
                """,
                list(job_ids),
                worker_id,
                now + lease_s,
            )
        renewed = {r["job_id"] for r in rows}
        return [i for i in job_ids if i in renewed]

    async def complete_claimed(
        self, job_id: str, worker_id: str, seeds: tuple[int, ...], image_paths: tuple[str, ...]
    ) -> bool:
        """Mark the job done with its images only if `worker_id` still holds its lease."""
        async with self._conn() as conn:
            status = await conn.execute(
                """
                UPDATE jobs SET state = 'done', seeds = $3, image_paths = $4, error = NULL,
                    lease_owner = NULL, lease_expires_at = NULL
                WHERE job_id = $1 AND state = 'running' AND lease_owner = $2
                """,
                job_id,
                worker_id,
                [int(x) for x in seeds],
                [str(x) for x in image_paths],
            )
        return _status_count(status) == 1

    async def release(self, job_ids: Sequence[str], worker_id: str) -> list[str]:
        """Put the jobs `worker_id` holds back in the queue; returns the ids released."""
        async with self._conn() as conn:
            rows = await conn.fetch(
                """
                UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_expires_at = NULL
                WHERE job_id = ANY($1::text[]) AND state = 'running' AND lease_owner = $2
                RETURNING job_id
                """,
                list(job_ids),
                worker_id,
            )
        released = {r["job_id"] for r in rows}
        return [i for i in job_ids if i in released]

    async def reclaim_expired(self, now: float) -> int:
        """Running jobs whose lease ended at or before `now` go back to the queue (no new spend)."""
        async with self._conn() as conn:
            status = await conn.execute(
                """
                UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_expires_at = NULL
                WHERE state = 'running' AND lease_expires_at <= $1
                """,
                now,
            )
        return _status_count(status)


def _scope_table(guild_id: int, scope: Scope, target_id: int | None) -> tuple[str, list[str], list[int]]:
    """The table, key columns and key values that `scope`/`target_id` address."""
    scope = Scope(scope)
    if scope is Scope.GUILD:
        if target_id is not None:
            raise ValueError("the guild default takes no target id")
        return "guild_limits", ["guild_id"], [guild_id]
    if target_id is None:
        raise ValueError(f"a {scope.value} override needs the {scope.value}'s id")
    if scope is Scope.ROLE:
        return "role_limits", ["guild_id", "role_id"], [guild_id, target_id]
    return "user_limits", ["guild_id", "user_id"], [guild_id, target_id]


def _found(status: str, job_id: str) -> None:
    if _status_count(status) == 0:
        raise KeyError(job_id)


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
    "PgMigration",
    "PostgresStore",
    "describe_connect_error",
    "load_pg_migrations",
    "migrate",
    "open_pg_store",
    "redact_url",
    "schema_version",
]
