"""SqliteStore in one process: limits, windows, refunds, precedence, jobs, admin, SQL quoting."""

from __future__ import annotations

import asyncio
import math
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from storage.db import MIGRATIONS, SCHEMA_VERSION, open_database, user_version
from storage.interface import (
    UNLIMITED,
    JobState,
    LimitName,
    Limits,
    LimitsPatch,
    NewJob,
    Refusal,
    Reservation,
    Scope,
    StorageError,
)
from storage.sqlite import SqliteStore, open_store

G, G2 = 111, 222
U, U2 = 501, 502
T0 = 1_700_000_000.0
OPEN = Limits(images_per_hour=None, images_per_day=None, max_queued=None, cooldown_seconds=0.0)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with open_store(tmp_path / "db.sqlite", OPEN) as s:
        yield s


_ids = iter(range(10**9))


def job(guild: int = G, user: int = U, images: int = 1, request_json: str = "{}") -> NewJob:
    return NewJob(
        job_id=f"job{next(_ids)}",
        guild_id=guild,
        channel_id=9,
        owner_id=user,
        request_json=request_json,
        images=images,
    )


async def granted(store: SqliteStore, now: float, **kw: Any) -> Reservation:
    out = await store.reserve(job(**kw), (), now)
    assert isinstance(out, Reservation), out
    return out


async def refused(store: SqliteStore, now: float, **kw: Any) -> Refusal:
    out = await store.reserve(job(**kw), (), now)
    assert isinstance(out, Refusal), out
    return out


async def test_fifty_concurrent_reservations_grant_exactly_the_limit(store: SqliteStore) -> None:
    await store.set_limits(G, Scope.GUILD, None, LimitsPatch(images_per_hour=10))
    outs = await asyncio.gather(*(store.reserve(job(), (), T0) for _ in range(50)))
    assert sum(isinstance(o, Reservation) for o in outs) == 10
    assert all(o.limit is LimitName.PER_HOUR for o in outs if isinstance(o, Refusal))
    ledger = await store.ledger(G, U)
    assert len(ledger) == 10 and sum(e.images for e in ledger) == 10


async def test_hour_window_edge_is_exactly_3600_seconds(store: SqliteStore) -> None:
    await store.set_limits(G, Scope.GUILD, None, LimitsPatch(images_per_hour=1))
    await granted(store, T0)
    r = await refused(store, T0 + 3599.999)
    assert r.limit is LimitName.PER_HOUR and r.retry_at == T0 + 3600
    await granted(store, T0 + 3600)  # the first spend has left the window


async def test_day_window_edge_and_retry_time(store: SqliteStore) -> None:
    await store.set_limits(G, Scope.GUILD, None, LimitsPatch(images_per_day=2))
    await granted(store, T0)
    await granted(store, T0 + 10)
    r = await refused(store, T0 + 86399)
    assert r.limit is LimitName.PER_DAY and r.retry_at == T0 + 86400
    await granted(store, T0 + 86400)
    await refused(store, T0 + 86400)  # T0+10 still inside


async def test_retry_at_is_when_enough_images_leave_the_window(store: SqliteStore) -> None:
    await store.set_limits(G, Scope.GUILD, None, LimitsPatch(images_per_hour=5))
    await granted(store, T0, images=3)
    await granted(store, T0 + 100, images=2)
    assert (await refused(store, T0 + 200, images=3)).retry_at == T0 + 3600  # the 3 free enough
    assert (await refused(store, T0 + 200, images=4)).retry_at == T0 + 100 + 3600  # needs both
    assert (await refused(store, T0 + 200, images=6)).retry_at == math.inf  # can never fit
    await granted(store, T0 + 3600, images=3)


async def test_refund_frees_the_window_once(store: SqliteStore) -> None:
    await store.set_limits(G, Scope.GUILD, None, LimitsPatch(images_per_hour=2))
    first = await granted(store, T0, images=2)
    await refused(store, T0 + 1)
    assert await store.refund(first.job.job_id, T0 + 2) is True
    assert await store.refund(first.job.job_id, T0 + 3) is False  # double refund is a no-op
    assert await store.refund("no-such-job", T0 + 3) is False
    record = await store.get_job(first.job.job_id)
    assert record is not None and record.refunded
    await granted(store, T0 + 4, images=2)
    await refused(store, T0 + 5)  # the refund was given back once, not twice
    usage = await store.usage(G, U, (), T0 + 5)
    assert usage.used_last_hour == 2


async def test_refund_images_gives_back_part_of_a_spend(store: SqliteStore) -> None:
    await store.set_limits(G, Scope.GUILD, None, LimitsPatch(images_per_hour=4, images_per_day=5))
    first = await granted(store, T0, images=4)
    await refused(store, T0 + 1)
    assert await store.refund_images(first.job.job_id, 1, T0 + 2) is True  # one flagged image
    usage = await store.usage(G, U, (), T0 + 2)
    assert (usage.used_last_hour, usage.used_last_day) == (3, 3)
    assert usage.hour_refills_at == T0 + 3600  # the job still holds 3 images in the window
    record = await store.get_job(first.job.job_id)
    assert record is not None and not record.refunded  # only part of it came back
    second = await granted(store, T0 + 3)  # 3 + 1 fits the hour again
    r = await refused(store, T0 + 4)
    assert r.limit is LimitName.PER_HOUR and r.retry_at == T0 + 3600
    # Each call gives back again, but never more than is left: 3 left, 10 asked.
    assert await store.refund_images(first.job.job_id, 10, T0 + 5) is True
    assert await store.refund_images(first.job.job_id, 1, T0 + 6) is False  # nothing left
    assert await store.refund(first.job.job_id, T0 + 6) is False  # already wholly given back
    record = await store.get_job(first.job.job_id)
    assert record is not None and record.refunded
    usage = await store.usage(G, U, (), T0 + 6)
    assert (usage.used_last_hour, usage.hour_refills_at) == (1, T0 + 3 + 3600)
    await granted(store, T0 + 7, images=3)
    assert (await refused(store, T0 + 8)).limit is LimitName.PER_HOUR  # the hour holds 1 + 3 of 4
    ledger = await store.ledger(G, U)
    assert [(e.images, e.refunded, e.refunded_images) for e in ledger] == [
        (4, True, 4),
        (1, False, 0),
        (3, False, 0),
    ]
    # refund() after a partial refund gives back the rest, once.
    assert await store.refund_images(second.job.job_id, 1, T0 + 9) is True
    assert await store.refund(second.job.job_id, T0 + 9) is False
    assert await store.refund_images("no-such-job", 1, T0 + 9) is False
    for bad in (0, -1):
        with pytest.raises(ValueError):
            await store.refund_images(first.job.job_id, bad, T0 + 9)


async def test_refund_after_partial_refund_gives_back_the_rest(store: SqliteStore) -> None:
    await store.set_limits(G, Scope.GUILD, None, LimitsPatch(images_per_hour=4, cooldown_seconds=60))
    a = await granted(store, T0, images=4)
    assert await store.refund_images(a.job.job_id, 3, T0 + 1) is True
    r = await refused(store, T0 + 2)  # a partial refund still holds the cooldown
    assert r.limit is LimitName.COOLDOWN
    assert await store.refund(a.job.job_id, T0 + 3) is True
    assert await store.refund(a.job.job_id, T0 + 3) is False
    assert (await store.usage(G, U, (), T0 + 4)).used_last_hour == 0
    await granted(store, T0 + 4, images=4)  # neither the window nor the cooldown holds it now
    assert [(e.refunded, e.refunded_images) for e in await store.ledger(G, U)] == [(True, 4), (False, 0)]


async def test_cooldown_counts_from_the_last_spend(store: SqliteStore) -> None:
    await store.set_limits(G, Scope.GUILD, None, LimitsPatch(cooldown_seconds=30))
    await granted(store, T0)
    r = await refused(store, T0 + 10)
    assert r.limit is LimitName.COOLDOWN and r.retry_at == T0 + 30
    last = await granted(store, T0 + 30)
    await store.refund(last.job.job_id, T0 + 31)  # a refunded request does not hold the cooldown
    await granted(store, T0 + 32)


async def test_max_queued_counts_queued_and_running_jobs(store: SqliteStore) -> None:
    await store.set_limits(G, Scope.GUILD, None, LimitsPatch(max_queued=2))
    a = await granted(store, T0)
    await granted(store, T0)
    await store.set_job_state(a.job.job_id, JobState.RUNNING)
    r = await refused(store, T0 + 1)
    assert r.limit is LimitName.MAX_QUEUED and r.retry_at == T0 + 1
    await store.record_images(a.job.job_id, (1,), ("a.png",))
    await granted(store, T0 + 2)
    await store.set_limits(G, Scope.GUILD, None, LimitsPatch(max_queued=0))
    assert (await refused(store, T0 + 3)).retry_at == math.inf


async def test_refusal_names_the_limit_that_frees_last(store: SqliteStore) -> None:
    await store.set_limits(
        G, Scope.GUILD, None, LimitsPatch(images_per_hour=1, images_per_day=1, cooldown_seconds=60)
    )
    await granted(store, T0)
    r = await refused(store, T0 + 1)
    assert r.limit is LimitName.PER_DAY and r.retry_at == T0 + 86400
    assert r.limits == Limits(1, 1, None, 60.0)


async def test_precedence_user_then_most_generous_role_then_guild_then_defaults(tmp_path: Path) -> None:
    defaults = Limits(images_per_hour=5, images_per_day=50, max_queued=3, cooldown_seconds=10.0)
    async with open_store(tmp_path / "p.db", defaults) as s:
        assert await s.effective_limits(G, U, (1, 2)) == defaults
        await s.set_limits(G, Scope.GUILD, None, LimitsPatch(images_per_hour=8))
        assert await s.effective_limits(G, U, ()) == Limits(8, 50, 3, 10.0)  # unset fields fall through
        await s.set_limits(G, Scope.ROLE, 1, LimitsPatch(images_per_hour=20, cooldown_seconds=30))
        await s.set_limits(G, Scope.ROLE, 2, LimitsPatch(images_per_hour=12, images_per_day=UNLIMITED))
        await s.set_limits(G, Scope.ROLE, 3, LimitsPatch(images_per_hour=99, cooldown_seconds=0))
        # most generous per field among the roles the member holds; role 3 is not held
        assert await s.effective_limits(G, U, (1, 2)) == Limits(20, None, 3, 30.0)
        assert await s.effective_limits(G, U, (2,)) == Limits(12, None, 3, 10.0)
        assert await s.effective_limits(G, U, (1, 3)) == Limits(99, 50, 3, 0.0)  # shorter cooldown wins
        await s.set_limits(G, Scope.ROLE, 4, LimitsPatch(images_per_hour=UNLIMITED))
        assert (await s.effective_limits(G, U, (1, 4))).images_per_hour is None  # unlimited beats 20
        await s.set_limits(G, Scope.USER, U, LimitsPatch(images_per_hour=2))
        assert await s.effective_limits(G, U, (1, 2)) == Limits(2, None, 3, 30.0)  # user wins its field
        assert await s.effective_limits(G, U2, (1, 2)) == Limits(20, None, 3, 30.0)
        await s.set_limits(G, Scope.USER, U, LimitsPatch(images_per_day=4))  # patch keeps the hour
        assert await s.effective_limits(G, U, ()) == Limits(2, 4, 3, 10.0)
        # and reserve enforces what effective_limits says (role 3: no cooldown)
        for _ in range(2):
            assert isinstance(await s.reserve(job(), (1, 3), T0), Reservation)
        out = await s.reserve(job(), (1, 3), T0)
        assert isinstance(out, Refusal) and out.limit is LimitName.PER_HOUR
        assert await s.reset_limits(G, Scope.USER, U) is True
        assert await s.reset_limits(G, Scope.USER, U) is False
        assert isinstance(await s.reserve(job(), (1, 3), T0), Reservation)  # back to role 3's 99


async def test_show_limits_and_validation(store: SqliteStore) -> None:
    await store.set_limits(G, Scope.GUILD, None, LimitsPatch(images_per_hour=3))
    await store.set_limits(G, Scope.ROLE, 7, LimitsPatch(max_queued=UNLIMITED))
    await store.set_limits(G, Scope.USER, U, LimitsPatch(cooldown_seconds=5))
    view = await store.show_limits(G, U, (7,))
    assert view.guild_default == LimitsPatch(images_per_hour=3)
    assert view.role_overrides == {7: LimitsPatch(max_queued=UNLIMITED)}
    assert view.user_override == LimitsPatch(cooldown_seconds=5.0)
    assert view.effective == Limits(3, None, None, 5.0)
    assert (await store.show_limits(G)).effective is None
    with pytest.raises(ValueError):
        await store.set_limits(G, Scope.USER, U, LimitsPatch(images_per_hour=-2))
    with pytest.raises(ValueError):
        await store.set_limits(G, Scope.USER, U, LimitsPatch(cooldown_seconds=-1))
    with pytest.raises(ValueError):
        await store.set_limits(G, Scope.GUILD, 5, LimitsPatch(images_per_hour=1))
    with pytest.raises(ValueError):
        await store.set_limits(G, Scope.ROLE, None, LimitsPatch(images_per_hour=1))
    assert await store.reset_limits(G, Scope.GUILD, None) is True
    assert (await store.show_limits(G)).guild_default == LimitsPatch()


async def test_usage_reports_spends_and_refill_times(store: SqliteStore) -> None:
    await store.set_limits(G, Scope.GUILD, None, LimitsPatch(images_per_hour=10, cooldown_seconds=60))
    await granted(store, T0, images=2)
    await granted(store, T0 + 4000, images=3)
    u = await store.usage(G, U, (), T0 + 4010)
    assert (u.used_last_hour, u.used_last_day, u.queued) == (3, 5, 2)
    assert u.hour_refills_at == T0 + 4000 + 3600
    assert u.day_refills_at == T0 + 86400
    assert u.cooldown_until == T0 + 4060
    assert (await store.usage(G, U, (), T0 + 5000)).cooldown_until is None
    empty = await store.usage(G, U2, (), T0)
    assert (empty.used_last_hour, empty.hour_refills_at, empty.day_refills_at) == (0, None, None)


async def test_guilds_are_isolated(store: SqliteStore) -> None:
    await store.set_limits(G, Scope.GUILD, None, LimitsPatch(images_per_hour=1))
    await store.set_limits(G, Scope.USER, U, LimitsPatch(images_per_day=1))
    await store.add_blocked_word(G, "fox")
    await granted(store, T0, guild=G)
    await refused(store, T0, guild=G)
    for _ in range(3):  # the same member elsewhere is untouched by G's limits and spends
        await granted(store, T0, guild=G2)
    assert await store.effective_limits(G2, U, ()) == OPEN
    assert await store.blocked_words(G2) == []
    assert (await store.usage(G2, U, (), T0)).used_last_hour == 3
    assert (await store.usage(G, U, (), T0)).used_last_hour == 1
    assert [j.guild_id for j in await store.queued_jobs(G2)] == [G2, G2, G2]


async def test_blocked_words_are_normalised_and_idempotent(store: SqliteStore) -> None:
    assert await store.add_blocked_word(G, "  Red   FOX ") is True
    assert await store.add_blocked_word(G, "red fox") is False
    assert await store.blocked_words(G) == ["red fox"]
    assert await store.remove_blocked_word(G, "RED FOX") is True
    assert await store.remove_blocked_word(G, "red fox") is False
    with pytest.raises(ValueError):
        await store.add_blocked_word(G, "   ")


async def test_sql_quotes_are_data(store: SqliteStore) -> None:
    nasty = ["'; DROP TABLE jobs; --", 'robert"); DELETE FROM usage_ledger; --', "it's", "%_\\"]
    for word in nasty:
        assert await store.add_blocked_word(G, word) is True
    assert sorted(await store.blocked_words(G)) == sorted(w.lower() for w in nasty)
    prompt = '{"prompt": "a fox\'s den\\"; DROP TABLE jobs; --"}'
    r = await granted(store, T0, request_json=prompt)
    await store.set_job_state(r.job.job_id, JobState.FAILED, "it's '); DROP TABLE jobs; --")
    record = await store.get_job(r.job.job_id)
    assert record is not None and record.request_json == prompt
    assert record.error == "it's '); DROP TABLE jobs; --"
    assert len(await store.ledger(G)) == 1
    assert await store.get_job("' OR '1'='1") is None


async def test_job_lifecycle_and_restart_queries(store: SqliteStore) -> None:
    assert await store.get_job("nope") is None
    a = await granted(store, T0)
    b = await granted(store, T0 + 1, images=2)
    c = await granted(store, T0 + 2, guild=G2)
    await store.set_job_state(a.job.job_id, JobState.RUNNING)
    assert [j.job_id for j in await store.unfinished_jobs()] == [a.job.job_id, b.job.job_id, c.job.job_id]
    assert [j.job_id for j in await store.queued_jobs(G)] == [a.job.job_id, b.job.job_id]
    await store.record_images(a.job.job_id, (7, 8), ("x/1.png", "x/2.png"))
    done = await store.get_job(a.job.job_id)
    assert done is not None and done.state is JobState.DONE
    assert (done.seeds, done.image_paths, done.result_message_id) == ((7, 8), ("x/1.png", "x/2.png"), None)
    assert [j.job_id for j in await store.undelivered_jobs()] == [a.job.job_id]
    await store.record_delivery(a.job.job_id, 12345, 678)
    assert await store.undelivered_jobs() == []
    delivered = await store.get_job(a.job.job_id)
    assert delivered is not None and (delivered.result_message_id, delivered.result_channel_id) == (
        12345,
        678,
    )
    await store.set_job_state(b.job.job_id, JobState.CANCELLED, "cancelled")
    assert [j.job_id for j in await store.unfinished_jobs()] == [c.job.job_id]
    with pytest.raises(KeyError):
        await store.set_job_state("nope", JobState.RUNNING)
    with pytest.raises(KeyError):
        await store.record_delivery("nope", 1, 2)
    with pytest.raises(ValueError):  # a job id is used once
        await store.reserve(NewJob(a.job.job_id, G, 9, U, "{}", 1), (), T0 + 5)


async def test_full_record_round_trips(store: SqliteStore) -> None:
    new = NewJob(
        job_id="full",
        guild_id=G,
        channel_id=3,
        owner_id=U,
        request_json="{}",
        images=4,
        interaction_id=99,
        interaction_token="tok",
        token_expires_at=T0 + 900,
        parent_job_id="parent",
        parent_index=2,
        batch_key="sd15:512x512",
    )
    r = await store.reserve(new, (), T0)
    assert isinstance(r, Reservation)
    assert await store.get_job("full") == r.job
    assert (r.job.interaction_token, r.job.token_expires_at, r.job.parent_index) == ("tok", T0 + 900, 2)
    assert r.job.batch_key == "sd15:512x512"
    assert [j.batch_key for j in await store.unfinished_jobs()] == ["sd15:512x512"]


async def test_job_by_message_finds_the_delivered_job(tmp_path: Path) -> None:
    path = tmp_path / "msg.db"
    async with open_store(path, OPEN) as s:
        a = await granted(s, T0)
        b = await granted(s, T0 + 1)
        assert await s.job_by_message(4242) is None  # nothing delivered yet
        await s.record_images(a.job.job_id, (1,), ("a.png",))
        await s.record_delivery(a.job.job_id, 4242, 9)
        await s.record_images(b.job.job_id, (2,), ("b.png",))
        await s.record_delivery(b.job.job_id, 4343, 9)
    async with open_store(path, OPEN) as s:  # after a restart
        found = await s.job_by_message(4242)
        assert found is not None and found == await s.get_job(a.job.job_id)
        assert found.result_message_id == 4242
        other = await s.job_by_message(4343)
        assert other is not None and other.job_id == b.job.job_id
        assert await s.job_by_message(9) is None  # a channel id is not a message id
        plan = await s._db.run(
            lambda c: c.execute(
                "EXPLAIN QUERY PLAN SELECT job_id FROM jobs WHERE result_message_id = ?", (1,)
            ).fetchall()
        )
        assert "jobs_result_message" in " ".join(str(row[-1]) for row in plan)


async def test_upgrade_from_version_1_keeps_rows(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    db = await open_database(path, migrations=MIGRATIONS[:1])

    def fill(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN")
        for job_id, at, message in (("old", T0, 777), ("gone", T0 + 10, None), ("new", T0 + 20, None)):
            conn.execute(
                "INSERT INTO jobs (job_id, guild_id, channel_id, owner_id, request_json, images, state, "
                "created_at, result_message_id, result_channel_id) "
                "VALUES (?, ?, 9, ?, '{}', 2, 'done', ?, ?, 9)",
                (job_id, G, U, at, message),
            )
            conn.execute(
                "INSERT INTO usage_ledger (guild_id, user_id, job_id, images, at, refunded) "
                "VALUES (?, ?, ?, 2, ?, ?)",
                (G, U, job_id, at, int(job_id == "gone")),
            )
        conn.execute("COMMIT")

    try:
        assert await db.run(user_version) == 1
        await db.run(fill)
    finally:
        await db.close()
    async with open_store(path, OPEN) as s:
        assert await s._db.run(user_version) == SCHEMA_VERSION >= 2
        old = await s.get_job("old")
        assert old is not None and old.batch_key is None and old.result_message_id == 777
        assert await s.job_by_message(777) == old
        gone = await s.get_job("gone")
        assert gone is not None and gone.refunded
        # The refunded row stays wholly refunded; the others count in full.
        assert (await s.usage(G, U, (), T0 + 30)).used_last_hour == 4
        assert [(e.job_id, e.refunded, e.refunded_images) for e in await s.ledger(G)] == [
            ("old", False, 0),
            ("gone", True, 2),
            ("new", False, 0),
        ]
        assert await s.refund_images("new", 1, T0 + 31) is True
        assert (await s.usage(G, U, (), T0 + 31)).used_last_hour == 3


async def test_lock_held_past_busy_timeout_is_a_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    async with open_store(path, OPEN, busy_timeout_s=0.2) as s:
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(StorageError, match="locked"):
                await s.reserve(job(), (), T0)
            other.execute("ROLLBACK")
            await granted(s, T0)  # and the store still works afterwards
        finally:
            other.close()
