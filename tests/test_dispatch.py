"""Many bot processes on one PostgreSQL queue: `jobs.claims.ClaimSource` in real OS processes
(`tests.dispatch_worker`: the real runner, store and local backend over a fake engine), read through
their stdout; exactly-once delivery, fairness across processes, a killed process's jobs reclaimed."""

from __future__ import annotations

import asyncio
import contextlib
import io
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from generation.prompts.request import GenerationRequest
from jobs.claims import ClaimSource
from jobs.delivery import PermanentDeliveryError, ResultPost
from jobs.runner import JobRunner
from storage.interface import JobRecord, JobState, NewJob, Reservation
from storage.pg_signals import pg_signals_for
from testkit.worker_process import WorkerProcess, check_delivered_once, deliveries_until
from tests.pg_fixtures import DEFAULTS, PostgresStore, open_pg_store

pytest_plugins = ("tests.pg_fixtures",)

WAIT = 30.0  # bound on every wait; never reached when the code is right


async def start_worker(url: str, outdir: Path, name: str, tag: int, *args: str) -> WorkerProcess:
    """A `tests.dispatch_worker` process, once it says it is ready."""
    worker = await WorkerProcess.spawn(
        "tests.dispatch_worker", url, str(outdir), name, "--tag", str(tag), *args, wait_s=WAIT
    )
    await worker.next("ready")
    return worker


@pytest.fixture
async def workers(pg_url: str, tmp_path: Path) -> AsyncIterator[Any]:
    """Starts workers on the test's database; kills any left at the end."""
    started: list[WorkerProcess] = []

    async def start(name: str, *args: str) -> WorkerProcess:
        worker = await start_worker(pg_url, tmp_path / "images", name, len(started) + 1, *args)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.proc.returncode is None:
            worker.proc.send_signal(signal.SIGUSR1)  # its tasks' stacks, on stderr, if it hung
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(worker.proc.wait(), 0.5)
        worker.kill()
        await worker.proc.wait()


async def stored(pg_url: str) -> PostgresStore:
    return await open_pg_store(pg_url, DEFAULTS, max_size=2)


async def test_two_processes_deliver_100_jobs_from_10_users_exactly_once(pg_url: str, workers: Any) -> None:
    a = await workers("a", "--capacity", "2")
    b = await workers("b", "--capacity", "2")
    for owner in range(1, 11):
        await (a if owner <= 5 else b).send(f"submit 1 {owner} 10 u{owner}")
    for w in (a, b):
        for _ in range(5):
            assert (await w.next("submitted"))["granted"] == 10

    got = await deliveries_until([a, b], 100, WAIT)
    await asyncio.gather(a.quit(), b.quit())

    expected = {f"u{o}-{i}" for o in range(1, 11) for i in range(10)}
    jobs = [e["job"] for e in got]
    assert sorted(jobs) == sorted(expected)  # every job, each once
    assert len(a.of("delivered")) + len(b.of("delivered")) == 100  # nothing after the count either
    assert a.of("delivered") and b.of("delivered")  # both processes took work from the one queue
    assert not a.of("told") and not b.of("told")
    store = await stored(pg_url)
    try:
        await check_delivered_once(store, got, expected)
    finally:
        await store.close()


async def test_a_light_users_job_is_not_stuck_behind_a_heavy_users_fifty(pg_url: str, workers: Any) -> None:
    a = await workers("a", "--capacity", "2", "--step-s", "0.05")  # 0.1 s a job
    b = await workers("b", "--capacity", "2", "--step-s", "0.05")
    await a.send("submit 1 1 50 heavy")
    assert (await a.next("submitted"))["granted"] == 50  # both processes are on it already
    await b.send("submit 1 2 1 light")
    light_queued = (await b.next("submitted"))["t"]

    got = await deliveries_until([a, b], 51, WAIT)
    await asyncio.gather(a.quit(), b.quit())

    light = next(e for e in got if e["job"] == "light-0")
    heavy = [e for e in got if e["job"].startswith("heavy-")]
    overtook = [e for e in heavy if light_queued < e["t"] < light["t"]]
    after = [e for e in heavy if e["t"] > light["t"]]
    assert len(overtook) + len(after) >= 25  # (the set-up: most of the fifty were still to do)
    # At most the jobs already in flight (2 per process) and one more round finish first.
    assert len(overtook) <= 8, (len(overtook), len(after))
    wait = light["t"] - light_queued
    drain = heavy[-1]["t"] - light_queued
    print(f"fair_wait_ratio={wait / drain:.3f} overtaken_by={len(overtook)}")


async def test_a_killed_process_jobs_are_reclaimed_and_delivered_once(pg_url: str, workers: Any) -> None:
    a = await workers("a", "--capacity", "3", "--lease", "30", "--hang")
    await a.send("submit 1 1 4 x")
    await a.send("submit 1 2 2 y")
    await a.next("submitted")
    await a.next("submitted")
    held = {(await a.next("started"))["job"] for _ in range(3)}  # claimed and generating, forever

    b = await workers("b", "--capacity", "2", "--lease", "30")
    a.kill()
    assert await asyncio.wait_for(a.proc.wait(), WAIT) == -signal.SIGKILL
    first = await deliveries_until([b], 3, WAIT)  # the three jobs nobody held
    assert not held & {e["job"] for e in first}
    await b.send("advance 31")  # the dead process's leases run out
    await b.next("advanced")
    got = await deliveries_until([b], 6, WAIT)
    await b.quit()

    assert sorted(e["job"] for e in got) == sorted([f"x-{i}" for i in range(4)] + ["y-0", "y-1"])
    assert not a.of("delivered")
    store = await stored(pg_url)
    try:
        ledger = await store.ledger(1)
        assert len(ledger) == 6 and len({e.job_id for e in ledger}) == 6  # no second spend
        assert not any(e.refunded for e in ledger)
        for job_id in held:
            job = await store.get_job(job_id)
            assert job is not None and job.state is JobState.DONE and job.result_message_id is not None
    finally:
        await store.close()


# in one process: the delivery lock ------------------------------------------------------------------


class CountingOutbox:
    def __init__(self) -> None:
        self.posts: list[str] = []
        self.posted = asyncio.Event()

    async def show_progress(self, job: JobRecord, text: str, preview_png: bytes | None) -> None:
        return None

    async def post_result(self, job: JobRecord, post: ResultPost, *, via_token: bool) -> tuple[int, int]:
        self.posts.append(job.job_id)
        self.posted.set()
        return 5000 + len(self.posts), job.channel_id

    async def tell_owner(self, job: JobRecord, text: str, *, via_token: bool, private: bool) -> None:
        raise AssertionError(f"unexpected message: {text}")

    async def direct_message(self, job: JobRecord, text: str) -> bool:
        raise AssertionError(f"unexpected direct message: {text}")

    async def channel_is_nsfw(self, channel_id: int) -> bool:
        return False

    def upload_limit(self, guild_id: int) -> int:
        return 8 * 1024 * 1024


class RefusingOutbox(CountingOutbox):
    """Discord refuses the post for good; the owner is told by direct message."""

    def __init__(self) -> None:
        super().__init__()
        self.dms: list[str] = []
        self.told = asyncio.Event()

    async def post_result(self, job: JobRecord, post: ResultPost, *, via_token: bool) -> tuple[int, int]:
        self.posts.append(job.job_id)
        raise PermanentDeliveryError("that channel no longer exists")

    async def direct_message(self, job: JobRecord, text: str) -> bool:
        self.dms.append(text)
        self.told.set()
        return True


class NoBackend:
    """The delivery path never generates."""

    catalog: dict[str, Any] = {}  # noqa: RUF012 (read only)

    def submit(self, *args: object) -> Any:
        raise AssertionError("nothing should be generated")

    def cancel(self, job_id: str) -> bool:
        return False


class Files:
    def __init__(self, root: Path) -> None:
        self.root = root

    def save_result(self, job_id: str, index: int, png: bytes, ext: str = "png") -> Path:
        path = self.root / f"{job_id}_{index}.{ext}"
        path.write_bytes(png)
        return path


async def test_a_result_recorded_by_a_dead_process_is_delivered_once_by_one_of_two(
    pg_url: str, tmp_path: Path
) -> None:
    stores = [await stored(pg_url) for _ in range(3)]
    ghost, *live = stores
    try:
        req = GenerationRequest(
            prompt="a fox", width=64, height=64, steps=2, guidance=5.0, seeds=(3,), model="fake"
        )
        reserved = await ghost.reserve(NewJob("j1", 1, 100, 7, req.to_json(), 1), (), 1000.0)
        assert isinstance(reserved, Reservation)
        assert [j.job_id for j in await ghost.claim_next("ghost", 1000.0, 30.0)] == ["j1"]
        buf = io.BytesIO()
        Image.new("RGB", (8, 8), "red").save(buf, format="PNG")
        path = Files(tmp_path).save_result("j1", 0, buf.getvalue())
        assert await ghost.complete_claimed("j1", "ghost", (3,), (str(path),))  # … and then it died

        outboxes = [CountingOutbox() for _ in live]
        runners = [
            JobRunner(
                s,
                NoBackend(),  # type: ignore[arg-type]
                Files(tmp_path),
                o,
                source=ClaimSource(s, signals=pg_signals_for(s), worker_id=f"w{i}", poll_s=WAIT),
                clock=lambda: 1000.0,
            )
            for i, (s, o) in enumerate(zip(live, outboxes, strict=True))
        ]
        taken = await asyncio.gather(*(r.resume() for r in runners))
        assert sorted(t[0] for t in taken) == [0, 1]
        winner = next(i for i, t in enumerate(taken) if t[0] == 1)
        await asyncio.wait_for(outboxes[winner].posted.wait(), WAIT)
        await runners[winner].wait("j1")
        for r in runners:
            await r.close()
        assert [o.posts for o in outboxes].count(["j1"]) == 1 and sum(len(o.posts) for o in outboxes) == 1
        job = await ghost.get_job("j1")
        assert job is not None and job.result_message_id == 5001
    finally:
        for s in stores:
            await s.close()


async def test_a_delivery_refused_for_good_fails_once_and_is_never_claimed_again(
    pg_url: str, tmp_path: Path
) -> None:
    stores = [await stored(pg_url) for _ in range(3)]
    ghost, first, second = stores
    runners: list[JobRunner] = []
    try:
        req = GenerationRequest(
            prompt="a fox", width=64, height=64, steps=2, guidance=5.0, seeds=(3,), model="fake"
        )
        assert isinstance(
            await ghost.reserve(NewJob("j2", 1, 100, 7, req.to_json(), 1), (), 1000.0), Reservation
        )
        assert [j.job_id for j in await ghost.claim_next("ghost", 1000.0, 30.0)] == ["j2"]
        buf = io.BytesIO()
        Image.new("RGB", (8, 8), "red").save(buf, format="PNG")
        path = Files(tmp_path).save_result("j2", 0, buf.getvalue())
        assert await ghost.complete_claimed("j2", "ghost", (3,), (str(path),))  # … and then it died

        def runner(store: PostgresStore, outbox: RefusingOutbox, name: str) -> JobRunner:
            source = ClaimSource(store, signals=pg_signals_for(store), worker_id=name, poll_s=WAIT)
            return JobRunner(store, NoBackend(), Files(tmp_path), outbox, source=source, clock=lambda: 1000.0)  # type: ignore[arg-type]

        refusing, later = RefusingOutbox(), RefusingOutbox()
        taker, other = runner(first, refusing, "w1"), runner(second, later, "w2")
        runners.extend((taker, other))
        assert await taker.resume() == (1, 0)
        await asyncio.wait_for(refusing.told.wait(), WAIT)  # refused, failed, refunded, then told
        job = await ghost.get_job("j2")
        assert job is not None and job.state is JobState.FAILED and job.error is not None
        assert job.error == "delivery refused: that channel no longer exists"
        assert (await ghost.usage(1, 7, (), 1000.0)).used_last_hour == 0  # refunded
        assert refusing.posts == ["j2"] and len(refusing.dms) == 1 and "j2" in refusing.dms[0]
        assert await ghost.undelivered_jobs() == []
        assert await other.resume() == (0, 0)  # nobody claims or delivers it again
        for r in runners:
            await r.close()
        assert later.posts == [] and refusing.posts == ["j2"]
    finally:
        for r in runners:
            await r.close()
        for s in stores:
            await s.close()


async def test_shard_settings_make_an_auto_sharded_bot_with_a_claim_source_on_postgres(
    pg_url: str, tmp_path: Path
) -> None:
    import discord

    from bot.client import ImagineBot, bot_class
    from bot.settings import settings_from_mapping
    from generation.media.image_store import ImageStore

    plain = settings_from_mapping({"DISCORD_TOKEN": "t"})
    sharded = settings_from_mapping({"DISCORD_TOKEN": "t", "SHARD_COUNT": "4", "SHARD_IDS": "1,3"})
    assert bot_class(plain) is ImagineBot
    store = await stored(pg_url)
    try:
        bot = bot_class(sharded)(sharded, store, NoBackend(), ImageStore(tmp_path))  # type: ignore[arg-type]
        assert isinstance(bot, discord.AutoShardedClient)
        assert (bot.shard_count, bot.shard_ids) == (4, [1, 3])
        assert isinstance(bot.runner.source, ClaimSource)
        await bot.runner.close()  # (never connected: discord.py's close needs a login first)
    finally:
        await store.close()
