"""`SqlStore`: the `storage.interface.Store` calls written once, over the programs of `storage.ops`.

A subclass (`storage.sqlite.SqliteStore`, `storage.postgres.PostgresStore`) names its `Dialect` and
runs a program in the transaction an `Access` asks for.
"""

from __future__ import annotations

from enum import Enum
from types import TracebackType
from typing import ClassVar, Self, TypeVar

from storage import ops, settings_ops
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
    SettingsView,
    Usage,
)
from storage.sql import Dialect, Program

T = TypeVar("T")


class Access(Enum):
    """The transaction a program needs."""

    READ = "read"  # one query
    SNAPSHOT = "snapshot"  # several queries that must see one consistent state
    # One statement (PostgreSQL runs it outside a transaction): the one write of several statements,
    # `reserve`, runs in BEGIN IMMEDIATE on SQLite and PostgresStore gives it a locked transaction.
    WRITE = "write"


class SqlStore:
    """Limits, usage, jobs and blocked words in a SQL database (see `storage.interface.Store`)."""

    dialect: ClassVar[Dialect]

    def __init__(self, defaults: Limits) -> None:
        self.defaults = defaults

    async def _run(self, program: Program[T], access: Access) -> T:
        """Run `program` in a transaction fit for `access`."""
        raise NotImplementedError

    async def close(self) -> None:
        """Close the database (idempotent)."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _changed(self, program: Program[int], job_id: str) -> None:
        if not await self._run(program, Access.WRITE):
            raise KeyError(job_id)

    # limits ---------------------------------------------------------------------------------------

    async def reserve(self, job: NewJob, role_ids: tuple[int, ...], now: float) -> Reservation | Refusal:
        """Check every limit for the job's owner in its guild and, if all pass, record the spend and
        insert the job as queued, atomically. A refusal names the limit that frees up last (see
        `storage.quota.pick_refusal`)."""
        return await self._run(ops.reserve(self.dialect, self.defaults, job, role_ids, now), Access.WRITE)

    async def refund(self, job_id: str, now: float) -> bool:
        """Give back what is left of a job's spend, once (False if already refunded or unknown)."""
        return await self._run(ops.refund(job_id, now), Access.WRITE)

    async def refund_images(self, job_id: str, count: int, now: float) -> bool:
        """Give back up to `count` of the job's images, at most what is left unrefunded (see
        `storage.interface.Store.refund_images`); False if nothing was left or the job is unknown."""
        return await self._run(ops.refund_images(job_id, count, now), Access.WRITE)

    async def effective_limits(self, guild_id: int, user_id: int, role_ids: tuple[int, ...]) -> Limits:
        """User override, else the most generous role override, else guild default, else settings."""
        return await self._run(ops.effective_limits(self.defaults, guild_id, user_id, role_ids), Access.READ)

    async def usage(self, guild_id: int, user_id: int, role_ids: tuple[int, ...], now: float) -> Usage:
        """What the member spent in the last hour and day, what is queued, and when each refills."""
        program = ops.usage(self.defaults, guild_id, user_id, role_ids, now)
        return await self._run(program, Access.SNAPSHOT)

    async def show_limits(
        self, guild_id: int, user_id: int | None = None, role_ids: tuple[int, ...] = ()
    ) -> LimitsView:
        """The guild default, every role override and, if `user_id` is given, the member's override
        and effective limits."""
        return await self._run(ops.show_limits(self.defaults, guild_id, user_id, role_ids), Access.READ)

    async def set_limits(
        self, guild_id: int, scope: Scope, target_id: int | None, patch: LimitsPatch
    ) -> None:
        """Set the fields `patch` gives (others stay) on the guild default (`target_id` None), a role or
        a user. `UNLIMITED` sets a count to unlimited."""
        await self._run(ops.set_limits(guild_id, scope, target_id, patch), Access.WRITE)

    async def reset_limits(self, guild_id: int, scope: Scope, target_id: int | None) -> bool:
        """Remove an override (or the guild default); False if there was none."""
        return bool(await self._run(ops.reset_limits(guild_id, scope, target_id), Access.WRITE))

    # blocked words --------------------------------------------------------------------------------

    async def add_blocked_word(self, guild_id: int, phrase: str) -> bool:
        """Block a phrase (normalised); False if it was already blocked."""
        return bool(await self._run(ops.add_blocked_word(guild_id, phrase), Access.WRITE))

    async def remove_blocked_word(self, guild_id: int, phrase: str) -> bool:
        """Unblock a phrase; False if it was not blocked."""
        return bool(await self._run(ops.remove_blocked_word(guild_id, phrase), Access.WRITE))

    async def blocked_words(self, guild_id: int) -> list[str]:
        """The guild's blocked phrases (normalised), sorted."""
        return await self._run(ops.blocked_words(guild_id), Access.READ)

    # settings and macros --------------------------------------------------------------------------

    async def prompt_settings(self, guild_id: int, user_id: int) -> SettingsView:
        """The member's settings, the guild's and the member's macros, in one snapshot."""
        return await self._run(settings_ops.prompt_settings(guild_id, user_id), Access.SNAPSHOT)

    async def set_prompt_settings(
        self, guild_id: int, user_id: int | None, changes: dict[str, object | None]
    ) -> None:
        """Set the named settings (None clears one) of a member, or the guild's (user_id None)."""
        await self._run(settings_ops.set_prompt_settings(guild_id, user_id, changes), Access.WRITE)

    async def reset_prompt_settings(self, guild_id: int, user_id: int | None) -> bool:
        """Clear every setting of a member (or the guild's); False if none was set."""
        return bool(await self._run(settings_ops.reset_prompt_settings(guild_id, user_id), Access.WRITE))

    async def set_macro(self, guild_id: int, user_id: int, name: str, value: str, limit: int) -> bool:
        """Add or replace a member's macro; False (nothing stored) when adding it would pass `limit`."""
        program = settings_ops.set_macro(guild_id, user_id, name, value, limit)
        return bool(await self._run(program, Access.WRITE))

    async def delete_macro(self, guild_id: int, user_id: int, name: str) -> bool:
        """Remove a member's macro; False if there was none."""
        return bool(await self._run(settings_ops.delete_macro(guild_id, user_id, name), Access.WRITE))

    # jobs -----------------------------------------------------------------------------------------

    async def get_job(self, job_id: str) -> JobRecord | None:
        """One job, or None."""
        found = await self._run(ops.get_job(self.dialect, job_id), Access.READ)
        return found[0] if found else None

    async def job_by_message(self, message_id: int) -> JobRecord | None:
        """The job whose result was posted as message `message_id`, or None."""
        found = await self._run(ops.job_by_message(self.dialect, message_id), Access.READ)
        return found[0] if found else None

    async def set_job_state(self, job_id: str, state: JobState, error: str | None = None) -> None:
        """Set a job's state and error text (None clears it); any state but running ends its lease.
        KeyError if the job is unknown."""
        await self._changed(ops.set_job_state(self.dialect, job_id, state, error), job_id)

    async def record_images(self, job_id: str, seeds: tuple[int, ...], image_paths: tuple[str, ...]) -> None:
        """Mark the job done with its saved images (not yet delivered); ends its lease. KeyError if
        the job is unknown."""
        await self._changed(ops.record_images(self.dialect, job_id, seeds, image_paths), job_id)

    async def record_delivery(self, job_id: str, message_id: int, channel_id: int) -> None:
        """Remember the posted result message. KeyError if the job is unknown."""
        await self._changed(ops.record_delivery(job_id, message_id, channel_id), job_id)

    async def unfinished_jobs(self) -> list[JobRecord]:
        """Jobs to pick up after a restart: queued or running (oldest first)."""
        return await self._run(ops.active_jobs(self.dialect), Access.READ)

    async def undelivered_jobs(self) -> list[JobRecord]:
        """Done jobs whose result was never posted (oldest first)."""
        return await self._run(ops.undelivered_jobs(self.dialect), Access.READ)

    async def queued_jobs(self, guild_id: int) -> list[JobRecord]:
        """Queued and running jobs of a guild, oldest first."""
        return await self._run(ops.active_jobs(self.dialect, guild_id), Access.READ)

    # retention ------------------------------------------------------------------------------------

    async def purge_finished(self, before: float) -> list[str]:
        """Delete finished jobs (failed, cancelled, or delivered) created before `before`; returns
        their image paths for the caller to delete. Queued, running and undelivered jobs stay."""
        return await self._run(ops.purge_finished(self.dialect, before), Access.WRITE)

    async def drop_expired_tokens(self, now: float) -> int:
        """Forget interaction tokens expired by `now`; how many were dropped."""
        return await self._run(ops.drop_expired_tokens(now), Access.WRITE)

    # audit ----------------------------------------------------------------------------------------

    async def ledger(self, guild_id: int, user_id: int | None = None) -> list[LedgerEntry]:
        """The guild's usage ledger (optionally one member's), oldest first."""
        return await self._run(ops.ledger(guild_id, user_id), Access.READ)
