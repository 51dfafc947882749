"""RayBackend on a local Ray cluster (CPU) with two Serve replicas running the real `tiny` pipeline.

One cluster for the session (tests.ray_fixtures) and one deployment for this module: replicas import
torch and load the model once, which is most of the cost. Waits are on events and futures with
timeouts; the long batches (thousands of tiny steps) exist only to be cancelled or killed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from generation.scheduling.job_state import MemoryImages
from tests.ray_fixtures import require_ray

require_ray()

import ray  # noqa: E402

from generation.backends.protocol import GenerationResult, JobCancelled, JobHandle, Progress, Started  # noqa: E402
from generation.backends.ray_driver import RayBackend  # noqa: E402
from generation.prompts.edits import EditKind, edit_spec  # noqa: E402
from generation.prompts.request import GenerationRequest, Mode, edit_of  # noqa: E402
from tests.fixtures_generation import same_within_rounding, tiny_request, tiny_source_png  # noqa: E402

pytestmark = pytest.mark.asyncio(loop_scope="module")

WAIT = 30.0  # bound on waits for work that takes a second or two; reached only when the code is wrong
LONG_STEPS = 2000  # ~20 s of tiny steps: a batch that must be stopped, not finished


IMAGES = MemoryImages()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def backend(ray_cluster: None, tiny_cache_dir: Path) -> AsyncIterator[RayBackend]:
    b = RayBackend(
        "tiny",
        "cpu",
        replicas=2,
        image_store=IMAGES,
        job_timeout_s=120.0,
        cache_dir=tiny_cache_dir,
        app_name="imagine-test",
        preview_interval_s=0.0,
    )
    await b.start()
    yield b
    await b.close()


async def first_progress(handle: JobHandle) -> Progress:
    async def wait() -> Progress:
        async for event in handle.events():
            if isinstance(event, Progress):
                return event
        raise AssertionError(f"job {handle.job_id} ended without progress")

    return await asyncio.wait_for(wait(), WAIT)


async def collect(handle: JobHandle) -> list[Any]:
    return [event async for event in handle.events()]


def alone(engine: Any, request: GenerationRequest, source: bytes | None = None) -> list[bytes]:
    return [image.png for image in engine.run_batch([request], [source], lambda *_: True)[0]]


async def test_profile_and_tokens_come_from_a_replica(backend: RayBackend, tiny_engine: Any) -> None:
    assert backend.profile == tiny_engine.profile
    assert backend.count_tokens("a red fox") == tiny_engine.count_tokens("a red fox")


async def test_many_users_each_job_once_with_the_local_engines_images(
    backend: RayBackend, tiny_engine: Any
) -> None:
    source = tiny_source_png()
    digest = IMAGES.add(source)
    jobs = {
        "a1": ("alice", tiny_request(seeds=(1, 2))),
        "a2": ("alice", tiny_request(prompt="a blue bird", seeds=(3,))),
        "b1": ("bob", tiny_request(width=72, seeds=(4,))),
        "c1": ("carol", tiny_request(mode=Mode.IMG2IMG, strength=0.6, source_image=digest, seeds=(5,))),
        "d1": ("dave", tiny_request(prompt="a green hill", seeds=(6,))),
        "e1": (
            "erin",
            edit_of(tiny_request(), edit_spec(EditKind.ZOOM_OUT, factor=2), digest, (64, 64), (7, 8)),
        ),
    }
    settled = backend.stats.jobs_settled
    handles = {job_id: backend.submit(job_id, owner, request) for job_id, (owner, request) in jobs.items()}
    events = await asyncio.wait_for(asyncio.gather(*(collect(h) for h in handles.values())), WAIT)
    results = {job_id: await h.result() for job_id, h in handles.items()}

    assert backend.stats.jobs_settled - settled == len(jobs)
    for (job_id, (_owner, request)), seen in zip(jobs.items(), events, strict=True):
        result = results[job_id]
        assert isinstance(result, GenerationResult) and result.job_id == job_id
        assert [image.seed for image in result.images] == list(request.seeds)
        assert any(isinstance(e, Started) for e in seen)
        assert any(isinstance(e, Progress) and e.step == e.total for e in seen)
        expected = alone(tiny_engine, request, source if request.source_image else None)
        got = [image.png for image in result.images]
        assert all(same_within_rounding(a, b) for a, b in zip(got, expected, strict=True)), job_id
    assert backend.queue_snapshot() == []


async def test_a_light_user_is_not_stuck_behind_a_heavy_users_fifty(backend: RayBackend) -> None:
    finished: list[str] = []

    async def follow(handle: JobHandle) -> None:
        await handle.result()
        finished.append(handle.job_id)

    sent_earlier = backend.stats.batches  # by the module's earlier tests
    heavy = [
        backend.submit(f"heavy{i}", "heavy", tiny_request(steps=12, seeds=(100 + i,))) for i in range(50)
    ]
    tasks = [asyncio.create_task(follow(h)) for h in heavy]
    await first_progress(heavy[0])  # the first batches are on the replicas
    # this test's batches sent so far: normally 2 (one per replica); more if a batch already ended
    sent_before = backend.stats.batches - sent_earlier
    light = backend.submit("light", "light", tiny_request(seeds=(7,)))
    tasks.append(asyncio.create_task(follow(light)))
    await asyncio.wait_for(asyncio.gather(*tasks), WAIT)
    # The light job goes in the next batch sent: only the batches already sent (8 images each at most)
    # finish before it. First come first served would finish it last, after all fifty.
    cap = 8
    assert (sent_before + 1) * cap < 50, sent_before  # the bound below still tells fair from FIFO
    assert finished.index("light") < (sent_before + 1) * cap, (finished.index("light"), sent_before)
    assert len(finished) == 51 and len(set(finished)) == 51


async def test_cancel_queued_and_cancel_all_members_stops_the_batches(backend: RayBackend) -> None:
    long1 = backend.submit("long1", "u1", tiny_request(steps=LONG_STEPS, seeds=(11,)))
    long2 = backend.submit("long2", "u2", tiny_request(steps=LONG_STEPS, width=72, seeds=(12,)))
    await asyncio.gather(first_progress(long1), first_progress(long2))  # both replicas busy
    queued = backend.submit("queued", "u3", tiny_request(seeds=(13,)))
    queued_events = asyncio.create_task(collect(queued))
    assert ("queued", "u3") in backend.queue_snapshot()

    assert backend.cancel("queued")
    with pytest.raises(JobCancelled):
        await queued.result()
    seen = await asyncio.wait_for(queued_events, WAIT)
    assert not any(isinstance(e, (Started, Progress)) for e in seen)  # never started
    assert ("queued", "u3") not in backend.queue_snapshot()
    assert not backend.cancel("queued")

    assert backend.cancel("long1") and backend.cancel("long2")
    for handle in (long1, long2):
        with pytest.raises(JobCancelled):
            await handle.result()
    # Two jobs of different shapes need both replicas. Had the cancelled pipelines gone on (~20 s of
    # steps left), one of these would wait behind them in its replica's engine thread.
    after = [
        backend.submit("after1", "u1", tiny_request(width=80, seeds=(14,))),
        backend.submit("after2", "u2", tiny_request(width=88, seeds=(15,))),
    ]
    done = await asyncio.wait_for(asyncio.gather(*(h.result() for h in after)), 8.0)
    assert [len(r.images) for r in done] == [1, 1]


async def test_cancelling_one_member_of_a_running_batch_keeps_the_others(
    backend: RayBackend, tiny_engine: Any
) -> None:
    keep_request = tiny_request(steps=150, seeds=(22,))
    drop = backend.submit("drop", "u1", tiny_request(steps=150, seeds=(21,)))
    keep = backend.submit("keep", "u2", keep_request)
    await first_progress(drop)
    assert backend.replica_of("drop") == backend.replica_of("keep")  # one batch
    assert backend.cancel("drop")
    with pytest.raises(JobCancelled):
        await drop.result()
    result = await asyncio.wait_for(keep.result(), WAIT)
    assert same_within_rounding(result.images[0].png, alone(tiny_engine, keep_request)[0])


async def test_a_replica_killed_mid_batch_its_jobs_run_again_and_are_delivered_once(
    backend: RayBackend, tiny_engine: Any
) -> None:
    requests = [tiny_request(steps=150, seeds=(31,)), tiny_request(steps=150, seeds=(32,))]
    handles = [backend.submit(f"k{i}", f"user{i}", r) for i, r in enumerate(requests)]
    requeued = backend.stats.requeued
    await first_progress(handles[0])
    victim = backend.replica_of("k0")
    assert victim is not None and backend.replica_of("k1") == victim
    ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)

    results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), WAIT)
    assert backend.stats.requeued - requeued == 2
    for handle, request, result in zip(handles, requests, results, strict=True):
        assert backend.replica_of(handle.job_id) not in (None, victim)
        assert len(result.images) == 1
        assert same_within_rounding(result.images[0].png, alone(tiny_engine, request)[0])
