"""`SqliteStore`: the `storage.interface.Store` on one SQLite file.

Open it with `store = await open_store(path, defaults)` or `async with open_store(path, defaults) as store`.
Each operation is one function run on the connection's thread, inside one transaction; writes use
`BEGIN IMMEDIATE`, so several processes sharing the file never overspend (they queue on SQLite's
write lock, waiting up to the busy timeout). Limit rules are in `storage.limits`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Generator
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from storage import limits as limit_math
from storage import queries as q
from storage.db import DEFAULT_BUSY_TIMEOUT_S, Database, open_database, read_transaction, write_transaction
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
    Usage,
)
from storage.limits import DAY_S, HOUR_S, checked_phrase, resolve, validate_patch, validate_refund_count

__all__ = ["LedgerEntry", "SqliteStore", "open_store"]  # LedgerEntry lives in storage.interface

T = TypeVar("T")


class SqliteStore:
    """Limits, usage, jobs and blocked words in one SQLite file (see `storage.interface.Store`)."""

    def __init__(self, db: Database, defaults: Limits) -> None:
        self._db = db
        self.defaults = defaults

    @property
    def path(self) -> Path:
        """The database file."""
        return self._db.path

    async def close(self) -> None:
        """Close the database (idempotent)."""
        await self._db.close()

    async def __aenter__(self) -> SqliteStore:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        timeout = self._db.busy_timeout_s

        def tx(conn: sqlite3.Connection) -> T:
            with write_transaction(conn, timeout):
                return fn(conn)

        return await self._db.run(tx)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def tx(conn: sqlite3.Connection) -> T:
            with read_transaction(conn):
                return fn(conn)

        return await self._db.run(tx)

    # limits ---------------------------------------------------------------------------------------

    def _limits(
        self, conn: sqlite3.Connection, guild_id: int, user_id: int, role_ids: tuple[int, ...]
    ) -> Limits:
        user = q.user_limits(conn, guild_id, user_id)
        roles: list[LimitsPatch] = []
        if role_ids and (user is None or None in _values(user)):
            wanted = set(role_ids)
            roles = [p for rid, p in q.role_limits(conn, guild_id).items() if rid in wanted]
        return resolve(self.defaults, q.guild_limits(conn, guild_id), roles, user)

    async def reserve(self, job: NewJob, role_ids: tuple[int, ...], now: float) -> Reservation | Refusal:
        """Check every limit for the job's owner in its guild and, if all pass, record the spend and
        insert the job as queued, in one `BEGIN IMMEDIATE` transaction.

        A refusal names the limit that frees up last (see `storage.limits.pick_refusal`).
        """
        if job.images < 1:
            raise ValueError(f"a job spends at least one image, not {job.images}")

        def tx(conn: sqlite3.Connection) -> Reservation | Refusal:
            limits = self._limits(conn, job.guild_id, job.owner_id, role_ids)
            refusal = self._check(conn, job, limits, now)
            if refusal is not None:
                return refusal
            if q.job_exists(conn, job.job_id):
                raise ValueError(f"job id {job.job_id!r} already exists")
            q.insert_job(conn, job, now)
            q.insert_spend(conn, job, now)
            return Reservation(_new_record(job, now))

        return await self._write(tx)

    def _check(self, conn: sqlite3.Connection, job: NewJob, limits: Limits, now: float) -> Refusal | None:
        g, u = job.guild_id, job.owner_id
        spends: list[tuple[float, int]] = []
        if limits.images_per_day is not None:
            spends = q.spends_since(conn, g, u, now - DAY_S)
        elif limits.images_per_hour is not None:
            spends = q.spends_since(conn, g, u, now - HOUR_S)
        last = q.last_spend_at(conn, g, u) if limits.cooldown_seconds > 0 else None
        queued = q.active_job_count(conn, g, u) if limits.max_queued is not None else 0
        return limit_math.check(limits, spends, last, queued, job.images, now)

    async def refund(self, job_id: str, now: float) -> bool:
        """Give back a job's spend (once; False if already refunded or unknown)."""
        return await self._write(lambda conn: q.mark_refunded(conn, job_id, now))

    async def refund_images(self, job_id: str, count: int, now: float) -> bool:
        """Give back up to `count` of the job's images, at most what is left unrefunded (see
        `storage.interface.Store.refund_images`); False if nothing was left or the job is unknown."""
        validate_refund_count(count)
        return await self._write(lambda conn: q.refund_images(conn, job_id, count, now))

    async def effective_limits(self, guild_id: int, user_id: int, role_ids: tuple[int, ...]) -> Limits:
        """User override, else the most generous role override, else guild default, else settings."""
        return await self._read(lambda conn: self._limits(conn, guild_id, user_id, role_ids))

    async def usage(self, guild_id: int, user_id: int, role_ids: tuple[int, ...], now: float) -> Usage:
        """What the member spent in the last hour and day, what is queued, and when each refills."""

        def tx(conn: sqlite3.Connection) -> Usage:
            limits = self._limits(conn, guild_id, user_id, role_ids)
            spends = q.spends_since(conn, guild_id, user_id, now - DAY_S)
            last = q.last_spend_at(conn, guild_id, user_id)
            queued = q.active_job_count(conn, guild_id, user_id)
            return limit_math.usage(limits, spends, last, queued, now)

        return await self._read(tx)

    async def show_limits(
        self, guild_id: int, user_id: int | None = None, role_ids: tuple[int, ...] = ()
    ) -> LimitsView:
        """The guild default, every role override and, if `user_id` is given, the member's override
        and effective limits."""

        def tx(conn: sqlite3.Connection) -> LimitsView:
            return LimitsView(
                guild_default=q.guild_limits(conn, guild_id) or LimitsPatch(),
                role_overrides=q.role_limits(conn, guild_id),
                user_override=None if user_id is None else q.user_limits(conn, guild_id, user_id),
                effective=None if user_id is None else self._limits(conn, guild_id, user_id, role_ids),
            )

        return await self._read(tx)

    async def set_limits(
        self, guild_id: int, scope: Scope, target_id: int | None, patch: LimitsPatch
    ) -> None:
        """Set the fields `patch` gives (others stay) on the guild default (`target_id` None), a role or
        a user. `UNLIMITED` sets a count to unlimited."""
        _check_target(scope, target_id)
        validate_patch(patch)
        await self._write(lambda conn: q.upsert_limits(conn, Scope(scope), guild_id, target_id, patch))

    async def reset_limits(self, guild_id: int, scope: Scope, target_id: int | None) -> bool:
        """Remove an override (or the guild default); False if there was none."""
        _check_target(scope, target_id)
        return await self._write(lambda conn: q.delete_limits(conn, Scope(scope), guild_id, target_id))

    # blocked words --------------------------------------------------------------------------------

    async def add_blocked_word(self, guild_id: int, phrase: str) -> bool:
        """Block a phrase (normalised); False if it was already blocked."""
        norm = checked_phrase(phrase)
        return await self._write(lambda conn: q.add_blocked_word(conn, guild_id, norm))

    async def remove_blocked_word(self, guild_id: int, phrase: str) -> bool:
        """Unblock a phrase; False if it was not blocked."""
        norm = checked_phrase(phrase)
        return await self._write(lambda conn: q.remove_blocked_word(conn, guild_id, norm))

    async def blocked_words(self, guild_id: int) -> list[str]:
        """The guild's blocked phrases (normalised), sorted."""
        return await self._read(lambda conn: q.blocked_words(conn, guild_id))

    # jobs -----------------------------------------------------------------------------------------

    async def get_job(self, job_id: str) -> JobRecord | None:
        """One job, or None."""
        return await self._read(lambda conn: q.get_job(conn, job_id))

    async def job_by_message(self, message_id: int) -> JobRecord | None:
        """The job whose result was posted as message `message_id`, or None."""
        return await self._read(lambda conn: q.job_by_message(conn, message_id))

    async def set_job_state(self, job_id: str, state: JobState, error: str | None = None) -> None:
        """Set a job's state (and error text; None clears it). KeyError if the job is unknown."""
        st = JobState(state)
        _found(await self._write(lambda conn: q.set_job_state(conn, job_id, st, error)), job_id)

    async def record_images(self, job_id: str, seeds: tuple[int, ...], image_paths: tuple[str, ...]) -> None:
        """Mark the job done with its saved images (not yet delivered). KeyError if unknown."""
        _found(await self._write(lambda conn: q.record_images(conn, job_id, seeds, image_paths)), job_id)

    async def record_delivery(self, job_id: str, message_id: int, channel_id: int) -> None:
        """Remember the posted result message. KeyError if the job is unknown."""
        _found(
            await self._write(lambda conn: q.record_delivery(conn, job_id, message_id, channel_id)), job_id
        )

    async def unfinished_jobs(self) -> list[JobRecord]:
        """Jobs to pick up after a restart: queued or running (oldest first)."""
        return await self._read(lambda conn: q.jobs_in_states(conn, q.ACTIVE_STATES))

    async def undelivered_jobs(self) -> list[JobRecord]:
        """Done jobs whose result was never posted (oldest first)."""
        return await self._read(q.undelivered_jobs)

    async def queued_jobs(self, guild_id: int) -> list[JobRecord]:
        """Queued and running jobs of a guild, oldest first."""
        return await self._read(lambda conn: q.jobs_in_states(conn, q.ACTIVE_STATES, guild_id))

    # audit ----------------------------------------------------------------------------------------

    async def ledger(self, guild_id: int, user_id: int | None = None) -> list[LedgerEntry]:
        """The guild's usage ledger (optionally one member's), oldest first."""
        rows = await self._read(lambda conn: q.ledger(conn, guild_id, user_id))
        return [LedgerEntry(*row) for row in rows]


def _values(patch: LimitsPatch) -> tuple[Any, ...]:
    return (patch.images_per_hour, patch.images_per_day, patch.max_queued, patch.cooldown_seconds)


def _new_record(job: NewJob, now: float) -> JobRecord:
    return JobRecord(
        job_id=job.job_id,
        guild_id=job.guild_id,
        channel_id=job.channel_id,
        owner_id=job.owner_id,
        request_json=job.request_json,
        images=job.images,
        state=JobState.QUEUED,
        created_at=now,
        interaction_id=job.interaction_id,
        interaction_token=job.interaction_token,
        token_expires_at=job.token_expires_at,
        parent_job_id=job.parent_job_id,
        parent_index=job.parent_index,
        error=None,
        batch_key=job.batch_key,
    )


def _check_target(scope: Scope, target_id: int | None) -> None:
    if Scope(scope) is Scope.GUILD:
        if target_id is not None:
            raise ValueError("the guild default takes no target id")
    elif target_id is None:
        raise ValueError(f"a {scope} override needs the {scope}'s id")


def _found(ok: bool, job_id: str) -> None:
    if not ok:
        raise KeyError(job_id)


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
