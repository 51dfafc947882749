"""All the SQL the store runs, as small synchronous functions on a `sqlite3.Connection`.

Every value is a bound parameter. The only names put into SQL text are table names chosen from the
fixed `_LIMIT_TABLES` mapping below, never from input. Callers own the transactions.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from storage.interface import JobRecord, JobState, LimitsPatch, NewJob, Scope

_LIMIT_COLUMNS = "images_per_hour, images_per_day, max_queued, cooldown_seconds"
_LIMIT_TABLES: dict[Scope, tuple[str, str | None]] = {
    Scope.GUILD: ("guild_limits", None),
    Scope.ROLE: ("role_limits", "role_id"),
    Scope.USER: ("user_limits", "user_id"),
}
ACTIVE_STATES = (JobState.QUEUED.value, JobState.RUNNING.value)

_JOB_COLUMNS = (
    "j.job_id, j.guild_id, j.channel_id, j.owner_id, j.request_json, j.images, j.state, j.created_at, "
    "j.interaction_id, j.interaction_token, j.token_expires_at, j.parent_job_id, j.parent_index, j.error, "
    "j.seeds_json, j.image_paths_json, j.result_message_id, j.result_channel_id, "
    "COALESCE(u.refunded, 0), j.batch_key"
)
_JOB_SELECT = f"SELECT {_JOB_COLUMNS} FROM jobs AS j LEFT JOIN usage_ledger AS u ON u.job_id = j.job_id"


# limits --------------------------------------------------------------------------------------------


def _patch(row: Sequence[Any] | None) -> LimitsPatch | None:
    if row is None:
        return None
    return LimitsPatch(
        images_per_hour=row[0], images_per_day=row[1], max_queued=row[2], cooldown_seconds=row[3]
    )


def guild_limits(conn: sqlite3.Connection, guild_id: int) -> LimitsPatch | None:
    """The guild default row, if any."""
    row = conn.execute(
        f"SELECT {_LIMIT_COLUMNS} FROM guild_limits WHERE guild_id = ?", (guild_id,)
    ).fetchone()
    return _patch(row)


def role_limits(conn: sqlite3.Connection, guild_id: int) -> dict[int, LimitsPatch]:
    """Every role override of the guild (few per guild: filtering happens in Python)."""
    rows = conn.execute(
        f"SELECT role_id, {_LIMIT_COLUMNS} FROM role_limits WHERE guild_id = ? ORDER BY role_id", (guild_id,)
    ).fetchall()
    return {int(r[0]): LimitsPatch(r[1], r[2], r[3], r[4]) for r in rows}


def user_limits(conn: sqlite3.Connection, guild_id: int, user_id: int) -> LimitsPatch | None:
    """The member's override row, if any."""
    row = conn.execute(
        f"SELECT {_LIMIT_COLUMNS} FROM user_limits WHERE guild_id = ? AND user_id = ?", (guild_id, user_id)
    ).fetchone()
    return _patch(row)


def upsert_limits(
    conn: sqlite3.Connection, scope: Scope, guild_id: int, target_id: int | None, patch: LimitsPatch
) -> None:
    """Insert the row or set the fields the patch gives, leaving the others."""
    table, key = _LIMIT_TABLES[scope]
    keys = "guild_id" if key is None else f"guild_id, {key}"
    ids: tuple[int, ...] = (guild_id,) if key is None else (guild_id, int(target_id or 0))
    marks = ", ".join("?" for _ in range(len(ids) + 4))
    updates = ", ".join(f"{c} = COALESCE(excluded.{c}, {c})" for c in _LIMIT_COLUMNS.split(", "))
    conn.execute(
        f"INSERT INTO {table} ({keys}, {_LIMIT_COLUMNS}) VALUES ({marks}) "
        f"ON CONFLICT ({keys}) DO UPDATE SET {updates}",
        (*ids, patch.images_per_hour, patch.images_per_day, patch.max_queued, patch.cooldown_seconds),
    )


def delete_limits(conn: sqlite3.Connection, scope: Scope, guild_id: int, target_id: int | None) -> bool:
    """Remove the row; False if there was none."""
    table, key = _LIMIT_TABLES[scope]
    if key is None:
        cur = conn.execute(f"DELETE FROM {table} WHERE guild_id = ?", (guild_id,))
    else:
        cur = conn.execute(f"DELETE FROM {table} WHERE guild_id = ? AND {key} = ?", (guild_id, target_id))
    return cur.rowcount > 0


# usage ledger --------------------------------------------------------------------------------------


def window_totals(
    conn: sqlite3.Connection, guild_id: int, user_id: int, hour_start: float, day_start: float
) -> tuple[int, int]:
    """Images spent (not refunded) after `hour_start` and after `day_start`."""
    row = conn.execute(
        "SELECT COALESCE(SUM(CASE WHEN at > ? THEN images - refunded_images END), 0), "
        "COALESCE(SUM(images - refunded_images), 0) "
        "FROM usage_ledger WHERE guild_id = ? AND user_id = ? AND at > ? AND refunded = 0",
        (hour_start, guild_id, user_id, day_start),
    ).fetchone()
    return int(row[0]), int(row[1])


def spends_since(
    conn: sqlite3.Connection, guild_id: int, user_id: int, start: float
) -> list[tuple[float, int]]:
    """(at, images not refunded) of the spends not wholly refunded after `start`, oldest first."""
    rows = conn.execute(
        "SELECT at, images - refunded_images FROM usage_ledger "
        "WHERE guild_id = ? AND user_id = ? AND at > ? AND refunded = 0 ORDER BY at, id",
        (guild_id, user_id, start),
    ).fetchall()
    return [(float(r[0]), int(r[1])) for r in rows]


def last_spend_at(conn: sqlite3.Connection, guild_id: int, user_id: int) -> float | None:
    """When the member last spent (not wholly refunded) in the guild."""
    row = conn.execute(
        "SELECT MAX(at) FROM usage_ledger WHERE guild_id = ? AND user_id = ? AND refunded = 0",
        (guild_id, user_id),
    ).fetchone()
    return None if row[0] is None else float(row[0])


def insert_spend(conn: sqlite3.Connection, job: NewJob, now: float) -> None:
    """Record the job's spend."""
    conn.execute(
        "INSERT INTO usage_ledger (guild_id, user_id, job_id, images, at) VALUES (?, ?, ?, ?, ?)",
        (job.guild_id, job.owner_id, job.job_id, job.images, now),
    )


def mark_refunded(conn: sqlite3.Connection, job_id: str, now: float) -> bool:
    """Give back what is left of the job's spend; False if nothing was or there is none."""
    cur = conn.execute(
        "UPDATE usage_ledger SET refunded = 1, refunded_images = images, refunded_at = ? "
        "WHERE job_id = ? AND refunded = 0",
        (now, job_id),
    )
    return cur.rowcount > 0


def refund_images(conn: sqlite3.Connection, job_id: str, count: int, now: float) -> bool:
    """Give back up to `count` (>= 1) of what is left of the job's spend (all of it: refunded);
    False if nothing was left or there is none."""
    cur = conn.execute(
        "UPDATE usage_ledger SET refunded_images = MIN(images, refunded_images + ?), "
        "refunded = (refunded_images + ? >= images), refunded_at = ? "
        "WHERE job_id = ? AND refunded = 0",
        (count, count, now, job_id),
    )
    return cur.rowcount > 0


def ledger(
    conn: sqlite3.Connection, guild_id: int, user_id: int | None
) -> list[tuple[int, str, int, float, bool, int]]:
    """(user_id, job_id, images, at, refunded, refunded_images) of a guild's ledger (optionally one
    member), by time."""
    rows = conn.execute(
        "SELECT user_id, job_id, images, at, refunded, refunded_images FROM usage_ledger "
        "WHERE guild_id = ? AND (? IS NULL OR user_id = ?) ORDER BY at, id",
        (guild_id, user_id, user_id),
    ).fetchall()
    return [(int(r[0]), str(r[1]), int(r[2]), float(r[3]), bool(r[4]), int(r[5])) for r in rows]


# jobs ----------------------------------------------------------------------------------------------


def active_job_count(conn: sqlite3.Connection, guild_id: int, owner_id: int) -> int:
    """The member's queued and running jobs in the guild."""
    row = conn.execute(
        "SELECT COUNT(*) FROM jobs WHERE guild_id = ? AND owner_id = ? AND state IN (?, ?)",
        (guild_id, owner_id, *ACTIVE_STATES),
    ).fetchone()
    return int(row[0])


def job_exists(conn: sqlite3.Connection, job_id: str) -> bool:
    """Whether a job with this id is stored."""
    return conn.execute("SELECT 1 FROM jobs WHERE job_id = ?", (job_id,)).fetchone() is not None


def insert_job(conn: sqlite3.Connection, job: NewJob, now: float) -> None:
    """Insert the job as queued."""
    conn.execute(
        "INSERT INTO jobs (job_id, guild_id, channel_id, owner_id, request_json, images, state, created_at, "
        "interaction_id, interaction_token, token_expires_at, parent_job_id, parent_index, batch_key) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            job.job_id,
            job.guild_id,
            job.channel_id,
            job.owner_id,
            job.request_json,
            job.images,
            JobState.QUEUED.value,
            now,
            job.interaction_id,
            job.interaction_token,
            job.token_expires_at,
            job.parent_job_id,
            job.parent_index,
            job.batch_key,
        ),
    )


def _job(row: Sequence[Any]) -> JobRecord:
    return JobRecord(
        job_id=row[0],
        guild_id=row[1],
        channel_id=row[2],
        owner_id=row[3],
        request_json=row[4],
        images=row[5],
        state=JobState(row[6]),
        created_at=row[7],
        interaction_id=row[8],
        interaction_token=row[9],
        token_expires_at=row[10],
        parent_job_id=row[11],
        parent_index=row[12],
        error=row[13],
        seeds=tuple(int(s) for s in json.loads(row[14])),
        image_paths=tuple(str(p) for p in json.loads(row[15])),
        result_message_id=row[16],
        result_channel_id=row[17],
        refunded=bool(row[18]),
        batch_key=row[19],
    )


def get_job(conn: sqlite3.Connection, job_id: str) -> JobRecord | None:
    """One job by id."""
    row = conn.execute(f"{_JOB_SELECT} WHERE j.job_id = ?", (job_id,)).fetchone()
    return None if row is None else _job(row)


def job_by_message(conn: sqlite3.Connection, message_id: int) -> JobRecord | None:
    """The job whose result is message `message_id` (the latest such, should there be several)."""
    row = conn.execute(
        f"{_JOB_SELECT} WHERE j.result_message_id = ? ORDER BY j.created_at DESC, j.rowid DESC LIMIT 1",
        (message_id,),
    ).fetchone()
    return None if row is None else _job(row)


def jobs_in_states(
    conn: sqlite3.Connection, states: Sequence[str], guild_id: int | None = None
) -> list[JobRecord]:
    """Jobs in any of `states` (optionally of one guild), oldest first."""
    marks = ", ".join("?" for _ in states)
    rows = conn.execute(
        f"{_JOB_SELECT} WHERE j.state IN ({marks}) AND (? IS NULL OR j.guild_id = ?) "
        "ORDER BY j.created_at, j.rowid",
        (*states, guild_id, guild_id),
    ).fetchall()
    return [_job(r) for r in rows]


def undelivered_jobs(conn: sqlite3.Connection) -> list[JobRecord]:
    """Done jobs with no result message, oldest first."""
    rows = conn.execute(
        f"{_JOB_SELECT} WHERE j.state = ? AND j.result_message_id IS NULL ORDER BY j.created_at, j.rowid",
        (JobState.DONE.value,),
    ).fetchall()
    return [_job(r) for r in rows]


def set_job_state(conn: sqlite3.Connection, job_id: str, state: JobState, error: str | None) -> bool:
    """Set state and error; False if the job is unknown."""
    cur = conn.execute("UPDATE jobs SET state = ?, error = ? WHERE job_id = ?", (state.value, error, job_id))
    return cur.rowcount > 0


def record_images(conn: sqlite3.Connection, job_id: str, seeds: Sequence[int], paths: Sequence[str]) -> bool:
    """Mark done with seeds and image paths; False if the job is unknown."""
    cur = conn.execute(
        "UPDATE jobs SET state = ?, error = NULL, seeds_json = ?, image_paths_json = ? WHERE job_id = ?",
        (
            JobState.DONE.value,
            json.dumps([int(s) for s in seeds]),
            json.dumps([str(p) for p in paths]),
            job_id,
        ),
    )
    return cur.rowcount > 0


def record_delivery(conn: sqlite3.Connection, job_id: str, message_id: int, channel_id: int) -> bool:
    """Store the result message; False if the job is unknown."""
    cur = conn.execute(
        "UPDATE jobs SET result_message_id = ?, result_channel_id = ? WHERE job_id = ?",
        (message_id, channel_id, job_id),
    )
    return cur.rowcount > 0


# blocked words -------------------------------------------------------------------------------------


def add_blocked_word(conn: sqlite3.Connection, guild_id: int, phrase: str) -> bool:
    """Add; False if already there."""
    cur = conn.execute(
        "INSERT OR IGNORE INTO blocked_words (guild_id, phrase) VALUES (?, ?)", (guild_id, phrase)
    )
    return cur.rowcount > 0


def remove_blocked_word(conn: sqlite3.Connection, guild_id: int, phrase: str) -> bool:
    """Remove; False if it was not there."""
    cur = conn.execute("DELETE FROM blocked_words WHERE guild_id = ? AND phrase = ?", (guild_id, phrase))
    return cur.rowcount > 0


def blocked_words(conn: sqlite3.Connection, guild_id: int) -> list[str]:
    """The guild's blocked phrases, sorted."""
    rows = conn.execute("SELECT phrase FROM blocked_words WHERE guild_id = ? ORDER BY phrase", (guild_id,))
    return [str(r[0]) for r in rows.fetchall()]
