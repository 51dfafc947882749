"""PostgresStore on a real PostgreSQL server: opening, migrations, limits, refunds, jobs, concurrency.

Limit semantics must equal the SQLite store's: `test_same_answers_as_sqlite` replays one random
history through both and compares every answer.
"""

from __future__ import annotations

import asyncio
import math
import random
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage.interface import (
    UNLIMITED,
    JobState,
    LimitName,
    Limits,
    LimitsPatch,
    Refusal,
    Reservation,
    Scope,
    StorageError,
)
from storage.sqlite import open_store
from tests.pg_fixtures import (
    DEFAULTS,
    PG_MIGRATIONS,
    PG_SCHEMA_VERSION,
    ROOT,
    PostgresStore,
    asyncpg,
    migrate,
    new_job,
    open_pg_store,
    with_params,
)

pytest_plugins = ("tests.pg_fixtures",)  # the pg_server_url and pg_url fixtures

T0 = 1_700_000_000.0
G = 1
U = 10


@pytest.fixture
async def store(pg_url: str) -> AsyncIterator[PostgresStore]:
    s = await open_pg_store(pg_url, DEFAULTS)
    try:
        yield s
    finally:
        await s.close()


async def versions(url: str) -> list[int]:
    conn = await asyncpg.connect(url)
    try:
        return [r["version"] for r in await conn.fetch("SELECT version FROM schema_version ORDER BY version")]
    finally:
        await conn.close()


# opening and migrations ---------------------------------------------------------------------------


async def test_open_migrates_once_and_reopen_changes_nothing(pg_url: str) -> None:
    async with await open_pg_store(pg_url, DEFAULTS) as s:
        await s.set_limits(G, Scope.GUILD, None, LimitsPatch(images_per_hour=3))
    assert await versions(pg_url) == list(range(1, PG_SCHEMA_VERSION + 1))
    async with await open_pg_store(pg_url, DEFAULTS) as s:
        assert (await s.show_limits(G)).guild_default.images_per_hour == 3
    assert await versions(pg_url) == list(range(1, PG_SCHEMA_VERSION + 1))


async def test_concurrent_opens_apply_each_migration_once(pg_url: str) -> None:
    stores = await asyncio.gather(
        *(open_pg_store(pg_url, DEFAULTS, min_size=1, max_size=2) for _ in range(5))
    )
    try:
        assert await versions(pg_url) == list(range(1, PG_SCHEMA_VERSION + 1))
        granted = await stores[3].reserve(new_job("a"), (), T0)
        assert isinstance(granted, Reservation)
        assert (await stores[0].get_job("a")) == granted.job
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_upgrade_from_version_1_keeps_rows(pg_url: str) -> None:
    conn = await asyncpg.connect(pg_url)
    try:
        assert await migrate(conn, PG_MIGRATIONS[:1]) == 1
        await conn.execute(
            "INSERT INTO jobs (job_id, guild_id, channel_id, owner_id, request_json, images, state, "
            "created_at) VALUES ('old', 1, 2, 3, '{}', 1, 'queued', 5.0)"
        )
    finally:
        await conn.close()
    async with await open_pg_store(pg_url, DEFAULTS) as s:
        job = await s.get_job("old")
        assert job is not None and job.state is JobState.QUEUED and job.batch_key is None
        claimed = await s.claim_next("w", now=10.0, lease_s=30.0)
        assert [j.job_id for j in claimed] == ["old"]
    assert await versions(pg_url) == list(range(1, PG_SCHEMA_VERSION + 1))


async def test_upgrade_from_version_2_keeps_rows_and_refunds(pg_url: str) -> None:
    conn = await asyncpg.connect(pg_url)
    try:
        assert await migrate(conn, PG_MIGRATIONS[:2]) == 2
        for job_id, at, message, refunded in (("old", 5.0, 777, False), ("gone", 6.0, None, True)):
            await conn.execute(
                "INSERT INTO jobs (job_id, guild_id, channel_id, owner_id, request_json, images, state, "
                "created_at, result_message_id, result_channel_id) "
                "VALUES ($1, $2, 9, $3, '{}', 2, 'done', $4, $5, 9)",
                job_id,
                G,
                U,
                at,
                message,
            )
            await conn.execute(
                "INSERT INTO usage_ledger (guild_id, user_id, job_id, images, at, refunded) "
                "VALUES ($1, $2, $3, 2, $4, $5)",
                G,
                U,
                job_id,
                at,
                refunded,
            )
    finally:
        await conn.close()
    async with await open_pg_store(pg_url, DEFAULTS) as s:
        old = await s.get_job("old")
        assert old is not None and await s.job_by_message(777) == old
        assert [(e.job_id, e.refunded, e.refunded_images) for e in await s.ledger(G)] == [
            ("old", False, 0),
            ("gone", True, 2),
        ]
        assert (await s.usage(G, U, (), 10.0)).used_last_hour == 2
    assert await versions(pg_url) == list(range(1, PG_SCHEMA_VERSION + 1))


async def test_newer_schema_is_refused_clearly(pg_url: str) -> None:
    (await open_pg_store(pg_url, DEFAULTS)).pool  # noqa: B018
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute("INSERT INTO schema_version (version, name) VALUES (999, 'future')")
    finally:
        await conn.close()
    with pytest.raises(StorageError, match="schema version 999"):
        await open_pg_store(pg_url, DEFAULTS)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_unreachable_server_is_a_storage_error_at_open() -> None:
    url = f"postgresql://bot:secret@127.0.0.1:{_closed_port()}/imagine"
    with pytest.raises(StorageError, match="cannot reach PostgreSQL") as err:
        await open_pg_store(url, DEFAULTS, connect_timeout_s=5)
    assert "secret" not in str(err.value)


async def test_unknown_role_or_database_is_a_storage_error_at_open(pg_server_url: str) -> None:
    bad_user = pg_server_url.replace("postgres@", "nobody:pw@", 1)
    with pytest.raises(StorageError, match=r"refused the login|password") as err:
        await open_pg_store(bad_user, DEFAULTS)
    assert "pw@" not in str(err.value)
    base, _, _ = pg_server_url.rpartition("/")
    with pytest.raises(StorageError, match="does not exist"):
        await open_pg_store(f"{base}/no_such_db", DEFAULTS)


async def test_closed_store_raises_storage_error(pg_url: str) -> None:
    s = await open_pg_store(pg_url, DEFAULTS)
    await s.close()
    with pytest.raises(StorageError, match="closed"):
        await s.get_job("x")


# limits -------------------------------------------------------------------------------------------


async def test_hourly_window_edges_and_retry_time(store: PostgresStore) -> None:
    await store.set_limits(G, Scope.USER, U, LimitsPatch(images_per_hour=3))
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


async def test_daily_window_cooldown_and_max_queued(store: PostgresStore) -> None:
    await store.set_limits(
        G, Scope.GUILD, None, LimitsPatch(images_per_day=2, cooldown_seconds=60, max_queued=5)
    )
    assert isinstance(await store.reserve(new_job("a"), (), T0), Reservation)
    cool = await store.reserve(new_job("b"), (), T0 + 30)
    assert isinstance(cool, Refusal) and cool.limit is LimitName.COOLDOWN and cool.retry_at == T0 + 60
    assert isinstance(await store.reserve(new_job("b"), (), T0 + 60), Reservation)
    day = await store.reserve(new_job("c"), (), T0 + 7200)
    assert isinstance(day, Refusal) and day.limit is LimitName.PER_DAY and day.retry_at == T0 + 86400
    await store.set_limits(G, Scope.USER, U, LimitsPatch(images_per_day=UNLIMITED, max_queued=2))
    full = await store.reserve(new_job("c"), (), T0 + 7200)
    assert isinstance(full, Refusal) and full.limit is LimitName.MAX_QUEUED and full.retry_at == T0 + 7200
    await store.set_job_state("a", JobState.DONE)
    assert isinstance(await store.reserve(new_job("c"), (), T0 + 7200), Reservation)


async def test_precedence_user_role_guild_default(store: PostgresStore) -> None:
    defaults = DEFAULTS
    assert await store.effective_limits(G, U, ()) == defaults
    await store.set_limits(G, Scope.GUILD, None, LimitsPatch(images_per_hour=5, cooldown_seconds=30))
    await store.set_limits(G, Scope.ROLE, 100, LimitsPatch(images_per_hour=8, cooldown_seconds=10))
    await store.set_limits(G, Scope.ROLE, 200, LimitsPatch(images_per_hour=UNLIMITED, images_per_day=7))
    await store.set_limits(G, Scope.ROLE, 300, LimitsPatch(images_per_hour=50))
    assert await store.effective_limits(G, U, ()) == Limits(5, None, None, 30.0)
    assert await store.effective_limits(G, U, (100,)) == Limits(8, None, None, 10.0)
    assert await store.effective_limits(G, U, (100, 200)) == Limits(None, 7, None, 10.0)
    await store.set_limits(G, Scope.USER, U, LimitsPatch(images_per_hour=1))
    await store.set_limits(G, Scope.USER, U, LimitsPatch(max_queued=2))  # patching keeps images_per_hour
    assert await store.effective_limits(G, U, (100, 200)) == Limits(1, 7, 2, 10.0)
    # Another guild and another member are untouched.
    assert await store.effective_limits(2, U, (100, 200)) == defaults
    assert await store.effective_limits(G, U + 1, ()) == Limits(5, None, None, 30.0)
    view = await store.show_limits(G, U, (100,))
    assert view.guild_default == LimitsPatch(images_per_hour=5, cooldown_seconds=30)
    assert set(view.role_overrides) == {100, 200, 300}
    assert view.user_override == LimitsPatch(images_per_hour=1, max_queued=2)
    assert view.effective == Limits(1, None, 2, 10.0)
    assert await store.reset_limits(G, Scope.USER, U) is True
    assert await store.reset_limits(G, Scope.USER, U) is False
    assert await store.effective_limits(G, U, (100,)) == Limits(8, None, None, 10.0)
    with pytest.raises(ValueError):
        await store.set_limits(G, Scope.USER, None, LimitsPatch(images_per_hour=1))
    with pytest.raises(ValueError):
        await store.set_limits(G, Scope.GUILD, None, LimitsPatch(images_per_hour=-5))


async def test_refund_gives_spend_back_once(store: PostgresStore) -> None:
    await store.set_limits(G, Scope.USER, U, LimitsPatch(images_per_hour=4))
    assert isinstance(await store.reserve(new_job("a", images=4), (), T0), Reservation)
    assert isinstance(await store.reserve(new_job("b"), (), T0 + 1), Refusal)
    assert await store.refund("a", T0 + 2) is True
    assert await store.refund("a", T0 + 3) is False
    assert await store.refund("nope", T0 + 3) is False
    job = await store.get_job("a")
    assert job is not None and job.refunded
    usage = await store.usage(G, U, (), T0 + 4)
    assert usage.used_last_hour == 0
    assert isinstance(await store.reserve(new_job("b", images=4), (), T0 + 5), Reservation)
    entries = await store.ledger(G, U)
    assert [(e.job_id, e.images, e.refunded) for e in entries] == [("a", 4, True), ("b", 4, False)]


async def test_refund_images_gives_back_part_of_a_spend(store: PostgresStore) -> None:
    await store.set_limits(G, Scope.USER, U, LimitsPatch(images_per_hour=4, cooldown_seconds=60))
    assert isinstance(await store.reserve(new_job("a", images=4), (), T0), Reservation)
    assert await store.refund_images("a", 1, T0 + 1) is True
    usage = await store.usage(G, U, (), T0 + 1)
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
    entries = await store.ledger(G, U)
    assert [(e.job_id, e.refunded, e.refunded_images) for e in entries] == [("a", True, 4), ("b", True, 4)]
    assert (await store.usage(G, U, (), T0 + 8)).used_last_hour == 0


async def test_job_by_message(store: PostgresStore) -> None:
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


async def test_usage_reports_windows_and_refill_times(store: PostgresStore) -> None:
    await store.set_limits(G, Scope.USER, U, LimitsPatch(images_per_hour=10, cooldown_seconds=100))
    await store.reserve(new_job("a", images=2), (), T0)
    await store.reserve(new_job("b", images=3), (), T0 + 4000)
    u = await store.usage(G, U, (), T0 + 4010)
    assert (u.used_last_hour, u.used_last_day, u.queued) == (3, 5, 2)
    assert u.hour_refills_at == T0 + 4000 + 3600
    assert u.day_refills_at == T0 + 86400
    assert u.cooldown_until == T0 + 4100


async def test_blocked_words_are_normalised_and_per_guild(store: PostgresStore) -> None:
    assert await store.add_blocked_word(G, "  Red   Fox ") is True
    assert await store.add_blocked_word(G, "red fox") is False
    assert await store.blocked_words(G) == ["red fox"]
    assert await store.blocked_words(2) == []
    assert await store.remove_blocked_word(G, "RED FOX") is True
    assert await store.remove_blocked_word(G, "red fox") is False
    with pytest.raises(ValueError):
        await store.add_blocked_word(G, "   ")


# jobs ---------------------------------------------------------------------------------------------


async def test_job_life_and_restart_queries(pg_url: str) -> None:
    s = await open_pg_store(pg_url, DEFAULTS)
    r = await s.reserve(new_job("a", batch_key="k1"), (), T0)
    assert isinstance(r, Reservation) and r.job.state is JobState.QUEUED and r.job.batch_key == "k1"
    await s.reserve(new_job("b", guild=2), (), T0 + 1)
    await s.reserve(new_job("c"), (), T0 + 2)
    with pytest.raises(ValueError, match="already exists"):
        await s.reserve(new_job("a"), (), T0 + 3)
    await s.set_job_state("a", JobState.RUNNING)
    await s.record_images("c", (1, 2**32 - 1), ("/x/1.png", "/x/2.png"))
    await s.close()

    s = await open_pg_store(pg_url, DEFAULTS)  # "the process restarted"
    try:
        assert [j.job_id for j in await s.unfinished_jobs()] == ["a", "b"]
        assert [j.job_id for j in await s.queued_jobs(G)] == ["a"]
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


# concurrency --------------------------------------------------------------------------------------


async def test_fifty_concurrent_reservations_grant_exactly_ten(pg_url: str) -> None:
    s = await open_pg_store(pg_url, DEFAULTS, max_size=20)
    try:
        await s.set_limits(G, Scope.GUILD, None, LimitsPatch(images_per_hour=10))
        results = await asyncio.gather(*(s.reserve(new_job(f"j{i}"), (), T0) for i in range(50)))
        assert sum(isinstance(r, Reservation) for r in results) == 10
        assert all(r.limit is LimitName.PER_HOUR for r in results if isinstance(r, Refusal))
        assert sum(e.images for e in await s.ledger(G, U)) == 10
    finally:
        await s.close()


async def test_two_processes_never_overspend(pg_url: str) -> None:
    async with await open_pg_store(pg_url, DEFAULTS) as s:
        await s.set_limits(G, Scope.GUILD, None, LimitsPatch(images_per_hour=10))
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.pg_fixtures",
            "reserve",
            pg_url,
            str(G),
            str(U),
            "25",
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    try:
        for p in procs:  # both connected before either starts
            assert p.stdout is not None
            assert (await asyncio.wait_for(p.stdout.readline(), 30)).strip() == b"ready"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(b"go\n")
            await p.stdin.drain()
        granted = [int((await asyncio.wait_for(p.communicate(), 30))[0].strip()) for p in procs]
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
    assert sum(granted) == 10
    async with await open_pg_store(pg_url, DEFAULTS) as s:
        assert sum(e.images for e in await s.ledger(G, U)) == 10
        assert len(await s.unfinished_jobs()) == 10


# the same answers as SQLite -----------------------------------------------------------------------


async def test_same_answers_as_sqlite(pg_url: str, tmp_path: Path) -> None:
    """A random history of limit changes, reservations, refunds and finished jobs, replayed through
    both stores on a fake clock: every reservation answer and every usage report is equal."""
    defaults = Limits(images_per_hour=6, images_per_day=15, max_queued=3, cooldown_seconds=5.0)
    rng = random.Random(7)
    pg = await open_pg_store(pg_url, defaults)
    lite = await open_store(tmp_path / "parity.db", defaults)
    try:
        now = T0
        jobs: list[str] = []
        refused: set[LimitName] = set()
        partial_refunds = 0
        members = [(1, 10), (1, 11), (2, 10)]
        roles = (100, 200)
        for step in range(250):
            now += rng.choice([0.0, 1.0, 4.0, 5.0, 30.0, 600.0, 3600.0, 20_000.0])
            g, u = rng.choice(members)
            action = rng.random()
            if action < 0.08:
                scope = rng.choice([Scope.GUILD, Scope.ROLE, Scope.USER])
                target = None if scope is Scope.GUILD else (rng.choice(roles) if scope is Scope.ROLE else u)
                patch = LimitsPatch(
                    images_per_hour=rng.choice([None, UNLIMITED, 2, 4, 9]),
                    images_per_day=rng.choice([None, UNLIMITED, 5, 20]),
                    max_queued=rng.choice([None, UNLIMITED, 0, 1, 4]),
                    cooldown_seconds=rng.choice([None, 0.0, 5.0, 45.0]),
                )
                for s in (pg, lite):
                    await s.set_limits(g, scope, target, patch)
            elif action < 0.12:
                scope = rng.choice([Scope.ROLE, Scope.USER])
                target = rng.choice(roles) if scope is Scope.ROLE else u
                assert await pg.reset_limits(g, scope, target) == await lite.reset_limits(g, scope, target)
            elif action < 0.25 and jobs:
                job_id = rng.choice(jobs)
                assert await pg.refund(job_id, now) == await lite.refund(job_id, now)
            elif action < 0.3 and jobs:
                job_id, count = rng.choice(jobs), rng.randint(1, 3)
                given = await pg.refund_images(job_id, count, now)
                assert given == await lite.refund_images(job_id, count, now)
                partial_refunds += given
            elif action < 0.4 and jobs:
                job_id = rng.choice(jobs)
                state = rng.choice([JobState.DONE, JobState.FAILED, JobState.RUNNING, JobState.CANCELLED])
                for s in (pg, lite):
                    await s.set_job_state(job_id, state)
            else:
                member_roles = tuple(r for r in roles if rng.random() < 0.5)
                job = new_job(f"j{step}", guild=g, owner=u, images=rng.randint(1, 4))
                a = await pg.reserve(job, member_roles, now)
                b = await lite.reserve(job, member_roles, now)
                assert type(a) is type(b), (step, a, b)
                if isinstance(a, Refusal):
                    assert a == b, step
                    refused.add(a.limit)
                else:
                    assert isinstance(b, Reservation)
                    assert a.job == b.job, step
                    jobs.append(job.job_id)
                assert await pg.usage(g, u, member_roles, now) == await lite.usage(g, u, member_roles, now)
                assert await pg.show_limits(g, u, member_roles) == await lite.show_limits(g, u, member_roles)
        assert len(jobs) > 20 and refused == set(LimitName), refused  # grants and every kind of refusal
        assert partial_refunds > 3, partial_refunds
        assert await pg.unfinished_jobs() == await lite.unfinished_jobs()
        for g in (1, 2):
            assert await pg.ledger(g) == await lite.ledger(g)
            assert [await pg.get_job(j) for j in jobs] == [await lite.get_job(j) for j in jobs]
    finally:
        await pg.close()
        await lite.close()


async def test_url_parameters_reach_the_server(pg_url: str) -> None:
    """The per-test schema works through the URL (what `DATABASE_URL=…?search_path=x` users rely on)."""
    url = with_params(pg_url, application_name="imagine-test")
    async with await open_pg_store(url, DEFAULTS) as s, s.pool.acquire() as conn:
        assert await conn.fetchval("SHOW application_name") == "imagine-test"
