"""GenerationService over a fake engine whose steps the test releases (no sleeps): fair order,
batching, events, cancellation, faults (raise, OOM, time limit, hung step) and shutdown."""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence

import pytest
from PIL import Image

from generation.backends import protocol
from generation.backends.local import GenerationService
from generation.media.compose import read_parameters
from generation.pipelines.contract import BatchInterrupted, OutOfMemory, StepCallback
from generation.prompts.request import GenerationRequest, Mode, ModelProfile
from generation.scheduling.job_state import Handle, Job
from tests.fixtures_generation import same_within_rounding, tiny_request

WAIT = 10.0  # generous bound for waits on events/futures; never reached when the code is right


class FakeEngine:
    """A pure-Python engine. Each step waits for `hold` (set = run freely), then calls on_step."""

    profile = ModelProfile(name="fake", native_size=64, default_steps=3, default_guidance=5.0)

    def __init__(self, cap: int = 4) -> None:
        self.cap = cap
        self.hold = threading.Event()
        self.hold.set()
        self.waiting = threading.Event()  # set when a step waits for `hold`
        self.batches: list[list[str]] = []  # prompts of every run_batch call, in call order
        self.sources: list[list[bytes | None]] = []
        self.fail_on: dict[str, Exception] = {}  # a prompt in the batch -> raise this
        self.max_fit: int | None = None  # more images than this in one call -> OutOfMemory
        self.interrupted = 0
        self.steps_run = 0
        self.previews = 0
        self.preview_steps: list[int] = []  # the step at which each preview was rendered
        self.before_step: Callable[[], None] | None = None  # e.g. advance a fake clock
        self.closed = False

    def count_tokens(self, text: str) -> int:
        return len(text.split()) + 2

    def max_batch_images(self, request: GenerationRequest) -> int:
        return self.cap

    def close(self) -> None:
        self.closed = True

    def run_batch(
        self,
        requests: Sequence[GenerationRequest],
        sources: Sequence[bytes | None],
        on_step: StepCallback,
        pictures: Mapping[str, bytes] | None = None,
    ) -> list[list[protocol.GeneratedImage]]:
        self.batches.append([r.prompt for r in requests])
        self.sources.append(list(sources))
        for r in requests:
            if r.prompt in self.fail_on:
                raise self.fail_on[r.prompt]
        if self.max_fit is not None and sum(r.count for r in requests) > self.max_fit:
            raise OutOfMemory("fake")
        total = requests[0].steps
        step = 0

        def preview(i: int) -> bytes:
            self.previews += 1
            self.preview_steps.append(step)
            return f"preview:{requests[i].prompt}".encode()

        for step in range(1, total + 1):
            if not self.hold.is_set():
                self.waiting.set()
            assert self.hold.wait(WAIT), "test never released the engine"
            self.steps_run += 1
            if self.before_step is not None:
                self.before_step()
            if not on_step(step, total, preview):
                self.interrupted += 1
                raise BatchInterrupted()
        return [
            [protocol.GeneratedImage(f"{r.prompt}:{s}".encode(), s, r.width, r.height) for s in r.seeds]
            for r in requests
        ]


def decoded(png: bytes) -> bytes:
    with Image.open(io.BytesIO(png)) as im:
        return im.convert("RGB").tobytes()


class Images:
    def __init__(self, data: dict[str, bytes]) -> None:
        self.data = data

    def get(self, digest: str) -> bytes:
        return self.data[digest]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def req(
    prompt: str, *, width: int = 64, seeds: tuple[int, ...] = (1,), steps: int = 3, **kw: object
) -> GenerationRequest:
    return tiny_request(
        prompt=prompt, width=width, seeds=seeds, steps=steps, guidance=5.0, model="fake", **kw
    )


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


def make_service(engine: FakeEngine, **kw: object) -> GenerationService:
    kw.setdefault("job_timeout_s", 60.0)
    kw.setdefault("position_interval_s", 0.0)  # one positions pass per loop turn: exact sequences
    return GenerationService(lambda: engine, Images({"abc": b"SOURCE"}), **kw)  # type: ignore[arg-type]


@pytest.fixture
async def service(engine: FakeEngine) -> AsyncIterator[GenerationService]:
    svc = make_service(engine, max_batch=1)
    await svc.start()
    yield svc
    engine.hold.set()
    await svc.close()


async def in_step(engine: FakeEngine) -> None:
    """Wait until the worker is inside run_batch, held at a step."""
    assert await asyncio.to_thread(engine.waiting.wait, WAIT)


async def wait_for(handle: Handle, kind: type[protocol.JobEvent]) -> protocol.JobEvent:
    async with asyncio.timeout(WAIT):
        async for event in handle.events():
            if isinstance(event, kind):
                return event
    raise AssertionError(f"{handle.job_id} ended before {kind.__name__}")


async def result(handle: Handle) -> protocol.GenerationResult:
    async with asyncio.timeout(WAIT):
        return await handle.result()


async def failure(handle: Handle) -> BaseException:
    async with asyncio.timeout(WAIT):
        try:
            await handle.result()
        except (protocol.JobFailed, protocol.JobCancelled) as exc:
            return exc
    raise AssertionError(f"{handle.job_id} succeeded")


def collect(handle: Handle) -> asyncio.Task[list[protocol.JobEvent]]:
    """Subscribe now (so nothing from here on is missed) and gather events until the job ends."""
    stream = handle.events()

    async def gather() -> list[protocol.JobEvent]:
        async with asyncio.timeout(WAIT):
            return [e async for e in stream]

    return asyncio.create_task(gather())


# -- basics -----------------------------------------------------------------------------------------


async def test_a_job_completes_with_its_images_and_events(service: GenerationService) -> None:
    handle = service.submit("j1", "alice", req("fox", seeds=(7, 8)))
    events_task = collect(handle)
    res = await result(handle)
    assert res.job_id == "j1"
    assert [(i.png, i.seed) for i in res.images] == [(b"fox:7", 7), (b"fox:8", 8)]
    events = await events_task
    assert events[:2] == [protocol.Queued(1), protocol.Started()]
    progress = [e for e in events[2:] if isinstance(e, protocol.Progress)]
    assert len(progress) == len(events) - 2 and progress[-1].step == progress[-1].total == 3
    assert [p.step for p in progress] == sorted(p.step for p in progress)


async def test_profile_and_count_tokens_come_from_the_engine(engine: FakeEngine) -> None:
    svc = make_service(engine)
    with pytest.raises(RuntimeError):
        _ = svc.profile
    await svc.start()
    try:
        assert svc.profile == engine.profile
        assert svc.count_tokens("a red fox") == 5
    finally:
        await svc.close()
    assert engine.closed  # the worker released the engine on its way out


async def test_a_failing_engine_factory_makes_start_raise() -> None:
    def factory() -> FakeEngine:
        raise FileNotFoundError("no such model")

    svc = GenerationService(factory, Images({}), job_timeout_s=10)
    with pytest.raises(FileNotFoundError):
        await svc.start()
    await svc.close()


async def test_duplicate_job_id_is_refused_and_submit_after_close_is_cancelled(
    service: GenerationService,
) -> None:
    h = service.submit("j1", "a", req("x"))
    with pytest.raises(ValueError):
        service.submit("j1", "a", req("y"))
    await result(h)
    await service.close()
    late = service.submit("j2", "a", req("x"))
    assert isinstance(await failure(late), protocol.JobCancelled)


async def test_source_images_are_read_from_the_store_and_a_missing_one_fails_that_job(
    service: GenerationService, engine: FakeEngine
) -> None:
    ok = service.submit("ok", "a", req("v", mode=Mode.IMG2IMG, strength=0.5, source_image="abc"))
    await result(ok)
    assert engine.sources[-1] == [b"SOURCE"]
    gone = service.submit("gone", "a", req("v", mode=Mode.IMG2IMG, strength=0.5, source_image="zzz"))
    err = await failure(gone)
    assert isinstance(err, protocol.JobFailed) and "source image" in str(err)


async def hold_engine_with_one_running_job(
    service: GenerationService, engine: FakeEngine, *, owner: str
) -> Handle:
    """Hold the engine inside job "x"'s first step, so that what is submitted next queues behind it."""
    engine.hold.clear()
    blocker = service.submit("x", owner, req("x"))
    await wait_for(blocker, protocol.Started)
    return blocker


# -- fairness and positions -------------------------------------------------------------------------


async def test_queue_is_round_robin_by_owner_with_position_events(
    service: GenerationService, engine: FakeEngine
) -> None:
    await hold_engine_with_one_running_job(service, engine, owner="zed")
    handles = {
        jid: service.submit(jid, owner, req(jid)) for jid, owner in [("a1", "A"), ("a2", "A"), ("a3", "A")]
    }
    handles["b1"] = service.submit("b1", "B", req("b1"))
    assert service.queue_snapshot() == [("x", "zed"), ("a1", "A"), ("b1", "B"), ("a2", "A"), ("a3", "A")]
    assert await wait_for(handles["b1"], protocol.Queued) == protocol.Queued(2)
    b1_events = collect(handles["b1"])
    engine.hold.set()
    for h in handles.values():
        await result(h)
    assert engine.batches == [["x"], ["a1"], ["b1"], ["a2"], ["a3"]]
    events = await b1_events
    assert events[0] == protocol.Queued(2) and protocol.Started() in events
    assert events.index(protocol.Started()) > events.index(
        protocol.Queued(1)
    )  # moved up when a1 left the queue
    assert service.queue_snapshot() == []


async def test_events_allow_several_readers_and_a_late_reader_ends_at_once(
    service: GenerationService,
) -> None:
    h = service.submit("j", "a", req("x"))
    first, second = collect(h), collect(h)
    await result(h)
    assert (await first)[-1] == (await second)[-1]
    late = await collect(h)
    assert len(late) <= 1  # at most the last state, then the end


# -- batching -----------------------------------------------------------------------------------------


async def test_compatible_jobs_share_a_batch_up_to_the_image_cap_and_others_run_apart(
    engine: FakeEngine,
) -> None:
    engine.cap = 3
    svc = make_service(engine)  # cap from engine.max_batch_images
    await svc.start()
    try:
        blocker = await hold_engine_with_one_running_job(svc, engine, owner="z")
        hs = [
            svc.submit("a", "A", req("a")),
            svc.submit("b", "B", req("b")),
            svc.submit("c", "C", req("c", width=128)),  # another shape
            svc.submit("d", "D", req("d", seeds=(1, 2))),  # would make 4 images with a and b
            svc.submit("e", "E", req("e", steps=5)),  # another schedule
        ]
        engine.hold.set()
        results = [await result(h) for h in [blocker, *hs]]
    finally:
        await svc.close()
    assert engine.batches == [["x"], ["a", "b"], ["c"], ["d"], ["e"]]
    assert [r.images[0].png for r in results] == [b"x:1", b"a:1", b"b:1", b"c:1", b"d:1", b"e:1"]


async def test_jobs_submitted_together_run_as_one_batch(engine: FakeEngine) -> None:
    svc = make_service(engine)
    await svc.start()
    try:
        hs = [svc.submit(f"j{i}", f"u{i}", req(f"p{i}")) for i in range(3)]
        for h in hs:
            await result(h)
    finally:
        await svc.close()
    assert engine.batches == [["p0", "p1", "p2"]]


# -- cancellation -------------------------------------------------------------------------------------


async def test_cancel_a_waiting_job_removes_it(service: GenerationService, engine: FakeEngine) -> None:
    blocker = await hold_engine_with_one_running_job(service, engine, owner="z")
    a = service.submit("a", "A", req("a"))
    b = service.submit("b", "B", req("b"))
    assert await wait_for(b, protocol.Queued) == protocol.Queued(2)
    assert service.cancel("a") is True
    assert service.cancel("a") is False
    assert service.cancel("nope") is False
    assert isinstance(await failure(a), protocol.JobCancelled)
    assert await wait_for(b, protocol.Queued) == protocol.Queued(1)
    engine.hold.set()
    await result(b)
    await result(blocker)
    assert engine.batches == [["x"], ["b"]]


async def test_cancel_one_running_member_drops_its_result_and_the_batch_goes_on(engine: FakeEngine) -> None:
    svc = make_service(engine)
    await svc.start()
    try:
        engine.hold.clear()
        a, b = svc.submit("a", "A", req("a")), svc.submit("b", "B", req("b"))
        await in_step(engine)
        assert svc.cancel("a") is True
        assert isinstance(await failure(a), protocol.JobCancelled)  # at once, before the batch moves on
        assert svc.queue_snapshot() == [("b", "B")]
        engine.hold.set()
        res = await result(b)
    finally:
        await svc.close()
    assert res.images[0].png == b"b:1"
    assert engine.batches == [["a", "b"]] and engine.interrupted == 0 and engine.steps_run == 3


async def test_a_batch_whose_members_are_all_cancelled_stops_at_the_next_step(engine: FakeEngine) -> None:
    svc = make_service(engine)
    await svc.start()
    try:
        engine.hold.clear()
        svc.submit("a", "A", req("a", steps=10))
        svc.submit("b", "B", req("b", steps=10))
        await in_step(engine)
        assert svc.cancel("a") and svc.cancel("b")
        engine.hold.set()
        nxt = svc.submit("c", "C", req("c"))
        await result(nxt)
    finally:
        await svc.close()
    assert engine.interrupted == 1
    assert engine.steps_run == 1 + 3  # one step of the cancelled batch, then c's three


# -- faults -------------------------------------------------------------------------------------------


async def test_a_raising_batch_fails_its_jobs_alone_and_the_next_job_succeeds(
    service: GenerationService, engine: FakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    engine.fail_on["boom"] = RuntimeError("CUDA error at /secret/path")
    with caplog.at_level(logging.ERROR, logger="generation.backends.local"):
        bad = service.submit("bad", "a", req("boom"))
        err = await failure(bad)
    assert isinstance(err, protocol.JobFailed)
    assert str(err) == "generation failed: RuntimeError"
    assert any(r.exc_info for r in caplog.records)  # the traceback is logged, not shown
    good = service.submit("good", "a", req("fine"))
    assert (await result(good)).images[0].png == b"fine:1"


async def test_out_of_memory_splits_the_batch_down_to_single_jobs(engine: FakeEngine) -> None:
    engine.max_fit = 1
    svc = make_service(engine)
    await svc.start()
    try:
        hs = [svc.submit(p, p, req(p)) for p in "abcd"]
        pngs = [(await result(h)).images[0].png for h in hs]
        assert pngs == [b"a:1", b"b:1", b"c:1", b"d:1"]
        assert engine.batches == [
            ["a", "b", "c", "d"],
            ["a", "b"],
            ["a"],
            ["b"],
            ["c", "d"],
            ["c"],
            ["d"],
        ]
        too_big = svc.submit("big", "e", req("big", seeds=(1, 2)))
        err = await failure(too_big)
        assert isinstance(err, protocol.JobFailed) and "memory" in str(err)
        engine.max_fit = None
        assert (await result(svc.submit("after", "e", req("after")))).images
    finally:
        await svc.close()


async def test_a_batch_past_the_time_limit_is_interrupted_at_its_next_step(engine: FakeEngine) -> None:
    clock = FakeClock()
    svc = make_service(engine, job_timeout_s=30.0, max_batch=1, clock=clock)
    await svc.start()
    try:
        engine.hold.clear()
        slow = svc.submit("slow", "a", req("slow", steps=10))
        await in_step(engine)
        clock.now += 31
        engine.hold.set()
        err = await failure(slow)
        assert isinstance(err, protocol.JobFailed) and str(err) == "took longer than 30 s"
        assert (await result(svc.submit("next", "a", req("next")))).images
    finally:
        await svc.close()
    assert engine.interrupted == 1


async def test_a_hung_step_fails_its_job_by_watchdog_and_waiting_jobs_run_once_it_returns(
    engine: FakeEngine,
) -> None:
    svc = make_service(engine, job_timeout_s=0.2, watchdog_grace_s=0.1, max_batch=1)
    await svc.start()
    try:
        engine.hold.clear()  # the first step never returns until the test says so
        hung = svc.submit("hung", "a", req("hung"))
        waiting = svc.submit("waiting", "b", req("waiting"))
        err = await failure(hung)
        assert isinstance(err, protocol.JobFailed) and str(err) == "took longer than 0.2 s"
        assert svc.stuck
        assert svc.queue_snapshot() == [("waiting", "b")]
        assert await wait_for(waiting, protocol.Queued) == protocol.Queued(1)
        engine.hold.set()  # the hung call returns; the worker takes the queue up again
        assert (await result(waiting)).images[0].png == b"waiting:1"
        assert not svc.stuck
    finally:
        await svc.close()


# -- previews -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("interval", "seconds_per_step", "preview_steps"),
    [
        (0.5, 0.3, [2, 4]),  # the throttle starts with the job: the first preview comes 0.5 s in
        (0.5, 0.08, []),  # a job shorter than the interval renders none
        (0.0, 0.0, [1, 2, 3, 4, 5]),  # every step but the last
    ],
)
async def test_previews_are_throttled_from_the_jobs_start_and_never_rendered_for_the_last_step(
    engine: FakeEngine, interval: float, seconds_per_step: float, preview_steps: list[int]
) -> None:
    clock = FakeClock()

    def tick() -> None:
        clock.now += seconds_per_step

    engine.before_step = tick
    svc = make_service(engine, clock=clock, preview_interval_s=interval)
    await svc.start()
    try:
        h = svc.submit("j", "a", req("fox", steps=6))
        events = collect(h)
        await result(h)
        progress = [e for e in await events if isinstance(e, protocol.Progress)]
    finally:
        await svc.close()
    assert engine.preview_steps == preview_steps
    assert any(p.preview_png == b"preview:fox" for p in progress) == bool(preview_steps)


async def test_previews_are_rendered_only_while_someone_listens(engine: FakeEngine) -> None:
    svc = make_service(engine, preview_interval_s=0.0, max_batch=1)
    await svc.start()
    try:
        await result(svc.submit("unheard", "a", req("fox", steps=5)))
        assert engine.previews == 0  # nobody called events(): no preview was rendered
        engine.hold.clear()
        h = svc.submit("heard", "a", req("cat", steps=5))
        await in_step(engine)  # held before step 1, with no reader yet
        stream = h.events()  # a reader arrives mid-job
        engine.hold.set()
        async with asyncio.timeout(WAIT):
            progress = [e async for e in stream if isinstance(e, protocol.Progress)]
        await result(h)
    finally:
        await svc.close()
    assert engine.preview_steps == [1, 2, 3, 4]
    assert progress[-1].step == 5 and any(p.preview_png == b"preview:cat" for p in progress)


# -- queue positions ----------------------------------------------------------------------------------------


async def test_queued_events_go_only_to_listened_jobs_once_per_loop_turn(
    service: GenerationService, engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    published: dict[str, list[protocol.JobEvent]] = {}
    original = Job.publish

    def counting_publish(job: Job, event: protocol.JobEvent) -> None:
        published.setdefault(job.job_id, []).append(event)
        original(job, event)

    monkeypatch.setattr(Job, "publish", counting_publish)
    await hold_engine_with_one_running_job(service, engine, owner="zed")
    handles = [service.submit(f"j{i}", f"u{i}", req(f"j{i}")) for i in range(8)]
    listened = collect(handles[7])  # subscribed in the same turn: it sees its position at once
    assert service.cancel("j0") and service.cancel("j1")  # same turn: one pass, one event
    others = handles[2:7]
    assert await wait_for(handles[7], protocol.Queued) == protocol.Queued(6)
    assert [e for e in published["j7"] if isinstance(e, protocol.Queued)] == [protocol.Queued(6)]
    engine.hold.set()
    for h in others:
        await result(h)
    events = await listened
    queued = [e for e in published["j7"] if isinstance(e, protocol.Queued)]
    assert queued == [protocol.Queued(n) for n in range(6, 0, -1)]  # each dispatch moved it up by one
    assert events[0] == protocol.Queued(6) and events.index(protocol.Started()) > events.index(
        protocol.Queued(1)
    )
    for h in others:  # nobody listened to these: no Queued event was made for them at all
        assert not [e for e in published[h.job_id] if isinstance(e, protocol.Queued)]
    # 8 waiting jobs moved up 6 times: n² events before, now one per move of the one listened job
    assert sum(isinstance(e, protocol.Queued) for es in published.values() for e in es) == 6


async def test_queue_positions_are_coalesced_over_the_interval(
    engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    published: list[protocol.JobEvent] = []
    original = Job.publish

    def counting_publish(job: Job, event: protocol.JobEvent) -> None:
        if job.job_id == "j7" and isinstance(event, protocol.Queued):
            published.append(event)
        original(job, event)

    monkeypatch.setattr(Job, "publish", counting_publish)
    svc = make_service(engine, position_interval_s=60.0)  # longer than the whole test
    await svc.start()
    try:
        engine.hold.clear()
        await wait_for(svc.submit("x", "zed", req("x")), protocol.Started)
        handles = [svc.submit(f"j{i}", f"u{i}", req(f"j{i}")) for i in range(8)]
        listened = collect(handles[7])
        assert await wait_for(handles[7], protocol.Queued) == protocol.Queued(
            8
        )  # a new reader: its position at once
        engine.hold.set()
        for h in handles:
            await result(h)
        events = await listened
    finally:
        await svc.close()
    # Seven dispatches moved it up inside one interval: no positions pass ran, so none was published.
    assert published == []
    assert [e for e in events if isinstance(e, protocol.Queued)] == [
        protocol.Queued(8)
    ] and protocol.Started() in events


async def test_a_late_reader_of_an_unlistened_job_gets_its_current_position(
    service: GenerationService, engine: FakeEngine
) -> None:
    await hold_engine_with_one_running_job(service, engine, owner="zed")
    a, b, c = (service.submit(j, j.upper(), req(j)) for j in "abc")
    c_stream = c.events()
    async with asyncio.timeout(WAIT):
        assert await anext(c_stream) == protocol.Queued(3)
        service.cancel("a")
        assert await anext(c_stream) == protocol.Queued(2)  # the positions pass has run
        assert await anext(b.events()) == protocol.Queued(1)  # b moved without a reader: computed, not stale
        service.cancel("b")
        assert await anext(c.events()) == protocol.Queued(
            1
        )  # subscribed before the pending pass: flushed now
    assert isinstance(await failure(a), protocol.JobCancelled)
    engine.hold.set()
    await result(c)
    assert service.queue_snapshot() == []


# -- shutdown -------------------------------------------------------------------------------------------


async def test_close_cancels_waiting_and_running_jobs_and_joins_the_worker(engine: FakeEngine) -> None:
    svc = make_service(engine, max_batch=1)
    await svc.start()
    engine.hold.clear()
    running = svc.submit("r", "a", req("r", steps=10))
    await in_step(engine)
    waiting = svc.submit("w", "b", req("w"))
    closing = asyncio.create_task(svc.close())
    assert isinstance(await failure(waiting), protocol.JobCancelled)
    assert isinstance(await failure(running), protocol.JobCancelled)
    engine.hold.set()
    async with asyncio.timeout(WAIT):
        await closing
    assert engine.closed and engine.interrupted == 1 and engine.batches == [["r"]]


async def test_close_does_not_wait_forever_on_a_hung_worker(engine: FakeEngine) -> None:
    svc = make_service(engine, job_timeout_s=0.1, watchdog_grace_s=0.1)
    await svc.start()
    engine.hold.clear()
    hung = svc.submit("hung", "a", req("hung"))
    assert isinstance(await failure(hung), protocol.JobFailed)
    assert svc.stuck
    try:
        async with asyncio.timeout(WAIT / 2):
            await svc.close()  # gives the hung call the grace period, then leaves the daemon thread
    finally:
        engine.hold.set()  # let the fake's thread finish after the test


def test_service_satisfies_the_backend_protocol() -> None:
    from generation.backends.protocol import GenerationBackend

    svc: GenerationBackend = make_service(FakeEngine())
    assert isinstance(svc, GenerationService)


# -- the real diffusers engine on the tiny model ------------------------------------------------------------


def real_service(engine: object, **kw: object) -> GenerationService:
    return GenerationService(lambda: engine, Images({}), job_timeout_s=120.0, **kw)  # type: ignore[arg-type, return-value]


async def test_real_tiny_job_completes_with_previews_and_parameters(tiny_engine: object) -> None:
    svc = real_service(tiny_engine, preview_interval_s=0.0)
    await svc.start()
    try:
        h = svc.submit("real", "a", tiny_request(seeds=(3,)))
        events = collect(h)
        res = await result(h)
        progress = [e for e in await events if isinstance(e, protocol.Progress)]
    finally:
        await svc.close()
    (image,) = res.images
    assert (image.width, image.height, image.seed) == (64, 64, 3)
    assert "Seed: 3" in (read_parameters(image.png) or "")
    assert progress[-1].step == progress[-1].total
    assert any(p.preview_png and p.preview_png.startswith(b"\x89PNG") for p in progress)


async def heartbeat(stop: Callable[[list[float]], bool]) -> list[float]:
    """Tick every 10 ms until `stop(gaps)`; the gaps between ticks (measuring, not waiting for work)."""
    loop = asyncio.get_running_loop()
    gaps: list[float] = []
    last = loop.time()
    while not stop(gaps):
        await asyncio.sleep(0.01)
        now = loop.time()
        gaps.append(now - last)
        last = now
    return gaps


async def test_the_event_loop_keeps_ticking_while_a_real_generation_runs(tiny_engine: object) -> None:
    svc = real_service(tiny_engine, preview_interval_s=0.0)  # previews at every step: the worst case
    await svc.start()
    try:
        # The machine's own scheduling noise (other processes share these 2 cores), measured idle.
        idle = await heartbeat(lambda gaps: len(gaps) >= 30)
        ended = asyncio.Event()
        busy_task = asyncio.create_task(heartbeat(lambda _: ended.is_set()))
        await asyncio.sleep(0)  # let the heartbeat take its first timestamp before anything is queued
        handle = svc.submit("hb", "a", tiny_request(steps=16, seeds=(1, 2)))
        await result(handle)
        ended.set()
        busy = await busy_task
    finally:
        await svc.close()
    assert len(busy) > 10  # the generation outlasted many ticks: a blocked loop would show one long gap
    noise = max(idle) - 0.01
    assert max(busy) < 0.05 + noise, (
        f"the loop stalled for {max(busy) * 1000:.0f} ms (idle noise {noise * 1000:.0f} ms)"
    )


async def test_real_same_seed_gives_same_pixels_alone_and_batched(tiny_engine: object) -> None:
    svc = real_service(tiny_engine)
    await svc.start()
    try:
        alone = await result(svc.submit("alone", "a", tiny_request(seeds=(5,))))
        again = svc.submit("again", "a", tiny_request(seeds=(5,)))
        other = svc.submit("other", "b", tiny_request(seeds=(6,)))
        batched, different = await result(again), await result(other)
    finally:
        await svc.close()
    assert same_within_rounding(alone.images[0].png, batched.images[0].png)
    assert decoded(alone.images[0].png) != decoded(different.images[0].png)
