"""The storage interface the bot calls: limits, usage, jobs, blocked words.

`storage.sqlite.SqliteStore` implements it on one SQLite file, `storage.postgres.PostgresStore` on a
PostgreSQL database that several bot processes share; both are `storage.store.SqlStore`. Every method
takes `now` (a UNIX timestamp in seconds, float) where time matters, so tests pass a clock. IDs are
Discord snowflakes as `int`; job ids are short strings. Nothing is keyed by user alone: every
user-scoped row also names its guild.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


class StorageError(Exception):
    """The database cannot be opened or used; `str()` says what to fix."""


class JobState(StrEnum):
    """A job's life: queued → running → done | failed | cancelled."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"  # images saved (see JobRecord.image_paths); delivered once result_message_id is set
    FAILED = "failed"
    CANCELLED = "cancelled"


class LimitName(StrEnum):
    """Which limit refused a reservation."""

    PER_HOUR = "images_per_hour"
    PER_DAY = "images_per_day"
    MAX_QUEUED = "max_queued"
    COOLDOWN = "cooldown_seconds"


@dataclass(frozen=True)
class Limits:
    """Effective limits for one member of one guild. `None` in a field means unlimited."""

    images_per_hour: int | None
    images_per_day: int | None
    max_queued: int | None
    cooldown_seconds: float


UNLIMITED = -1
"""In a `LimitsPatch` count field (set or shown): unlimited, as opposed to None = not set here."""


@dataclass(frozen=True)
class LimitsPatch:
    """Fields to set on a guild default, role or user override; None leaves a field as it is.

    A count field set to `UNLIMITED` makes it unlimited at that level. `show_limits` returns the stored
    rows in the same form: None = not set there (falls through to the next level), `UNLIMITED`.
    """

    images_per_hour: int | None = None
    images_per_day: int | None = None
    max_queued: int | None = None
    cooldown_seconds: float | None = None


class Scope(StrEnum):
    """Whose limits an admin operation addresses."""

    GUILD = "guild"
    ROLE = "role"
    USER = "user"


@dataclass(frozen=True)
class NewJob:
    """A job to create together with its reservation."""

    job_id: str
    guild_id: int
    channel_id: int
    owner_id: int
    request_json: str  # GenerationRequest.to_json()
    images: int  # what it spends
    interaction_id: int | None = None
    interaction_token: str | None = None  # lets any process edit the original response
    token_expires_at: float | None = None
    parent_job_id: str | None = None  # for variations, upscales, rerolls
    parent_index: int | None = None


@dataclass(frozen=True)
class JobRecord:
    """A stored job."""

    job_id: str
    guild_id: int
    channel_id: int
    owner_id: int
    request_json: str
    images: int
    state: JobState
    created_at: float
    interaction_id: int | None
    interaction_token: str | None
    token_expires_at: float | None
    parent_job_id: str | None
    parent_index: int | None
    error: str | None
    seeds: tuple[int, ...] = ()
    image_paths: tuple[str, ...] = ()
    result_message_id: int | None = None  # set once the result is posted: delivered
    result_channel_id: int | None = None
    refunded: bool = False  # the whole spend was given back (`Store.refund`, or partial refunds adding up)


@dataclass(frozen=True)
class LedgerEntry:
    """One row of the usage ledger (for audits and benchmarks): a job's spend.

    `images` is what the job spent; `refunded_images` how many of them were given back (all of them
    when `refunded`). The windows count `images - refunded_images`.
    """

    user_id: int
    job_id: str
    images: int
    at: float
    refunded: bool
    refunded_images: int = 0


@dataclass(frozen=True)
class Reservation:
    """A granted reservation: the spend is recorded and the job is queued."""

    job: JobRecord


@dataclass(frozen=True)
class Refusal:
    """A refused reservation: which limit, and when (UNIX time) enough frees up to try again.

    `retry_at` is `math.inf` when the request can never fit (it asks for more images than the limit);
    for `MAX_QUEUED` it is the time of the refusal: retry when one of the member's jobs finishes.
    """

    limit: LimitName
    retry_at: float
    limits: Limits


@dataclass(frozen=True)
class Usage:
    """What a member spent and has left, and when the windows refill."""

    limits: Limits
    used_last_hour: int
    used_last_day: int
    queued: int
    hour_refills_at: float | None  # when the oldest spend in the hour window leaves it
    day_refills_at: float | None
    cooldown_until: float | None


@dataclass(frozen=True)
class LimitsView:
    """What `/limits show` prints: the stored rows and the result for one member if asked."""

    guild_default: LimitsPatch
    role_overrides: dict[int, LimitsPatch] = field(default_factory=dict)
    user_override: LimitsPatch | None = None
    effective: Limits | None = None


@dataclass(frozen=True)
class PromptSettings:
    """A member's (or, for user id None, the guild's) prompt defaults; None: not set."""

    remix: bool | None = None
    count: int | None = None
    aspect: str | None = None
    negative: str | None = None
    sampler: str | None = None
    suffix: str | None = None
    model: str | None = None  # the guild's default model (a name in MODELS)
    models: str | None = None  # the models the guild offers, comma-separated; None: every model
    video_cost: int | None = None  # the guild's images of quota per video (Animate); None: the bot's


SETTING_NAMES = ("remix", "count", "aspect", "negative", "sampler", "suffix", "model", "models", "video_cost")


@dataclass(frozen=True)
class SettingsView:
    """What one job reads of a member's settings: theirs, the guild's, and their macros."""

    member: PromptSettings
    guild: PromptSettings
    macros: dict[str, str] = field(default_factory=dict)


class Store(Protocol):
    """Everything the bot remembers across restarts."""

    async def close(self) -> None: ...

    # limits -----------------------------------------------------------------------------------
    async def reserve(self, job: NewJob, role_ids: tuple[int, ...], now: float) -> Reservation | Refusal:
        """Check every limit for job.owner_id in job.guild_id and, if all pass, record the spend
        and insert the job as queued, in one atomic step."""
        ...

    async def refund(self, job_id: str, now: float) -> bool:
        """Give back a job's spend (once; False if already refunded or unknown)."""
        ...

    async def refund_images(self, job_id: str, count: int, now: float) -> bool:
        """Give back `count` of a job's images (e.g. flagged ones that were not posted), at most what
        is still unrefunded; every call gives back again. The windows and usage stop counting them
        at once; the job's spend still holds the cooldown until all of it is given back (then the job
        reads `refunded`). False if nothing was left to give back or the job is unknown;
        ValueError if `count < 1`."""
        ...

    async def effective_limits(self, guild_id: int, user_id: int, role_ids: tuple[int, ...]) -> Limits:
        """User override, else the most generous role override, else guild default, else settings."""
        ...

    async def usage(self, guild_id: int, user_id: int, role_ids: tuple[int, ...], now: float) -> Usage: ...

    async def show_limits(
        self, guild_id: int, user_id: int | None = None, role_ids: tuple[int, ...] = ()
    ) -> LimitsView: ...

    async def set_limits(
        self, guild_id: int, scope: Scope, target_id: int | None, patch: LimitsPatch
    ) -> None:
        """Set fields for the guild default (target_id None), a role or a user."""
        ...

    async def reset_limits(self, guild_id: int, scope: Scope, target_id: int | None) -> bool:
        """Remove an override (or the guild default); False if there was none."""
        ...

    # blocked words ----------------------------------------------------------------------------
    async def add_blocked_word(self, guild_id: int, phrase: str) -> bool: ...

    async def remove_blocked_word(self, guild_id: int, phrase: str) -> bool: ...

    async def blocked_words(self, guild_id: int) -> list[str]: ...

    # settings and macros ----------------------------------------------------------------------
    async def prompt_settings(self, guild_id: int, user_id: int) -> SettingsView:
        """The member's settings, the guild's and the member's macros, in one read."""
        ...

    async def set_prompt_settings(
        self, guild_id: int, user_id: int | None, changes: dict[str, object | None]
    ) -> None:
        """Set the named settings (None clears one) of a member, or the guild's (user_id None);
        ValueError for a name not in SETTING_NAMES."""
        ...

    async def reset_prompt_settings(self, guild_id: int, user_id: int | None) -> bool:
        """Clear every setting of a member (or the guild's); False if none was set."""
        ...

    async def set_macro(self, guild_id: int, user_id: int, name: str, value: str, limit: int) -> bool:
        """Add or replace a member's macro; False (nothing stored) when adding it would pass `limit`."""
        ...

    async def delete_macro(self, guild_id: int, user_id: int, name: str) -> bool:
        """Remove a member's macro; False if there was none."""
        ...

    # jobs -------------------------------------------------------------------------------------
    async def get_job(self, job_id: str) -> JobRecord | None: ...

    async def job_by_message(self, message_id: int) -> JobRecord | None:
        """The job whose result was posted as message `message_id` (see `record_delivery`), or None."""
        ...

    async def set_job_state(self, job_id: str, state: JobState, error: str | None = None) -> None: ...

    async def record_images(self, job_id: str, seeds: tuple[int, ...], image_paths: tuple[str, ...]) -> None:
        """Mark the job done with its saved images (not yet delivered)."""
        ...

    async def record_delivery(self, job_id: str, message_id: int, channel_id: int) -> None: ...

    async def unfinished_jobs(self) -> list[JobRecord]:
        """Jobs to pick up after a restart: queued or running (oldest first)."""
        ...

    async def undelivered_jobs(self) -> list[JobRecord]:
        """Done jobs whose result was never posted."""
        ...

    async def queued_jobs(self, guild_id: int) -> list[JobRecord]:
        """Queued and running jobs of a guild, oldest first."""
        ...

    # retention --------------------------------------------------------------------------------
    async def purge_finished(self, before: float) -> list[str]:
        """Delete finished jobs (failed, cancelled, or delivered) created before `before`; returns
        their image paths for the caller to delete. Queued, running and undelivered jobs stay."""
        ...

    async def drop_expired_tokens(self, now: float) -> int:
        """Forget interaction tokens expired by `now`; how many were dropped."""
        ...
