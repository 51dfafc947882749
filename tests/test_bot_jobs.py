"""`JobRunner` with a real SQLite store and image store, a scripted backend and a recording outbox."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from generation.backends import protocol as gen
from generation.backends.protocol import GenerationResult, JobEvent, ModelEntry
from generation.media.image_store import ImageStore
from generation.prompts.request import GenerationRequest, ModelProfile
from jobs.delivery import ResultPost, TokenGone, TransientDeliveryError, token_expiry
from jobs.runner import JobRunner
from storage.interface import JobRecord, JobState, Limits, LimitsPatch, NewJob, Refusal, Reservation, Scope
from storage.sqlite import SqliteStore, open_store

GUILD, CHANNEL, OWNER = 10, 20, 30
NOW = 1_700_000_000.0


def png(color: tuple[int, int, int], size: tuple[int, int] = (64, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class ScriptedHandle:
    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.queue: asyncio.Queue[JobEvent | None] = asyncio.Queue()
        self.outcome: asyncio.Future[GenerationResult] = asyncio.get_running_loop().create_future()
        self.drained = asyncio.Event()  # set when the consumer waits for more events

    async def events(self) -> AsyncIterator[JobEvent]:
        while True:
            if self.queue.empty():
                self.drained.set()
            event = await self.queue.get()
            if event is None:
                return
            self.drained.clear()
            yield event

    async def result(self) -> GenerationResult:
        return await self.outcome

    def finish(self, events: list[JobEvent], outcome: GenerationResult | Exception) -> None:
        for event in events:
            self.queue.put_nowait(event)
        self.queue.put_nowait(None)
        if isinstance(outcome, Exception):
            self.outcome.set_exception(outcome)
        else:
            self.outcome.set_result(outcome)


class ScriptedBackend:
    # Its results may come flagged: a model whose pictures are screened.
    profile = ModelProfile(
        name="tiny", native_size=64, default_steps=4, default_guidance=5.0, has_safety_checker=True
    )

    def __init__(self) -> None:
        self.catalog: dict[str, ModelEntry] = {}
        self.handles: dict[str, ScriptedHandle] = {}
        self.submitted = asyncio.Queue[str]()

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def count_tokens(self, text: str) -> int:
        return len(text.split()) + 2

    def submit(self, job_id: str, owner: str, request: GenerationRequest) -> ScriptedHandle:
        handle = self.handles[job_id] = ScriptedHandle(job_id)
        self.submitted.put_nowait(job_id)
        return handle

    def cancel(self, job_id: str) -> bool:
        handle = self.handles.get(job_id)
        if handle is None or handle.outcome.done():
            return False
        handle.finish([], gen.JobCancelled("cancelled"))
        return True

    def queue_snapshot(self) -> list[tuple[str, str]]:
        return []


class RecordingOutbox:
    def __init__(self, *, nsfw: bool = False, transient_failures: int = 0, token_gone: bool = False) -> None:
        self.nsfw = nsfw
        self.transient_failures = transient_failures
        self.token_gone = token_gone
        self.progress: list[tuple[str, bool]] = []
        self.posts: list[tuple[ResultPost, bool]] = []
        self.told: list[tuple[str, bool, bool]] = []
        self.posted = asyncio.Event()
        self.told_event = asyncio.Event()
        self.next_id = 1000
        self.attempted = asyncio.Event()

    async def show_progress(self, job: JobRecord, text: str, preview_png: bytes | None) -> None:
        self.progress.append((text, preview_png is not None))

    async def post_result(self, job: JobRecord, post: ResultPost, *, via_token: bool) -> tuple[int, int]:
        self.attempted.set()
        if via_token and self.token_gone:
            raise TokenGone("unknown webhook")
        if self.transient_failures:
            self.transient_failures -= 1
            raise TransientDeliveryError("503")
        self.posts.append((post, via_token))
        self.next_id += 1
        self.posted.set()
        return self.next_id, job.channel_id

    async def tell_owner(self, job: JobRecord, text: str, *, via_token: bool, private: bool) -> None:
        self.told.append((text, via_token, private))
        self.told_event.set()

    async def direct_message(self, job: JobRecord, text: str) -> bool:
        self.told.append((text, False, True))
        self.told_event.set()
        return True

    async def channel_is_nsfw(self, channel_id: int) -> bool:
        return self.nsfw

    def upload_limit(self, guild_id: int) -> int:
        return 8 * 1024 * 1024


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = await open_store(tmp_path / "db.sqlite", Limits(100, 100, 10, 0.0))
    yield s
    await s.close()


def request(n: int = 4) -> GenerationRequest:
    return GenerationRequest(
        prompt="a red fox",
        width=64,
        height=64,
        steps=4,
        guidance=5.0,
        seeds=tuple(range(7, 7 + n)),
        model="tiny",
    )


def new_job(job_id: str, req: GenerationRequest, clock: Clock, *, token: bool = True) -> NewJob:
    return NewJob(
        job_id=job_id,
        guild_id=GUILD,
        channel_id=CHANNEL,
        owner_id=OWNER,
        request_json=req.to_json(),
        images=req.count,
        interaction_id=1 if token else None,
        interaction_token="tok" if token else None,
        token_expires_at=token_expiry(clock()) if token else None,
    )


def result(job_id: str, flags: list[bool]) -> GenerationResult:
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    return gen.GenerationResult(
        job_id, tuple(gen.GeneratedImage(png(colors[i]), 7 + i, 64, 64, nsfw=f) for i, f in enumerate(flags))
    )


def make_runner(store: SqliteStore, outbox: RecordingOutbox, tmp_path: Path, clock: Clock):  # type: ignore[no-untyped-def]
    backend = ScriptedBackend()
    sleeps: list[float] = []

    async def sleep(s: float) -> None:
        sleeps.append(s)

    runner = JobRunner(store, backend, ImageStore(tmp_path / "images"), outbox, clock=clock, sleep=sleep)
    return runner, backend, sleeps


async def used(store: SqliteStore, clock: Clock) -> int:
    return (await store.usage(GUILD, OWNER, (), clock())).used_last_hour


@dataclass
class OneJob:
    """A runner over `store` and a recording outbox, with one job submitted and on the backend."""

    runner: JobRunner
    backend: ScriptedBackend
    sleeps: list[float]
    clock: Clock
    job_id: str

    @classmethod
    async def start(
        cls, store: SqliteStore, outbox: RecordingOutbox, tmp_path: Path, job_id: str, images: int
    ) -> OneJob:
        clock = Clock()
        runner, backend, sleeps = make_runner(store, outbox, tmp_path, clock)
        req = request(images)
        await runner.submit(new_job(job_id, req, clock), req, ())
        await asyncio.wait_for(backend.submitted.get(), 5)
        return cls(runner, backend, sleeps, clock, job_id)

    async def end(self, outcome: GenerationResult | Exception, events: list[JobEvent] | None = None) -> None:
        """The backend ends the job with `events` then `outcome`; wait until the runner is done."""
        self.backend.handles[self.job_id].finish(events or [], outcome)
        await asyncio.wait_for(self.runner.wait(self.job_id), 5)

    async def end_with(self, flags: list[bool]) -> None:
        """The backend returns one picture per flag (True: flagged by the safety checker)."""
        await self.end(result(self.job_id, flags))


async def test_happy_path_progress_then_one_delivery(store: SqliteStore, tmp_path: Path) -> None:
    clock = Clock()
    outbox = RecordingOutbox()
    runner, backend, _ = make_runner(store, outbox, tmp_path, clock)
    req = request(4)
    outcome = await runner.submit(new_job("aaaaaaaaaaaa", req, clock), req, (), upload_limit=10_000_000)
    assert isinstance(outcome, Reservation)
    await asyncio.wait_for(backend.submitted.get(), 5)
    events: list[JobEvent] = [gen.Queued(2), gen.Queued(1), gen.Started()]
    events += [gen.Progress(k, 4, png((1, 1, 1))) for k in (1, 2, 3, 4)]
    backend.handles["aaaaaaaaaaaa"].finish(events, result("aaaaaaaaaaaa", [False] * 4))
    await asyncio.wait_for(runner.wait("aaaaaaaaaaaa"), 5)
    # Throttled: the clock never moved, so only the first event became an edit.
    assert outbox.progress == [("Queued: position 2…", False)]
    [(post, via_token)] = outbox.posts
    assert via_token and post.image_count == 4 and len(post.files) == 1
    with Image.open(io.BytesIO(post.files[0].data)) as grid:
        assert grid.size == (128, 128)  # the 2×2 grid
    assert "7, 8, 9, 10" in post.content
    job = await store.get_job("aaaaaaaaaaaa")
    assert job is not None and job.state is JobState.DONE and len(job.image_paths) == 4
    assert job.result_message_id == 1001 and all(map(os.path.isfile, job.image_paths))
    assert await store.undelivered_jobs() == [] and await used(store, clock) == 4


async def test_progress_edits_are_throttled_by_time(store: SqliteStore, tmp_path: Path) -> None:
    outbox = RecordingOutbox()
    run = await OneJob.start(store, outbox, tmp_path, "bbbbbbbbbbbb", 1)
    handle = run.backend.handles["bbbbbbbbbbbb"]
    handle.queue.put_nowait(gen.Queued(1))
    handle.queue.put_nowait(gen.Started())
    handle.queue.put_nowait(gen.Progress(1, 3, png((0, 0, 0))))  # same instant: dropped
    await asyncio.wait_for(handle.drained.wait(), 5)
    run.clock.now += 1.6
    await run.end(result("bbbbbbbbbbbb", [False]), [gen.Progress(2, 3, png((0, 0, 0)))])
    assert outbox.progress == [("Queued: next to run…", False), ("Generating… step 2 of 3", True)]


@pytest.mark.parametrize("error", [gen.JobFailed("out of memory"), gen.JobCancelled("cancelled")])
async def test_failure_or_cancel_refunds_and_tells_owner(
    store: SqliteStore, tmp_path: Path, error: Exception
) -> None:
    outbox = RecordingOutbox()
    run = await OneJob.start(store, outbox, tmp_path, "cccccccccccc", 2)
    assert await used(store, run.clock) == 2
    await run.end(error, [gen.Started()])
    job = await store.get_job("cccccccccccc")
    assert job is not None and job.refunded
    assert job.state is (JobState.FAILED if isinstance(error, gen.JobFailed) else JobState.CANCELLED)
    assert await used(store, run.clock) == 0 and outbox.posts == []
    [(text, via_token, private)] = outbox.told
    assert str(error) in text and "given back" in text and via_token and not private


async def test_cancel_through_runner(store: SqliteStore, tmp_path: Path) -> None:
    outbox = RecordingOutbox()
    run = await OneJob.start(store, outbox, tmp_path, "dddddddddddd", 1)
    assert await run.runner.cancel("dddddddddddd")
    await asyncio.wait_for(run.runner.wait("dddddddddddd"), 5)
    job = await store.get_job("dddddddddddd")
    assert job is not None and job.state is JobState.CANCELLED and job.refunded
    assert not await run.runner.cancel("dddddddddddd")


async def test_all_flagged_in_sfw_channel_never_posted(store: SqliteStore, tmp_path: Path) -> None:
    outbox = RecordingOutbox(nsfw=False)
    run = await OneJob.start(store, outbox, tmp_path, "eeeeeeeeeeee", 2)
    await run.end_with([True, True])
    assert outbox.posts == []
    [(text, _, private)] = outbox.told
    assert private and "flagged" in text
    assert await used(store, run.clock) == 0
    assert not list((tmp_path / "images").rglob("eeeeeeeeeeee_*"))  # flagged images are not kept


async def test_some_flagged_in_sfw_channel_posts_the_rest(store: SqliteStore, tmp_path: Path) -> None:
    outbox = RecordingOutbox(nsfw=False)
    run = await OneJob.start(store, outbox, tmp_path, "ffffffffffff", 4)
    await run.end_with([False, True, False, False])
    [(post, _)] = outbox.posts
    assert post.image_count == 3 and "7, 9, 10" in post.content
    assert not post.files[0].filename.startswith("SPOILER_")
    assert any(private and "1 of your 4" in text for text, _, private in outbox.told)
    job = await store.get_job("ffffffffffff")
    assert job is not None and job.seeds == (7, 9, 10) and len(job.image_paths) == 3


async def test_flagged_in_nsfw_channel_posted_as_spoiler(store: SqliteStore, tmp_path: Path) -> None:
    outbox = RecordingOutbox(nsfw=True)
    run = await OneJob.start(store, outbox, tmp_path, "0a0a0a0a0a0a", 1)
    await run.end_with([True])
    [(post, _)] = outbox.posts
    assert post.files[0].filename.startswith("SPOILER_") and outbox.told == []


async def test_transient_failures_retried_with_backoff_then_delivered_once(
    store: SqliteStore, tmp_path: Path
) -> None:
    outbox = RecordingOutbox(transient_failures=3)
    run = await OneJob.start(store, outbox, tmp_path, "1b1b1b1b1b1b", 1)
    await run.end_with([False])
    assert run.sleeps == [1.0, 2.0, 4.0] and len(outbox.posts) == 1


async def test_expired_or_dead_token_goes_to_channel_with_mention(store: SqliteStore, tmp_path: Path) -> None:
    outbox = RecordingOutbox(token_gone=True)
    run = await OneJob.start(store, outbox, tmp_path, "2c2c2c2c2c2c", 1)
    await run.end_with([False])
    [(post, via_token)] = outbox.posts
    assert not via_token and f"<@{OWNER}>" in post.content


async def test_restart_delivers_undelivered_and_resubmits_unfinished(
    store: SqliteStore, tmp_path: Path
) -> None:
    clock = Clock()
    first = RecordingOutbox(transient_failures=10**6)  # Discord down: never delivers
    runner, backend, _ = make_runner(store, first, tmp_path, clock)
    req = request(1)
    await runner.submit(new_job("3d3d3d3d3d3d", req, clock), req, ())
    await runner.submit(new_job("4e4e4e4e4e4e", req, clock), req, ())
    await asyncio.wait_for(backend.submitted.get(), 5)
    await asyncio.wait_for(backend.submitted.get(), 5)
    backend.handles["3d3d3d3d3d3d"].finish([], result("3d3d3d3d3d3d", [False]))
    await asyncio.wait_for(first.attempted.wait(), 5)
    assert [j.job_id for j in await store.undelivered_jobs()] == ["3d3d3d3d3d3d"]
    await runner.close()  # "killed": one job done but undelivered, one still queued
    assert await used(store, clock) == 2

    clock.now += 16 * 60  # the interaction tokens have expired meanwhile
    second = RecordingOutbox()
    runner2, backend2, _ = make_runner(store, second, tmp_path, clock)
    assert await runner2.resume() == (1, 1)
    await asyncio.wait_for(runner2.wait("3d3d3d3d3d3d"), 5)
    [(post, via_token)] = second.posts
    assert post.job_id == "3d3d3d3d3d3d" and not via_token and f"<@{OWNER}>" in post.content
    assert await asyncio.wait_for(backend2.submitted.get(), 5) == "4e4e4e4e4e4e"
    backend2.handles["4e4e4e4e4e4e"].finish([], result("4e4e4e4e4e4e", [False]))
    await asyncio.wait_for(runner2.wait("4e4e4e4e4e4e"), 5)
    assert [p.job_id for p, _ in second.posts] == ["3d3d3d3d3d3d", "4e4e4e4e4e4e"]
    assert await used(store, clock) == 2  # nothing spent twice
    assert await runner2.resume() == (0, 0)  # nothing delivered twice
    await runner2.close()


async def test_refusal_spawns_nothing(store: SqliteStore, tmp_path: Path) -> None:
    clock = Clock()
    outbox = RecordingOutbox()
    runner, backend, _ = make_runner(store, outbox, tmp_path, clock)
    req = request(4)
    await store.set_limits(GUILD, Scope.GUILD, None, LimitsPatch(images_per_hour=3))
    outcome = await runner.submit(new_job("5f5f5f5f5f5f", req, clock), req, ())
    assert isinstance(outcome, Refusal) and backend.submitted.empty() and not runner.is_active("5f5f5f5f5f5f")
