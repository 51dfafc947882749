"""PostgresStore on a real PostgreSQL server: opening, migrations, errors, processes, the pool.

The `Store` calls themselves are tested on both backends in tests/test_storage.py. Limit semantics
must equal the SQLite store's: `test_same_answers_as_sqlite` replays one random history through both
and compares every answer.
"""

from __future__ import annotations

import asyncio
import random
import socket
import sys
from pathlib import Path
from typing import Any

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
    asyncpg,
    migrate,
    new_job,
    open_pg_store,
    with_params,
)

ALL_VERSIONS = [m.version for m in PG_MIGRATIONS]  # every step's number, in order

pytest_plugins = ("tests.pg_fixtures",)  # the pg_server_url and pg_url fixtures

T0 = 1_700_000_000.0
G = 1
U = 10


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
    assert await versions(pg_url) == ALL_VERSIONS
    async with await open_pg_store(pg_url, DEFAULTS) as s:
        assert (await s.show_limits(G)).guild_default.images_per_hour == 3
    assert await versions(pg_url) == ALL_VERSIONS


async def test_concurrent_opens_apply_each_migration_once(pg_url: str) -> None:
    stores = await asyncio.gather(
        *(open_pg_store(pg_url, DEFAULTS, min_size=1, max_size=2) for _ in range(5))
    )
    try:
        assert await versions(pg_url) == ALL_VERSIONS
        granted = await stores[3].reserve(new_job("a"), (), T0)
        assert isinstance(granted, Reservation)
        assert (await stores[0].get_job("a")) == granted.job
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def migrated_to(pg_url: str, version: int, *statements: tuple[Any, ...]) -> None:
    """Migrate the fresh database to `version`, then run each statement (its SQL, then its arguments)."""
    conn = await asyncpg.connect(pg_url)
    try:
        assert await migrate(conn, PG_MIGRATIONS[:version]) == version
        for sql, *args in statements:
            await conn.execute(sql, *args)
    finally:
        await conn.close()


async def test_upgrade_from_version_1_keeps_rows(pg_url: str) -> None:
    await migrated_to(
        pg_url,
        1,
        (
            "INSERT INTO jobs (job_id, guild_id, channel_id, owner_id, request_json, images, state, "
            "created_at) VALUES ('old', 1, 2, 3, '{}', 1, 'queued', 5.0)",
        ),
    )
    async with await open_pg_store(pg_url, DEFAULTS) as s:
        job = await s.get_job("old")
        assert job is not None and job.state is JobState.QUEUED
        claimed = await s.claim_next("w", now=10.0, lease_s=30.0)
        assert [j.job_id for j in claimed] == ["old"]
    assert await versions(pg_url) == ALL_VERSIONS


async def test_upgrade_from_version_2_keeps_rows_and_refunds(pg_url: str) -> None:
    rows = (("old", 5.0, 777, False), ("gone", 6.0, None, True))
    job_sql = (
        "INSERT INTO jobs (job_id, guild_id, channel_id, owner_id, request_json, images, state, "
        "created_at, result_message_id, result_channel_id) VALUES ($1, $2, 9, $3, '{}', 2, 'done', $4, $5, 9)"
    )
    ledger_sql = (
        "INSERT INTO usage_ledger (guild_id, user_id, job_id, images, at, refunded) "
        "VALUES ($1, $2, $3, 2, $4, $5)"
    )
    await migrated_to(
        pg_url,
        2,
        *((job_sql, job_id, G, U, at, message) for job_id, at, message, _ in rows),
        *((ledger_sql, G, U, job_id, at, refunded) for job_id, at, _, refunded in rows),
    )
    async with await open_pg_store(pg_url, DEFAULTS) as s:
        old = await s.get_job("old")
        assert old is not None and await s.job_by_message(777) == old
        assert [(e.job_id, e.refunded, e.refunded_images) for e in await s.ledger(G)] == [
            ("old", False, 0),
            ("gone", True, 2),
        ]
        assert (await s.usage(G, U, (), 10.0)).used_last_hour == 2
    assert await versions(pg_url) == ALL_VERSIONS


async def columns(url: str, table: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = $1",
            table,
        )
        return {r["column_name"] for r in rows}
    finally:
        await conn.close()


async def test_upgrade_from_version_3_drops_the_unused_columns(pg_url: str) -> None:
    """A schema at the last version before the one numbering (3: the steps PostgreSQL always had, the
    same files) upgrades to the current one: rows kept, a claimed job still leased, batch_key and
    claimed_at gone."""
    await migrated_to(
        pg_url,
        3,
        (
            "INSERT INTO jobs (job_id, guild_id, channel_id, owner_id, request_json, images, state, "
            "created_at, batch_key, lease_owner, lease_expires_at, claimed_at) "
            "VALUES ('held', $1, 9, $2, '{}', 2, 'running', 5.0, 'k', 'w', 40.0, 10.0)",
            G,
            U,
        ),
        (
            "INSERT INTO usage_ledger (guild_id, user_id, job_id, images, at, refunded_images) "
            "VALUES ($1, $2, 'held', 2, 5.0, 1)",
            G,
            U,
        ),
    )
    assert {"batch_key", "claimed_at"} <= await columns(pg_url, "jobs")
    async with await open_pg_store(pg_url, DEFAULTS) as s:
        held = await s.get_job("held")
        assert held is not None and held.state is JobState.RUNNING and not held.refunded
        assert [(e.job_id, e.refunded_images) for e in await s.ledger(G)] == [("held", 1)]
        assert await s.renew_lease(["held"], "w", 20.0, 30.0) == ["held"]  # the lease survived
        assert await s.reclaim_expired(50.0 + 1) == 1
        assert [j.job_id for j in await s.claim_next("w2", 60.0, 30.0)] == ["held"]
    assert not {"batch_key", "claimed_at"} & await columns(pg_url, "jobs")
    assert await versions(pg_url) == ALL_VERSIONS and PG_SCHEMA_VERSION >= 4


async def test_newer_schema_is_refused_clearly(pg_url: str) -> None:
    async with await open_pg_store(pg_url, DEFAULTS):  # the current schema
        pass
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


# concurrency --------------------------------------------------------------------------------------


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
