"""Every `Store` operation once, as a program of SQL steps (see `storage.sql`) for either dialect.

A function here checks its arguments at once (ValueError before any SQL) and returns the program;
the store runs it in the transaction the operation needs. Limit arithmetic is `storage.quota`.
Every value is a bound parameter; the only names put into SQL text are the table and key columns of
the fixed `_LIMIT_TABLES` and the columns of `storage.sql.Dialect`, never input.
"""

from __future__ import annotations

from collections.abc import Sequence

from storage import interface as api
from storage import quota as limit_math
from storage.blocklist import clean_phrase
from storage.sql import LIMIT_COLUMNS, Dialect, Execute, Fetch, Program, Row, ledger_entry, new_record, patch

_LIMIT_TABLES: dict[api.Scope, tuple[str, str | None]] = {
    api.Scope.GUILD: ("guild_limits", None),
    api.Scope.ROLE: ("role_limits", "role_id"),
    api.Scope.USER: ("user_limits", "user_id"),
}
_ACTIVE = "('queued', 'running')"
Levels = tuple[
    api.LimitsPatch | None, dict[int, api.LimitsPatch], api.LimitsPatch | None
]  # guild, roles, user


# limits --------------------------------------------------------------------------------------------


def _read_levels(guild_id: int, user_id: int | None) -> Program[Levels]:
    """The guild default, every role override of the guild (by role id) and the member's override."""
    rows = yield Fetch(
        f"SELECT 0, 0, {LIMIT_COLUMNS} FROM guild_limits WHERE guild_id = $1 "
        f"UNION ALL SELECT 1, role_id, {LIMIT_COLUMNS} FROM role_limits WHERE guild_id = $1 "
        f"UNION ALL SELECT 2, 0, {LIMIT_COLUMNS} FROM user_limits WHERE guild_id = $1 AND user_id = $2 "
        "ORDER BY 1, 2",
        (guild_id, user_id),
    )
    return _levels(rows, start=2)


def _levels(rows: Sequence[Row], *, start: int) -> Levels:
    """Rows of (kind, role id, …, the limit columns from `start`) as (guild, roles, user) levels."""
    guild: api.LimitsPatch | None = None
    user: api.LimitsPatch | None = None
    roles: dict[int, api.LimitsPatch] = {}
    for row in rows:
        if row[0] == 0:
            guild = patch(row, start)
        elif row[0] == 1:
            roles[int(row[1])] = patch(row, start)
        else:
            user = patch(row, start)
    return guild, roles, user


def _effective(defaults: api.Limits, levels: Levels, role_ids: Sequence[int]) -> api.Limits:
    guild, roles, user = levels
    held = set(role_ids)
    return limit_math.resolve(defaults, guild, [p for rid, p in roles.items() if rid in held], user)


Member = tuple[list[tuple[float, int]], float | None, int]
"""(at, images not refunded) of the spends of the last day, oldest first; the latest spend not wholly
refunded (the cooldown runs from it); the member's queued and running jobs."""

_NO_LIMITS = ", ".join(["NULL"] * len(LIMIT_COLUMNS.split(",")))


def _read_member(guild_id: int, user_id: int, now: float) -> Program[tuple[Levels, Member]]:
    """The member's limit levels and spending in one query (one round trip: `reserve` runs it per
    request). Rows: kind 0–2 as in `_read_levels`; kind 3 a spend (at, images not refunded); kind 4
    the latest unrefunded spend and the count of active jobs."""
    rows = yield Fetch(
        # The first branch names the types (PostgreSQL resolves a bare NULL column of two branches as text)
        "SELECT 0, 0, CAST(NULL AS DOUBLE PRECISION), CAST(NULL AS BIGINT), "
        f"{LIMIT_COLUMNS} FROM guild_limits WHERE guild_id = $1 "
        f"UNION ALL SELECT 1, role_id, NULL, NULL, {LIMIT_COLUMNS} FROM role_limits WHERE guild_id = $1 "
        f"UNION ALL SELECT 2, 0, NULL, NULL, {LIMIT_COLUMNS} FROM user_limits "
        "WHERE guild_id = $1 AND user_id = $2 "
        f"UNION ALL SELECT 3, id, at, images - refunded_images, {_NO_LIMITS} FROM usage_ledger "
        "WHERE guild_id = $1 AND user_id = $2 AND NOT refunded AND at > $3 "
        "UNION ALL SELECT 4, 0, "
        "(SELECT max(at) FROM usage_ledger WHERE guild_id = $1 AND user_id = $2 AND NOT refunded), "
        f"(SELECT count(*) FROM jobs WHERE guild_id = $1 AND owner_id = $2 AND state IN {_ACTIVE}), "
        f"{_NO_LIMITS} "
        "ORDER BY 1, 3, 2",
        (guild_id, user_id, now - limit_math.DAY_S),
    )
    levels = _levels([row for row in rows if row[0] <= 2], start=4)
    spends = [(float(row[2]), int(row[3])) for row in rows if row[0] == 3]
    (facts,) = (row for row in rows if row[0] == 4)
    last = None if facts[2] is None else float(facts[2])
    return levels, (spends, last, int(facts[3]))


def reserve(
    d: Dialect, defaults: api.Limits, job: api.NewJob, role_ids: Sequence[int], now: float
) -> Program[api.Reservation | api.Refusal]:
    """Check every limit; if all pass, insert the job as queued and record its spend."""
    if job.images < 1:
        raise ValueError(f"a job spends at least one image, not {job.images}")
    return _reserve(d, defaults, job, role_ids, now)


_INSERT_JOB = (
    "INSERT INTO jobs (job_id, guild_id, channel_id, owner_id, request_json, images, state, created_at, "
    "interaction_id, interaction_token, token_expires_at, parent_job_id, parent_index) "
    "VALUES ($1, $2, $3, $4, $5, $6, 'queued', $7, $8, $9, $10, $11, $12) "
    "ON CONFLICT (job_id) DO NOTHING"
)
_INSERT_SPEND = "INSERT INTO usage_ledger (guild_id, user_id, job_id, images, at) "


def _reserve(
    d: Dialect, defaults: api.Limits, job: api.NewJob, role_ids: Sequence[int], now: float
) -> Program[api.Reservation | api.Refusal]:
    g, u = job.guild_id, job.owner_id
    levels, (spends, last, active) = yield from _read_member(g, u, now)
    refusal = limit_math.check(_effective(defaults, levels, role_ids), spends, last, active, job.images, now)
    if refusal is not None:
        return refusal
    job_args = (job.job_id, g, job.channel_id, u, job.request_json, job.images, now, job.interaction_id,
                job.interaction_token, job.token_expires_at, job.parent_job_id, job.parent_index)  # fmt: skip
    if d.data_modifying_cte:  # one round trip: the spend is inserted only if the job was
        inserted = yield Execute(
            f"WITH j AS ({_INSERT_JOB} RETURNING job_id, guild_id, owner_id, images, created_at) "
            f"{_INSERT_SPEND} SELECT guild_id, owner_id, job_id, images, created_at FROM j",
            job_args,
        )
    else:
        inserted = yield Execute(_INSERT_JOB, job_args)
        if inserted:
            yield Execute(f"{_INSERT_SPEND} VALUES ($1, $2, $3, $4, $5)", (g, u, job.job_id, job.images, now))
    if not inserted:
        raise ValueError(f"job id {job.job_id!r} already exists")
    return api.Reservation(new_record(job, now))


def refund(job_id: str, now: float) -> Program[bool]:
    """Give back what is left of the job's spend; False if nothing was left or there is none."""
    changed = yield Execute(
        "UPDATE usage_ledger SET refunded = TRUE, refunded_images = images, refunded_at = $2 "
        "WHERE job_id = $1 AND NOT refunded",
        (job_id, now),
    )
    return bool(changed)


def refund_images(job_id: str, count: int, now: float) -> Program[bool]:
    """Give back up to `count` (>= 1, else ValueError) of what is left of the job's spend (all of it:
    refunded); False if nothing was left or there is none."""
    limit_math.validate_refund_count(count)
    return _refund_images(job_id, count, now)


def _refund_images(job_id: str, count: int, now: float) -> Program[bool]:
    changed = yield Execute(
        "UPDATE usage_ledger SET refunded_images = CASE WHEN refunded_images + $2 < images "
        "THEN refunded_images + $2 ELSE images END, "
        "refunded = refunded_images + $2 >= images, refunded_at = $3 WHERE job_id = $1 AND NOT refunded",
        (job_id, count, now),
    )
    return bool(changed)


def effective_limits(
    defaults: api.Limits, guild_id: int, user_id: int, role_ids: Sequence[int]
) -> Program[api.Limits]:
    """User override, else the most generous role override, else guild default, else `defaults`."""
    return _effective(defaults, (yield from _read_levels(guild_id, user_id)), role_ids)


def usage(
    defaults: api.Limits, guild_id: int, user_id: int, role_ids: Sequence[int], now: float
) -> Program[api.Usage]:
    """What the member spent in the last hour and day, what is queued, and when each refills."""
    levels, (spends, last, active) = yield from _read_member(guild_id, user_id, now)
    return limit_math.usage(_effective(defaults, levels, role_ids), spends, last, active, now)


def show_limits(
    defaults: api.Limits, guild_id: int, user_id: int | None, role_ids: Sequence[int]
) -> Program[api.LimitsView]:
    """The guild default, every role override and, for a member, their override and effective limits."""
    levels = yield from _read_levels(guild_id, user_id)
    guild, roles, user = levels
    return api.LimitsView(
        guild_default=guild or api.LimitsPatch(),
        role_overrides=roles,
        user_override=user,
        effective=None if user_id is None else _effective(defaults, levels, role_ids),
    )


def _limit_row(guild_id: int, scope: api.Scope, target_id: int | None) -> tuple[str, list[str], list[int]]:
    """The table, key columns and key values an admin operation on `scope` addresses."""
    if api.Scope(scope) is api.Scope.GUILD:
        if target_id is not None:
            raise ValueError("the guild default takes no target id")
    elif target_id is None:
        raise ValueError(f"a {scope} override needs the {scope}'s id")
    table, key = _LIMIT_TABLES[api.Scope(scope)]
    if key is None:
        return table, ["guild_id"], [guild_id]
    return table, ["guild_id", key], [guild_id, int(target_id or 0)]


def set_limits(
    guild_id: int, scope: api.Scope, target_id: int | None, limits: api.LimitsPatch
) -> Program[int]:
    """Insert the row, or set the fields `limits` gives and leave the others."""
    table, keys, ids = _limit_row(guild_id, scope, target_id)
    limit_math.validate_patch(limits)
    names = LIMIT_COLUMNS.split(", ")
    marks = ", ".join(f"${i}" for i in range(1, len(ids) + len(names) + 1))
    updates = ", ".join(f"{n} = COALESCE(EXCLUDED.{n}, {table}.{n})" for n in names)
    values = (limits.images_per_hour, limits.images_per_day, limits.max_queued, limits.cooldown_seconds)
    return _one(
        Execute(
            f"INSERT INTO {table} ({', '.join(keys)}, {LIMIT_COLUMNS}) VALUES ({marks}) "
            f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}",
            (*ids, *values),
        )
    )


def reset_limits(guild_id: int, scope: api.Scope, target_id: int | None) -> Program[int]:
    """Delete the row; how many there were (0 or 1)."""
    table, keys, ids = _limit_row(guild_id, scope, target_id)
    where = " AND ".join(f"{k} = ${i}" for i, k in enumerate(keys, start=1))
    return _one(Execute(f"DELETE FROM {table} WHERE {where}", tuple(ids)))


def _one(step: Execute) -> Program[int]:
    """A program of the one statement `step`: how many rows it changed."""
    return int((yield step))


# blocked words ---------------------------------------------------------------------------------------


def add_blocked_word(guild_id: int, phrase: str) -> Program[int]:
    """Block the phrase (normalised; ValueError if empty); 0 if it already was."""
    norm = clean_phrase(phrase)
    sql = "INSERT INTO blocked_words (guild_id, phrase) VALUES ($1, $2) ON CONFLICT DO NOTHING"
    return _one(Execute(sql, (guild_id, norm)))


def remove_blocked_word(guild_id: int, phrase: str) -> Program[int]:
    """Unblock the phrase (normalised); 0 if it was not blocked."""
    norm = clean_phrase(phrase)
    return _one(Execute("DELETE FROM blocked_words WHERE guild_id = $1 AND phrase = $2", (guild_id, norm)))


def blocked_words(guild_id: int) -> Program[list[str]]:
    """The guild's blocked phrases, sorted."""
    rows = yield Fetch("SELECT phrase FROM blocked_words WHERE guild_id = $1 ORDER BY phrase", (guild_id,))
    return [str(r[0]) for r in rows]


# jobs ----------------------------------------------------------------------------------------------


def jobs(d: Dialect, where: str, *args: object) -> Program[list[api.JobRecord]]:
    """The jobs matching `where` (SQL on the alias `j`, which may end in ORDER BY / LIMIT)."""
    rows: list[Row] = yield Fetch(f"{d.job_select} WHERE {where}", args)
    return [d.job(r) for r in rows]


def get_job(d: Dialect, job_id: str) -> Program[list[api.JobRecord]]:
    """The job (a list of one, or empty)."""
    return jobs(d, "j.job_id = $1", job_id)


def job_by_message(d: Dialect, message_id: int) -> Program[list[api.JobRecord]]:
    """The job whose result is message `message_id` (the latest such, should there be several)."""
    order = f"j.created_at DESC, {d.same_instant_order} DESC"
    return jobs(d, f"j.result_message_id = $1 ORDER BY {order} LIMIT 1", message_id)


def active_jobs(d: Dialect, guild_id: int | None = None) -> Program[list[api.JobRecord]]:
    """Queued and running jobs (of one guild if given), oldest first."""
    order = f"ORDER BY j.created_at, {d.same_instant_order}"
    if guild_id is None:
        return jobs(d, f"j.state IN {_ACTIVE} {order}")
    return jobs(d, f"j.guild_id = $1 AND j.state IN {_ACTIVE} {order}", guild_id)


def undelivered_jobs(d: Dialect) -> Program[list[api.JobRecord]]:
    """Done jobs with no result message, oldest first."""
    order = f"j.created_at, {d.same_instant_order}"
    return jobs(d, f"j.state = 'done' AND j.result_message_id IS NULL ORDER BY {order}")


def set_job_state(d: Dialect, job_id: str, state: api.JobState, error: str | None) -> Program[int]:
    """Set state and error (any state but running ends a lease); 0 if the job is unknown."""
    sql = f"UPDATE jobs SET state = $2, error = $3{d.lease_kept_if_running} WHERE job_id = $1"
    return _one(Execute(sql, (job_id, api.JobState(state).value, error)))


def record_images(d: Dialect, job_id: str, seeds: Sequence[int], paths: Sequence[str]) -> Program[int]:
    """Mark done with seeds and image paths, ending any lease; 0 if the job is unknown."""
    sql = (
        f"UPDATE jobs SET state = 'done', error = NULL, {d.seeds_column} = $2, {d.paths_column} = $3"
        f"{d.lease_ended} WHERE job_id = $1"
    )
    return _one(
        Execute(sql, (job_id, d.encode_list([int(s) for s in seeds]), d.encode_list([str(p) for p in paths])))
    )


def record_delivery(job_id: str, message_id: int, channel_id: int) -> Program[int]:
    """Store the result message; 0 if the job is unknown."""
    sql = "UPDATE jobs SET result_message_id = $2, result_channel_id = $3 WHERE job_id = $1"
    return _one(Execute(sql, (job_id, message_id, channel_id)))


# retention -----------------------------------------------------------------------------------------

# Finished: failed, cancelled, or done and delivered (a done job with no result message is still owed).
_FINISHED = "(state IN ('failed', 'cancelled') OR (state = 'done' AND result_message_id IS NOT NULL))"


def purge_finished(d: Dialect, before: float) -> Program[list[str]]:
    """Delete finished jobs created before `before` (their ledger rows go with them); the paths of
    their saved images, for the caller to delete."""
    rows: list[Row] = yield Fetch(
        f"DELETE FROM jobs WHERE {_FINISHED} AND created_at < $1 RETURNING {d.paths_column}", (before,)
    )
    return [str(path) for row in rows for path in d.decode_list(row[0])]


def drop_expired_tokens(now: float) -> Program[int]:
    """Forget interaction tokens that expired by `now` (they can no longer be used); how many."""
    return _one(
        Execute(
            "UPDATE jobs SET interaction_token = NULL "
            "WHERE interaction_token IS NOT NULL AND token_expires_at <= $1",
            (now,),
        )
    )


def ledger(guild_id: int, user_id: int | None) -> Program[list[api.LedgerEntry]]:
    """A guild's usage ledger (optionally one member's), by time."""
    rows = yield Fetch(
        "SELECT user_id, job_id, images, at, refunded, refunded_images FROM usage_ledger "
        "WHERE guild_id = $1 AND (CAST($2 AS BIGINT) IS NULL OR user_id = $2) ORDER BY at, id",
        (guild_id, user_id),
    )
    return [ledger_entry(r) for r in rows]
