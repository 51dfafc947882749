"""The shared job queue on PostgreSQL: exclusive claims, round-robin by owner, leases and reclaims."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from storage.interface import JobState, Reservation
from storage.queue import JobQueue
from tests.pg_fixtures import DEFAULTS, PostgresStore, new_job, open_pg_store

pytest_plugins = ("tests.pg_fixtures",)  # the pg_server_url and pg_url fixtures

T0 = 1_700_000_000.0


@pytest.fixture
async def store(pg_url: str) -> AsyncIterator[PostgresStore]:
    s = await open_pg_store(pg_url, DEFAULTS)
    try:
        yield s
    finally:
        await s.close()


async def add(store: PostgresStore, job_id: str, owner: int, at: float, guild: int = 1) -> None:
    r = await store.reserve(new_job(job_id, guild=guild, owner=owner), (), at)
    assert isinstance(r, Reservation)


async def test_store_is_a_job_queue(store: PostgresStore) -> None:
    assert isinstance(store, JobQueue)
    assert await store.claim_next("w", T0, 30.0) == []


async def test_claim_marks_running_under_a_lease(store: PostgresStore) -> None:
    await add(store, "a", 1, T0)
    (job,) = await store.claim_next("w1", T0 + 5, 30.0)
    assert job.job_id == "a" and job.state is JobState.RUNNING
    stored = await store.get_job("a")
    assert stored is not None and stored.state is JobState.RUNNING
    assert await store.claim_next("w2", T0 + 6, 30.0) == []  # nothing left to claim


async def test_concurrent_claimers_never_share_a_job(pg_url: str) -> None:
    stores = [await open_pg_store(pg_url, DEFAULTS, max_size=4) for _ in range(2)]  # two "processes"
    try:
        ids = [f"j{i:03d}" for i in range(120)]
        for i, job_id in enumerate(ids):
            await add(stores[0], job_id, owner=i % 7, at=T0 + i)

        async def claimer(n: int) -> list[str]:
            got: list[str] = []
            while batch := await stores[n % 2].claim_next(f"w{n}", T0 + 500, 60.0, limit=1 + n % 3):
                got += [j.job_id for j in batch]
            return got

        claimed = await asyncio.gather(*(claimer(n) for n in range(8)))
        flat = [j for got in claimed for j in got]
        assert sorted(flat) == ids  # every job exactly once
        assert sum(1 for got in claimed if got) >= 2  # the claims really were spread over claimers
    finally:
        for s in stores:
            await s.close()


async def test_round_robin_by_owner(store: PostgresStore) -> None:
    for i in range(3):
        await add(store, f"a{i}", owner=1, at=T0 + i)
    for i in range(3):
        await add(store, f"b{i}", owner=2, at=T0 + 10 + i)
    await add(store, "c0", owner=3, at=T0 + 20)
    await add(store, "a-elsewhere", owner=1, at=T0 + 30, guild=2)  # the same person in another guild
    order = []
    while batch := await store.claim_next("w", T0 + 100, 30.0):
        order += [j.job_id for j in batch]
    assert order == ["a0", "b0", "c0", "a-elsewhere", "a1", "b1", "a2", "b2"]


async def test_batch_claim_takes_one_per_owner_before_seconds(store: PostgresStore) -> None:
    for i in range(4):
        await add(store, f"a{i}", owner=1, at=T0 + i)
    await add(store, "b0", owner=2, at=T0 + 10)
    await add(store, "c0", owner=3, at=T0 + 11)
    batch = await store.claim_next("w", T0 + 100, 30.0, limit=4)
    assert [j.job_id for j in batch] == ["a0", "b0", "c0", "a1"]
    # owner 1 was served last (a1), so a new owner and then owner 1 again follow
    await add(store, "d0", owner=4, at=T0 + 200)
    assert [j.job_id for j in await store.claim_next("w", T0 + 201, 30.0, limit=2)] == ["d0", "a2"]


async def test_light_user_is_not_stuck_behind_heavy_users_fifty(pg_url: str) -> None:
    a = await open_pg_store(pg_url, DEFAULTS)
    b = await open_pg_store(pg_url, DEFAULTS)  # a second bot process
    try:
        for i in range(50):
            await add(a, f"heavy{i:02d}", owner=1, at=T0 + i)
        first = await a.claim_next("proc-a", T0 + 60, 30.0)
        assert [j.job_id for j in first] == ["heavy00"]
        await add(b, "light", owner=2, at=T0 + 61)
        second = await b.claim_next("proc-b", T0 + 62, 30.0)
        assert [j.job_id for j in second] == ["light"]
    finally:
        await a.close()
        await b.close()


async def test_expired_lease_is_reclaimed_without_a_second_spend(store: PostgresStore) -> None:
    await add(store, "a", owner=1, at=T0)
    assert len(await store.claim_next("dead", T0 + 10, 30.0)) == 1
    assert await store.reclaim_expired(T0 + 39.9) == 0
    assert await store.renew_lease(["a", "unknown"], "dead", T0 + 20, 30.0) == ["a"]
    assert await store.reclaim_expired(T0 + 49.9) == 0  # renewed until T0 + 50
    assert await store.renew_lease(["a"], "someone-else", T0 + 45, 30.0) == []
    assert await store.reclaim_expired(T0 + 50) == 1
    back = await store.get_job("a")
    assert back is not None and back.state is JobState.QUEUED
    (again,) = await store.claim_next("alive", T0 + 51, 30.0)
    assert again.job_id == "a"
    assert await store.renew_lease(["a"], "dead", T0 + 52, 30.0) == []  # the dead worker lost it
    assert [(e.job_id, e.images, e.refunded) for e in await store.ledger(1)] == [("a", 1, False)]


async def test_finished_jobs_leave_the_lease_behind(store: PostgresStore) -> None:
    await add(store, "a", owner=1, at=T0)
    await add(store, "b", owner=2, at=T0 + 1)
    await store.claim_next("w", T0 + 10, 30.0, limit=2)
    await store.record_images("a", (7,), ("/out/a.png",))
    await store.set_job_state("b", JobState.CANCELLED)
    assert await store.reclaim_expired(T0 + 10_000) == 0
    assert await store.renew_lease(["a", "b"], "w", T0 + 20, 30.0) == []
    done = await store.get_job("a")
    assert done is not None and done.state is JobState.DONE


async def test_claim_arguments_are_checked(store: PostgresStore) -> None:
    with pytest.raises(ValueError):
        await store.claim_next("w", T0, 30.0, limit=0)
    with pytest.raises(ValueError):
        await store.claim_next("w", T0, 0.0)


async def test_only_the_lease_holder_completes(store: PostgresStore) -> None:
    await add(store, "a", owner=1, at=T0)
    await store.claim_next("slow", T0 + 10, 30.0)
    assert await store.reclaim_expired(T0 + 40) == 1
    await store.claim_next("fast", T0 + 41, 30.0)
    assert await store.complete_claimed("a", "slow", (1,), ("/slow.png",)) is False
    assert await store.complete_claimed("a", "fast", (2,), ("/fast.png",)) is True
    assert await store.complete_claimed("a", "fast", (2,), ("/fast.png",)) is False  # once
    done = await store.get_job("a")
    assert done is not None and done.state is JobState.DONE and done.image_paths == ("/fast.png",)
    assert [j.job_id for j in await store.undelivered_jobs()] == ["a"]


async def test_release_puts_held_jobs_back_first_in_line(store: PostgresStore) -> None:
    await add(store, "a", owner=1, at=T0)
    await add(store, "b", owner=1, at=T0 + 1)
    await store.claim_next("w", T0 + 10, 30.0)
    assert await store.release(["a", "b"], "other") == []
    assert await store.release(["a", "b"], "w") == ["a"]
    assert [j.job_id for j in await store.claim_next("w2", T0 + 11, 30.0, limit=2)] == ["a", "b"]
