"""The runner when Discord refuses a post for good (`PermanentDeliveryError`), and the upload limit a
post gets (the interaction's, or the guild's for a channel post), with the fakes of test_bot_jobs and
a real SQLite store."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import numpy as np
from PIL import Image

from generation.backends import protocol as gen
from generation.media.video import encode_mp4, probe_mp4
from generation.prompts.request import animate_of
from generation.prompts.video import Motion
from jobs.delivery import TOKEN_LIFETIME_S, PermanentDeliveryError, ResultPost
from storage.interface import JobRecord, JobState
from storage.sqlite import SqliteStore
from tests.bot_harness import collecting_logs
from tests.test_bot_jobs import (
    Clock,
    RecordingOutbox,
    make_runner,
    new_job,
    png,
    request,
    result,
    store,
    used,
)

__all__ = ["store"]  # the fixture


class RefusingOutbox(RecordingOutbox):
    """Discord refuses every result post for good; direct messages may be closed. With `slow_clock`
    the upload takes so long that the interaction token is gone by the time it is refused."""

    def __init__(self, *, dms_open: bool = True, slow_clock: Clock | None = None) -> None:
        super().__init__()
        self.dms_open = dms_open
        self.slow_clock = slow_clock
        self.refusals = 0

    async def post_result(self, job: JobRecord, post: ResultPost, *, via_token: bool) -> tuple[int, int]:
        self.refusals += 1
        if self.slow_clock is not None:
            self.slow_clock.now += TOKEN_LIFETIME_S
        raise PermanentDeliveryError("I'm missing a permission I need in that channel")

    async def direct_message(self, job: JobRecord, text: str) -> bool:
        if not self.dms_open:
            return False
        return await super().direct_message(job, text)


async def _run_refused(store: SqliteStore, tmp_path: Path, clock: Clock, outbox: RefusingOutbox) -> str:
    runner, backend, sleeps = make_runner(store, outbox, tmp_path, clock)
    req = request(2)
    job_id = "cccccccccccc"
    await runner.submit(new_job(job_id, req, clock), req, ())
    await asyncio.wait_for(backend.submitted.get(), 5)
    assert await used(store, clock) == 2
    backend.handles[job_id].finish([], result(job_id, [False, False]))
    await asyncio.wait_for(runner.wait(job_id), 5)  # the job's task ended: nothing is being retried
    assert outbox.refusals == 1 and sleeps == []
    assert not runner.is_active(job_id)
    await runner.close()
    return job_id


async def test_refused_for_good_fails_refunds_tells_privately_and_is_not_resumed(
    store: SqliteStore, tmp_path: Path
) -> None:
    clock = Clock()
    outbox = RefusingOutbox()
    job_id = await _run_refused(store, tmp_path, clock, outbox)
    job = await store.get_job(job_id)
    assert job is not None and job.state is JobState.FAILED
    assert job.error == "delivery refused: I'm missing a permission I need in that channel"
    assert await used(store, clock) == 0  # refunded
    [(text, via_token, private)] = outbox.told
    assert via_token and private  # the interaction still lives: an ephemeral followup
    assert job_id in text and "missing a permission" in text and "2 images were given back" in text
    assert await store.undelivered_jobs() == []
    again, _, _ = make_runner(store, RefusingOutbox(), tmp_path, clock)
    assert await again.resume() == (0, 0)  # a restart neither delivers nor regenerates it
    await again.close()


async def test_refused_after_the_token_expired_tells_by_direct_message(
    store: SqliteStore, tmp_path: Path
) -> None:
    clock = Clock()
    outbox = RefusingOutbox(slow_clock=clock)
    await _run_refused(store, tmp_path, clock, outbox)
    [(text, via_token, private)] = outbox.told
    assert (via_token, private) == (False, True)  # RecordingOutbox records a DM as (text, False, True)
    assert "given back" in text


async def test_closed_direct_messages_are_logged(store: SqliteStore, tmp_path: Path) -> None:
    clock = Clock()
    outbox = RefusingOutbox(dms_open=False, slow_clock=clock)
    with collecting_logs() as logs:
        job_id = await _run_refused(store, tmp_path, clock, outbox)
    assert outbox.told == [] and await used(store, clock) == 0
    assert f"job {job_id}: owner 30 not told (direct messages closed)" in logs.text


async def test_a_channel_post_fits_the_guild_limit_not_the_members(
    store: SqliteStore, tmp_path: Path
) -> None:
    clock = Clock()
    outbox = RecordingOutbox()
    runner, backend, _ = make_runner(store, outbox, tmp_path, clock)
    req = request(1)
    image = png((10, 200, 30), (256, 256))
    job_id = "dddddddddddd"
    await runner.submit(new_job(job_id, req, clock), req, (), upload_limit=500 * 2**20)  # Nitro
    await asyncio.wait_for(backend.submitted.get(), 5)
    job = await store.get_job(job_id)
    assert job is not None
    guild_limit = len(image) - 1
    outbox.upload_limit = lambda guild_id: guild_limit  # type: ignore[method-assign]
    through_interaction = runner.poster.build_post(job, req, (7,), [image], spoiler=False, mention=False)
    in_channel = runner.poster.build_post(job, req, (7,), [image], spoiler=False, mention=True)
    assert through_interaction.files[0].data == image  # the member's own limit holds it
    posted = in_channel.files[0].data
    assert len(posted) <= guild_limit and posted != image
    with Image.open(io.BytesIO(posted)) as fitted:
        assert fitted.size[0] > 0
    backend.handles[job_id].finish([], result(job_id, [False]))
    await asyncio.wait_for(runner.wait(job_id), 5)
    await runner.close()


def noisy_clip(frames: int = 24, size: tuple[int, int] = (96, 64)) -> bytes:
    """An MP4 of seeded noise: the hardest kind of clip to fit (it compresses worst)."""
    rng = np.random.default_rng(5)
    return encode_mp4(rng.integers(0, 256, (frames, size[1], size[0], 3), dtype=np.uint8), 16)


async def test_a_clip_over_the_guild_limit_is_refit_and_one_that_cannot_fit_fails_refunded(
    store: SqliteStore, tmp_path: Path
) -> None:
    clock = Clock()
    outbox = RecordingOutbox()
    runner, backend, _ = make_runner(store, outbox, tmp_path, clock)
    picture = request(1)
    clip_request = animate_of(
        picture, source_hash="ab" * 32, size=(96, 64), motion=Motion.LOW, video_model="tiny-video", seed=3
    )
    clip = noisy_clip()
    job_id = "eeeeeeeeeeee"
    await runner.submit(new_job(job_id, clip_request, clock), clip_request, ())
    await asyncio.wait_for(backend.submitted.get(), 5)
    job = await store.get_job(job_id)
    assert job is not None
    limit = len(clip) // 3
    outbox.upload_limit = lambda guild_id: limit  # type: ignore[method-assign]
    post = runner.poster.build_post(job, clip_request, (3,), [clip], spoiler=False, mention=True)
    [file] = post.files
    assert file.filename.endswith(".mp4") and len(file.data) <= limit and post.video
    assert probe_mp4(file.data).frames == 24 and "re-encoded to fit" in post.content
    outbox.upload_limit = lambda guild_id: 600  # type: ignore[method-assign]  # no clip fits in 600 bytes
    backend.handles[job_id].finish(
        [], gen.GenerationResult(job_id, (gen.GeneratedImage(clip, 3, 96, 64, media="mp4"),))
    )
    await asyncio.wait_for(runner.wait(job_id), 5)
    settled = await store.get_job(job_id)
    assert settled is not None and settled.state is JobState.FAILED and settled.refunded
    assert "can't fit the upload limit" in (settled.error or "")
    assert outbox.posts == [] and await used(store, clock) == 0
    await runner.close()
