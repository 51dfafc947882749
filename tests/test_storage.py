"""The one `Store` suite, run on both backends: SQLite (a file in tmp_path) and PostgreSQL (a schema of
its own per test, see tests/pg_fixtures.py). Limits, windows, refunds, precedence, jobs, admin, SQL
quoting. What only one backend has stays in its own files: tests/test_storage_open.py and
tests/test_storage_processes.py (SQLite files, locks, processes), tests/test_postgres.py and
tests/test_postgres_queue.py (the server, the pool, the shared queue), tests/test_storage_migrations.py.
"""

from __future__ import annotations

import asyncio
import importlib.util
import math
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

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
from storage.store import SqlStore

# Without asyncpg (outside CI) the PostgreSQL half skips; tests.pg_fixtures would skip the whole module.
_PG = importlib.util.find_spec("asyncpg") is not None or os.environ.get("CI", "").lower() == "true"
pytest_plugins = ("tests.pg_fixtures",) if _PG else ()  # the pg_server_url and pg_url fixtures

G, G2 = 111, 222
U, U2 = 501, 502
PG_G, PG_U = 1, 10  # the guild and member of the tests that came from the PostgreSQL suite
T0 = 1_700_000_000.0
OPEN = Limits(images_per_hour=None, images_per_day=None, max_queued=None, cooldown_seconds=0.0)


@dataclass(frozen=True)
class Backend:
    """One database of one backend; `open` may be called again (a restart) and sees the same rows."""

    name: str
    target: str  # the SQLite file, or the PostgreSQL URL with its own search_path

    async def open(self, defaults: Limits = OPEN) -> SqlStore:
        if self.name == "sqlite":
            return await open_store(self.target, defaults)
        from storage.postgres import open_pg_store

        return await open_pg_store(self.target, defaults)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", str(tmp_path / "db.sqlite"))
    if not _PG:
        pytest.skip('asyncpg is not installed (pip install -e ".[postgres]")')
    return Backend("postgres", request.getfixturevalue("pg_url"))


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[SqlStore]:
    async with await backend.open() as s:
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


def new_job(job_id: str, *, guild: int = PG_G, owner: int = PG_U, images: int = 1) -> NewJob:
    """A job with a chosen id (the request JSON is opaque to the store)."""
    return NewJob(job_id, guild, 100, owner, '{"prompt": "a fox"}', images)


async def granted(store: SqlStore, now: float, **kw: Any) -> Reservation:
    out = await store.reserve(job(**kw), (), now)
    assert isinstance(out, Reservation), out
    return out


async def refused(store: SqlStore, now: float, **kw: Any) -> Refusal:
    out = await store.reserve(job(**kw), (), now)
    assert isinstance(out, Refusal), out
    return out


async def test_fifty_concurrent_reservations_grant_exactly_the_limit(store: SqlStore) -> None:
    await store.set_limits(G, Scope.GUILD, None, LimitsPatch(images_per_hour=10))
    outs = await asyncio.gather(*(store.reserve(job(), (), T0) for _ in range(50)))
    assert sum(isinstance(o, Reservation) for o in outs) == 10
    assert all(o.limit is LimitName.PER_HOUR for o in outs if isinstance(o, Refusal))
    ledger = await store.ledger(G, U)
    assert len(ledger) == 10 and sum(e.images for e in ledger) == 10


async def test_hour_window_edge_is_exactly_3600_seconds(store: SqlStore) -> None:
    await store.set_limits(G, Scope.GUILD, None, LimitsPatch(images_per_hour=1))
    await granted(store, T0)
    r = await refused(store, T0 + 3599.999)
    assert r.limit is LimitName.PER_HOUR and r.retry_at == T0 + 3600
    await granted(store, T0 + 3600)  # the first spend has left the window


async def test_day_window_edge_and_retry_time(store: SqlStore) -> None:
    await store.set_limits(G, Scope.GUILD, None, LimitsPatch(images_per_day=2))
    await granted(store, T0)
    await granted(store, T0 + 10)
    r = await refused(store, T0 + 86399)
    assert r.limit is LimitName.PER_DAY and r.retry_at == T0 + 86400
    await granted(store, T0 + 86400)
    await refused(store, T0 + 86400)  # T0+10 still inside


async def test_retry_at_is_when_enough_images_leave_the_window(store: SqlStore) -> None:
    await store.set_limits(G, Scope.GUILD, None, LimitsPatch(images_per_hour=5))
    await granted(store, T0, images=3)
    await granted(store, T0 + 100, images=2)
    assert (await refused(store, T0 + 200, images=3)).retry_at == T0 + 3600  # the 3 free enough
    assert (await refused(store, T0 + 200, images=4)).retry_at == T0 + 100 + 3600  # needs both
    assert (await refused(store, T0 + 200, images=6)).retry_at == math.inf  # can never fit
    await granted(store, T0 + 3600, images=3)


async def test_refund_frees_the_window_once(store: SqlStore) -> None:
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


async def test_refund_images_gives_back_part_of_a_spend(store: SqlStore) -> None:
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


async def test_refund_after_partial_refund_gives_back_the_rest(store: SqlStore) -> None:
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


async def test_cooldown_counts_from_the_last_spend(store: SqlStore) -> None:
    await store.set_limits(G, Scope.GUILD, None, LimitsPatch(cooldown_seconds=30))
    await granted(store, T0)
    r = await refused(store, T0 + 10)
    assert r.limit is LimitName.COOLDOWN and r.retry_at == T0 + 30
    last = await granted(store, T0 + 30)
    await store.refund(last.job.job_id, T0 + 31)  # a refunded request does not hold the cooldown
    await granted(store, T0 + 32)


async def test_max_queued_counts_queued_and_running_jobs(store: SqlStore) -> None:
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


async def test_refusal_names_the_limit_that_frees_last(store: SqlStore) -> None:
    await store.set_limits(
        G, Scope.GUILD, None, LimitsPatch(images_per_hour=1, images_per_day=1, cooldown_seconds=60)
    )
    await granted(store, T0)
    r = await refused(store, T0 + 1)
    assert r.limit is LimitName.PER_DAY and r.retry_at == T0 + 86400
    assert r.limits == Limits(1, 1, None, 60.0)


async def test_precedence_user_then_most_generous_role_then_guild_then_defaults(backend: Backend) -> None:
    defaults = Limits(images_per_hour=5, images_per_day=50, max_queued=3, cooldown_seconds=10.0)
    async with await backend.open(defaults) as s:
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


async def test_show_limits_and_validation(store: SqlStore) -> None:
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


async def test_usage_reports_spends_and_refill_times(store: SqlStore) -> None:
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


async def test_guilds_are_isolated(store: SqlStore) -> None:
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


async def test_blocked_words_are_normalised_and_idempotent(store: SqlStore) -> None:
    assert await store.add_blocked_word(G, "  Red   FOX ") is True
    assert await store.add_blocked_word(G, "red fox") is False
    assert await store.blocked_words(G) == ["red fox"]
    assert await store.remove_blocked_word(G, "RED FOX") is True
    assert await store.remove_blocked_word(G, "red fox") is False
    with pytest.raises(ValueError):
        await store.add_blocked_word(G, "   ")
    assert await store.blocked_words(G2) == []  # per guild


async def test_blocked_words_are_kept_in_the_form_prompts_are_matched_in(store: SqlStore) -> None:
    # NFKC + casefold + invisible marks dropped: the same normalisation `find_blocked` applies to prompts
    assert await store.add_blocked_word(G, "Ｓtraße") is True
    assert await store.add_blocked_word(G, "b\u200bad") is True
    assert await store.blocked_words(G) == ["bad", "strasse"]
    assert await store.remove_blocked_word(G, "STRASSE") is True


async def test_sql_quotes_are_data(store: SqlStore) -> None:
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


async def test_job_lifecycle_and_restart_queries(store: SqlStore) -> None:
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


async def test_full_record_round_trips(store: SqlStore) -> None:
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
    )
    r = await store.reserve(new, (), T0)
    assert isinstance(r, Reservation)
    assert await store.get_job("full") == r.job
    assert (r.job.interaction_token, r.job.token_expires_at, r.job.parent_index) == ("tok", T0 + 900, 2)
    assert await store.unfinished_jobs() == [r.job]


async def test_job_by_message_finds_the_delivered_job(backend: Backend) -> None:
    async with await backend.open() as s:
        a = await granted(s, T0)
        b = await granted(s, T0 + 1)
        assert await s.job_by_message(4242) is None  # nothing delivered yet
        await s.record_images(a.job.job_id, (1,), ("a.png",))
        await s.record_delivery(a.job.job_id, 4242, 9)
        await s.record_images(b.job.job_id, (2,), ("b.png",))
        await s.record_delivery(b.job.job_id, 4343, 9)
    async with await backend.open() as s:  # after a restart
        found = await s.job_by_message(4242)
        assert found is not None and found == await s.get_job(a.job.job_id)
        assert found.result_message_id == 4242
        other = await s.job_by_message(4343)
        assert other is not None and other.job_id == b.job.job_id
        assert await s.job_by_message(9) is None  # a channel id is not a message id
        if not isinstance(s, SqliteStore):
            return
        plan = await s._db.run(
            lambda c: c.execute(
                "EXPLAIN QUERY PLAN SELECT job_id FROM jobs WHERE result_message_id = ?", (1,)
            ).fetchall()
        )
        assert "jobs_result_message" in " ".join(str(row[-1]) for row in plan)


async def test_closed_store_raises_storage_error(backend: Backend) -> None:
    s = await backend.open()
    await s.close()
    with pytest.raises(StorageError, match="closed"):
        await s.get_job("x")


# limits -------------------------------------------------------------------------------------------


async def test_hourly_window_edges_and_retry_time(store: SqlStore) -> None:
    await store.set_limits(PG_G, Scope.USER, PG_U, LimitsPatch(images_per_hour=3))
    assert isinstance(await store.reserve(new_job("a", images=2), (), T0), Reservation)
    assert isinstance(await store.reserve(new_job("b"), (), T0 + 10), Reservation)
    refused = await store.reserve(new_job("c"), (), T0 + 20)
    assert isinstance(refused, Refusal)
    assert refused.limit is LimitName.PER_HOUR and refused.retry_at == T0 + 3600
    # One second before the first spend leaves the window: still refused; at the edge: granted.
    assert isinstance(await store.reserve(new_job("c"), (), T0 + 3599.999), Refusal)
    assert isinstance(await store.reserve(new_job("c", images=2), (), T0 + 3600), Reservation)
    never = await store.reserve(new_job("d", images=4), (), T0 + 99_999)
    assert isinstance(never, Refusal) and never.retry_at == math.inf


async def test_daily_window_cooldown_and_max_queued(store: SqlStore) -> None:
    await store.set_limits(
        PG_G, Scope.GUILD, None, LimitsPatch(images_per_day=2, cooldown_seconds=60, max_queued=5)
    )
    assert isinstance(await store.reserve(new_job("a"), (), T0), Reservation)
    cool = await store.reserve(new_job("b"), (), T0 + 30)
    assert isinstance(cool, Refusal) and cool.limit is LimitName.COOLDOWN and cool.retry_at == T0 + 60
    assert isinstance(await store.reserve(new_job("b"), (), T0 + 60), Reservation)
    day = await store.reserve(new_job("c"), (), T0 + 7200)
    assert isinstance(day, Refusal) and day.limit is LimitName.PER_DAY and day.retry_at == T0 + 86400
    await store.set_limits(PG_G, Scope.USER, PG_U, LimitsPatch(images_per_day=UNLIMITED, max_queued=2))
    full = await store.reserve(new_job("c"), (), T0 + 7200)
    assert isinstance(full, Refusal) and full.limit is LimitName.MAX_QUEUED and full.retry_at == T0 + 7200
    await store.set_job_state("a", JobState.DONE)
    assert isinstance(await store.reserve(new_job("c"), (), T0 + 7200), Reservation)


async def test_precedence_user_role_guild_default(store: SqlStore) -> None:
    defaults = OPEN
    assert await store.effective_limits(PG_G, PG_U, ()) == defaults
    await store.set_limits(PG_G, Scope.GUILD, None, LimitsPatch(images_per_hour=5, cooldown_seconds=30))
    await store.set_limits(PG_G, Scope.ROLE, 100, LimitsPatch(images_per_hour=8, cooldown_seconds=10))
    await store.set_limits(PG_G, Scope.ROLE, 200, LimitsPatch(images_per_hour=UNLIMITED, images_per_day=7))
    await store.set_limits(PG_G, Scope.ROLE, 300, LimitsPatch(images_per_hour=50))
    assert await store.effective_limits(PG_G, PG_U, ()) == Limits(5, None, None, 30.0)
    assert await store.effective_limits(PG_G, PG_U, (100,)) == Limits(8, None, None, 10.0)
    assert await store.effective_limits(PG_G, PG_U, (100, 200)) == Limits(None, 7, None, 10.0)
    await store.set_limits(PG_G, Scope.USER, PG_U, LimitsPatch(images_per_hour=1))
    await store.set_limits(
        PG_G, Scope.USER, PG_U, LimitsPatch(max_queued=2)
    )  # patching keeps images_per_hour
    assert await store.effective_limits(PG_G, PG_U, (100, 200)) == Limits(1, 7, 2, 10.0)
    # Another guild and another member are untouched.
    assert await store.effective_limits(2, PG_U, (100, 200)) == defaults
    assert await store.effective_limits(PG_G, PG_U + 1, ()) == Limits(5, None, None, 30.0)
    view = await store.show_limits(PG_G, PG_U, (100,))
    assert view.guild_default == LimitsPatch(images_per_hour=5, cooldown_seconds=30)
    assert set(view.role_overrides) == {100, 200, 300}
    assert view.user_override == LimitsPatch(images_per_hour=1, max_queued=2)
    assert view.effective == Limits(1, None, 2, 10.0)
    assert await store.reset_limits(PG_G, Scope.USER, PG_U) is True
    assert await store.reset_limits(PG_G, Scope.USER, PG_U) is False
    assert await store.effective_limits(PG_G, PG_U, (100,)) == Limits(8, None, None, 10.0)
    with pytest.raises(ValueError):
        await store.set_limits(PG_G, Scope.USER, None, LimitsPatch(images_per_hour=1))
    with pytest.raises(ValueError):
        await store.set_limits(PG_G, Scope.GUILD, None, LimitsPatch(images_per_hour=-5))


async def test_refund_gives_spend_back_once(store: SqlStore) -> None:
    await store.set_limits(PG_G, Scope.USER, PG_U, LimitsPatch(images_per_hour=4))
    assert isinstance(await store.reserve(new_job("a", images=4), (), T0), Reservation)
    assert isinstance(await store.reserve(new_job("b"), (), T0 + 1), Refusal)
    assert await store.refund("a", T0 + 2) is True
    assert await store.refund("a", T0 + 3) is False
    assert await store.refund("nope", T0 + 3) is False
    job = await store.get_job("a")
    assert job is not None and job.refunded
    usage = await store.usage(PG_G, PG_U, (), T0 + 4)
    assert usage.used_last_hour == 0
    assert isinstance(await store.reserve(new_job("b", images=4), (), T0 + 5), Reservation)
    entries = await store.ledger(PG_G, PG_U)
    assert [(e.job_id, e.images, e.refunded) for e in entries] == [("a", 4, True), ("b", 4, False)]


async def test_partial_refund_holds_the_cooldown_until_all_is_back(store: SqlStore) -> None:
    await store.set_limits(PG_G, Scope.USER, PG_U, LimitsPatch(images_per_hour=4, cooldown_seconds=60))
    assert isinstance(await store.reserve(new_job("a", images=4), (), T0), Reservation)
    assert await store.refund_images("a", 1, T0 + 1) is True
    usage = await store.usage(PG_G, PG_U, (), T0 + 1)
    assert (usage.used_last_hour, usage.hour_refills_at, usage.cooldown_until) == (3, T0 + 3600, T0 + 60)
    job = await store.get_job("a")
    assert job is not None and not job.refunded
    refused = await store.reserve(new_job("b"), (), T0 + 2)
    assert isinstance(refused, Refusal) and refused.limit is LimitName.COOLDOWN  # partial: still held
    assert await store.refund_images("a", 10, T0 + 3) is True  # clipped to the 3 left
    assert await store.refund_images("a", 1, T0 + 4) is False
    assert await store.refund("a", T0 + 4) is False
    job = await store.get_job("a")
    assert job is not None and job.refunded
    assert isinstance(await store.reserve(new_job("b", images=4), (), T0 + 5), Reservation)
    assert await store.refund_images("b", 2, T0 + 6) is True
    assert await store.refund("b", T0 + 7) is True  # the rest, once
    assert await store.refund("b", T0 + 7) is False
    assert await store.refund_images("nope", 1, T0 + 7) is False
    with pytest.raises(ValueError):
        await store.refund_images("b", 0, T0 + 7)
    entries = await store.ledger(PG_G, PG_U)
    assert [(e.job_id, e.refunded, e.refunded_images) for e in entries] == [("a", True, 4), ("b", True, 4)]
    assert (await store.usage(PG_G, PG_U, (), T0 + 8)).used_last_hour == 0


async def test_job_by_message(store: SqlStore) -> None:
    for job_id in ("a", "b"):
        assert isinstance(await store.reserve(new_job(job_id), (), T0), Reservation)
    assert await store.job_by_message(555) is None
    await store.record_images("a", (1,), ("/a.png",))
    await store.record_delivery("a", 555, 100)
    await store.record_delivery("b", 556, 100)
    found = await store.job_by_message(555)
    assert found is not None and found == await store.get_job("a") and found.result_message_id == 555
    other = await store.job_by_message(556)
    assert other is not None and other.job_id == "b"
    assert await store.job_by_message(100) is None


async def test_usage_reports_windows_and_refill_times(store: SqlStore) -> None:
    await store.set_limits(PG_G, Scope.USER, PG_U, LimitsPatch(images_per_hour=10, cooldown_seconds=100))
    await store.reserve(new_job("a", images=2), (), T0)
    await store.reserve(new_job("b", images=3), (), T0 + 4000)
    u = await store.usage(PG_G, PG_U, (), T0 + 4010)
    assert (u.used_last_hour, u.used_last_day, u.queued) == (3, 5, 2)
    assert u.hour_refills_at == T0 + 4000 + 3600
    assert u.day_refills_at == T0 + 86400
    assert u.cooldown_until == T0 + 4100


# jobs ---------------------------------------------------------------------------------------------


async def test_jobs_survive_a_restart(backend: Backend) -> None:
    s = await backend.open()
    r = await s.reserve(new_job("a"), (), T0)
    assert isinstance(r, Reservation) and r.job.state is JobState.QUEUED
    await s.reserve(new_job("b", guild=2), (), T0 + 1)
    await s.reserve(new_job("c"), (), T0 + 2)
    with pytest.raises(ValueError, match="already exists"):
        await s.reserve(new_job("a"), (), T0 + 3)
    await s.set_job_state("a", JobState.RUNNING)
    await s.record_images("c", (1, 2**32 - 1), ("/x/1.png", "/x/2.png"))
    await s.close()

    s = await backend.open()  # "the process restarted"
    try:
        assert [j.job_id for j in await s.unfinished_jobs()] == ["a", "b"]
        assert [j.job_id for j in await s.queued_jobs(PG_G)] == ["a"]
        c = await s.get_job("c")
        assert c is not None and c.state is JobState.DONE
        assert c.seeds == (1, 2**32 - 1) and c.image_paths == ("/x/1.png", "/x/2.png")
        assert [j.job_id for j in await s.undelivered_jobs()] == ["c"]
        await s.record_delivery("c", 555, 100)
        assert await s.undelivered_jobs() == []
        c = await s.get_job("c")
        assert c is not None and (c.result_message_id, c.result_channel_id) == (555, 100)
        await s.set_job_state("a", JobState.FAILED, "boom")
        a = await s.get_job("a")
        assert a is not None and a.state is JobState.FAILED and a.error == "boom"
        for call in (
            s.set_job_state("zz", JobState.DONE),
            s.record_images("zz", (), ()),
            s.record_delivery("zz", 1, 2),
        ):
            with pytest.raises(KeyError):
                await call
        assert await s.get_job("zz") is None
    finally:
        await s.close()


# settings and macros ---------------------------------------------------------------------------------


async def test_member_and_guild_settings_are_kept_apart_and_survive_a_reopen(backend: Backend) -> None:
    from storage.interface import PromptSettings

    async with await backend.open() as s:
        await s.set_prompt_settings(G, U, {"remix": True, "count": 2, "sampler": "ddim"})
        await s.set_prompt_settings(G, None, {"aspect": "16:9", "negative": "blur, 'text'", "count": 4})
        await s.set_prompt_settings(G, U, {"suffix": "oil painting", "sampler": None})  # None clears one
        await s.set_prompt_settings(G2, U, {"count": 3})
    async with await backend.open() as s:
        view = await s.prompt_settings(G, U)
        assert view.member == PromptSettings(remix=True, count=2, suffix="oil painting")
        assert view.guild == PromptSettings(count=4, aspect="16:9", negative="blur, 'text'")
        assert (await s.prompt_settings(G2, U)).member == PromptSettings(count=3)
        assert (await s.prompt_settings(G, U2)).member == PromptSettings()
        assert await s.reset_prompt_settings(G, U) and not await s.reset_prompt_settings(G, U)
        assert (await s.prompt_settings(G, U)).member == PromptSettings()
        assert (await s.prompt_settings(G, U)).guild.count == 4  # the guild's row stays


async def test_bad_settings_change_nothing(store: SqlStore) -> None:
    bad: list[dict[str, object | None]] = [{"colour": "red"}, {"count": "2"}, {"remix": 1}, {}]
    for changes in bad:
        with pytest.raises(ValueError):
            await store.set_prompt_settings(G, U, changes)
    with pytest.raises(ValueError, match="guild's row"):
        await store.set_prompt_settings(G, 0, {"count": 1})
    assert (await store.prompt_settings(G, U)).member.count is None


async def test_a_guilds_video_cost_is_set_read_back_and_cleared(backend: Backend) -> None:
    from storage.interface import PromptSettings

    async with await backend.open() as s:
        assert (await s.prompt_settings(G, U)).guild.video_cost is None  # the bot's default
        await s.set_prompt_settings(G, None, {"video_cost": 12, "count": 2})
        await s.set_prompt_settings(G2, None, {"video_cost": 3})
    async with await backend.open() as s:
        view = await s.prompt_settings(G, U)
        assert view.guild == PromptSettings(count=2, video_cost=12) and view.member == PromptSettings()
        assert (await s.prompt_settings(G2, U)).guild.video_cost == 3  # each guild its own
        with pytest.raises(ValueError, match="takes int"):
            await s.set_prompt_settings(G, None, {"video_cost": "9"})
        await s.set_prompt_settings(G, None, {"video_cost": None})  # cleared: the bot's default again
        assert (await s.prompt_settings(G, U)).guild == PromptSettings(count=2)
        assert (await s.prompt_settings(G2, U)).guild.video_cost == 3


async def test_macros_are_personal_limited_and_replaceable(store: SqlStore) -> None:
    assert await store.set_macro(G, U, "gold", "golden hour --ar 3:2", limit=2)
    assert await store.set_macro(G, U, "noir", "black and white", limit=2)
    assert not await store.set_macro(G, U, "third", "x", limit=2)  # at the limit
    assert await store.set_macro(G, U, "gold", "golden hour, 35mm", limit=2)  # replacing is fine
    assert await store.set_macro(G, U2, "gold", "someone else's", limit=2)
    view = await store.prompt_settings(G, U)
    assert view.macros == {"gold": "golden hour, 35mm", "noir": "black and white"}
    assert await store.delete_macro(G, U, "noir") and not await store.delete_macro(G, U, "noir")
    assert (await store.prompt_settings(G, U)).macros == {"gold": "golden hour, 35mm"}
    assert (await store.prompt_settings(G2, U)).macros == {}


# retention -------------------------------------------------------------------------------------------


async def test_retention_deletes_old_finished_jobs_and_their_images_only(
    store: SqlStore, tmp_path: Path
) -> None:
    from jobs.retention import DAY_S, purge_once

    old, new = T0, T0 + 9 * DAY_S
    kinds = ("delivered", "failed", "cancelled", "undelivered", "queued", "running")
    jobs_by_kind: dict[tuple[str, float], str] = {}
    for at in (old, new):
        for kind in kinds:
            reservation = await granted(store, at)
            job_id = reservation.job.job_id
            jobs_by_kind[(kind, at)] = job_id
            png = tmp_path / f"{job_id}.png"
            png.write_bytes(b"png")
            if kind in ("delivered", "undelivered"):
                await store.record_images(job_id, (1,), (str(png),))
            if kind == "delivered":
                await store.record_delivery(job_id, 42, 9)
            if kind in ("failed", "cancelled", "running"):
                await store.set_job_state(job_id, JobState(kind), kind)
    purged = await purge_once(store, 7, new + 1)
    gone = {jobs_by_kind[(k, old)] for k in ("delivered", "failed", "cancelled")}
    for (kind, at), job_id in jobs_by_kind.items():
        found = await store.get_job(job_id)
        assert (found is None) == (job_id in gone), (kind, at)
        assert (tmp_path / f"{job_id}.png").exists() == (job_id not in gone or kind != "delivered"), kind
    assert purged.files == 1 and purged.paths == 1
    assert {e.job_id for e in await store.ledger(G, U)}.isdisjoint(gone)
    assert (await purge_once(store, 7, new + 1)).paths == 0


async def test_retention_drops_expired_interaction_tokens(store: SqlStore) -> None:
    from jobs.retention import purge_once

    fresh = NewJob("tok-fresh", G, 9, U, "{}", 1, 1, "fresh-token", T0 + 900)
    stale = NewJob("tok-stale", G, 9, U, "{}", 1, 2, "stale-token", T0 + 10)
    for new in (fresh, stale):
        assert isinstance(await store.reserve(new, (), T0), Reservation)
    purged = await purge_once(store, 30, T0 + 60)
    kept, dropped = await store.get_job("tok-fresh"), await store.get_job("tok-stale")
    assert purged.tokens == 1 and kept is not None and dropped is not None
    assert kept.interaction_token == "fresh-token" and dropped.interaction_token is None
    assert dropped.state is JobState.QUEUED  # the job itself stays; only its unusable token goes
