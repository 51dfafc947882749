"""The local generation backend: a fair queue on the event loop and ONE worker thread that owns the engine.

Shaped like aiosqlite's connection thread. All scheduling state (the fair queue, handles, events)
lives on the event loop thread and is touched only there. When the worker is idle the loop picks the
next job fairly, adds waiting jobs with an equal `batch_key()` (in fair order, up to the batch image
cap) and hands the batch to the worker through a `queue.Queue`. The worker runs `engine.run_batch`
and reports progress and results back with `loop.call_soon_threadsafe`; the loop never waits on it.

Faults (the per-step checks and the OutOfMemory split are `generation.scheduling.batch_run.BatchRun`'s, shared
with the Ray replica):
- a batch that raises fails its own jobs with `JobFailed("generation failed: <Type>")` (traceback
  logged); the worker goes on with the next batch.
- `OutOfMemory`: the batch is split in halves and retried, down to single jobs; a single job that
  still does not fit fails with `JobFailed`.
- time limit: a batch whose steps pass `job_timeout_s` (on the injected clock) is interrupted at the
  next step and its jobs fail with `JobFailed("took longer than N s")`. If a step hangs so that no
  callback comes, a watchdog on the loop fails the batch's jobs `watchdog_grace_s` after the limit.
  The worker is then *stuck*: new and waiting jobs stay queued (they keep their positions and can be
  cancelled) until the hung call returns, after which the worker takes the queue up again. We do not
  load a second engine beside a hung one: on one GPU that would most likely run out of memory too.

Events: Queued(position) on submit and whenever the position changes, Started when the batch is
handed to the worker, Progress(step, total, preview) at most once per `progress_interval_s` and at
the last step (see `BatchRun`), then the iterator ends. Queued events go only to jobs someone
listens to, at most once per `position_interval_s` (a burst of submits, cancels and dispatches costs
one pass over the queue; 0: once per loop turn); a reader who subscribes later gets the current
position at once. Previews are rendered only for a job with a reader, at most one per
`preview_interval_s` counted from the job's start (a job shorter than that renders none), never for
the last step.
`events()` may be called any number of times; each reader starts from the job's latest event. Readers
never slow the worker: each has its own buffer where an unread Queued/Progress is replaced by a newer one.
The engine is touched from the loop thread only for `count_tokens` (tokenizer reads) and
`max_batch_images` (asked only while the worker is idle).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from generation.backends.protocol import (
    REFERENCE_GONE,
    SOURCE_GONE,
    JobCancelled,
    JobFailed,
    Progress,
    Started,
)
from generation.pipelines.contract import Engine, catalog_of
from generation.scheduling.batch_run import BatchRun, Outcome, StepDone, outcome_for, timeout_message
from generation.scheduling.job_state import Job, SourceImages
from generation.scheduling.scheduler import SHUTDOWN_MESSAGE, Batching, JobScheduler

log = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass(eq=False)
class _Batch:
    """Jobs handed to the worker as one unit."""

    jobs: list[Job]
    deadline: float  # on the service clock
    abandoned: bool = False  # set by the watchdog or close(): stop at the next step
    watchdog: asyncio.TimerHandle | None = None


class GenerationService(JobScheduler):
    """`GenerationBackend` over one `Engine` driven by one worker thread. Use from one event loop:
    `submit`, `cancel`, `queue_snapshot` and `count_tokens` are plain calls made on the loop thread."""

    def __init__(
        self,
        engine_factory: Callable[[], Engine],
        image_store: SourceImages,
        *,
        job_timeout_s: float = 300.0,
        max_batch: int | None = None,
        clock: Clock = time.monotonic,
        preview_interval_s: float = 0.5,
        progress_interval_s: float = 0.25,
        position_interval_s: float = 0.25,
        watchdog_grace_s: float = 10.0,
    ) -> None:
        batching = Batching(
            job_timeout_s, max_batch, preview_interval_s, progress_interval_s, watchdog_grace_s
        )
        super().__init__(image_store, batching, position_interval_s=position_interval_s)
        self._factory = engine_factory
        self._clock = clock
        self._engine: Engine | None = None
        self._thread: threading.Thread | None = None
        self._inbox: queue.Queue[_Batch | None] = queue.Queue()
        self._running: _Batch | None = None  # handed to the worker and not yet returned

    # -- lifecycle ---------------------------------------------------------------------------------

    @property
    def stuck(self) -> bool:
        """True while a batch the watchdog gave up on still occupies the worker."""
        return self._running is not None and self._running.abandoned and not self._closed

    async def start(self) -> None:
        """Start the worker thread, which builds the engine; returns once it is loaded (or raises)."""
        if self._thread is not None:
            raise RuntimeError("already started")
        loop = self._loop = asyncio.get_running_loop()
        loaded: asyncio.Future[Engine] = loop.create_future()
        self._thread = threading.Thread(
            target=self._work, args=(loaded,), name="generation-worker", daemon=True
        )
        self._thread.start()
        try:
            engine = await loaded
        except BaseException:
            self._closed = True
            await asyncio.to_thread(self._thread.join)
            raise
        self._engine = engine
        self._profile = engine.profile
        self.catalog = catalog_of(engine)
        self._schedule_dispatch()

    async def close(self) -> None:
        """Cancel waiting and running jobs, stop the worker and join it (off the loop)."""
        if self._closed and self._thread is None:
            return
        was_stuck = self.stuck
        self._closed = True
        self._cancel_waiting()
        if self._running is not None:
            self._running.abandoned = True
            for job in self._running.jobs:
                job.cancelled = True
                self._settle(job, JobCancelled(SHUTDOWN_MESSAGE))
        thread, self._thread = self._thread, None
        if thread is not None:
            self._inbox.put(None)
            # A hung step may never return: give it the grace period, then leave the daemon thread.
            await asyncio.to_thread(thread.join, self._grace if was_stuck else None)
        self._engine = None

    # -- the GenerationBackend calls ----------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        """Tokens the model's tokenizer makes of `text` (tokenizer reads are safe beside the worker)."""
        if self._engine is None:
            raise self._not_started()
        return self._engine.count_tokens(text)

    def queue_snapshot(self) -> list[tuple[str, str]]:
        """(job_id, owner) of running jobs first, then waiting ones in the order they will run."""
        running = [] if self._running is None else [j for j in self._running.jobs if not j.done]
        return [(j.job_id, j.owner) for j in running] + [(j.job_id, j.owner) for j in self._waiting.ordered()]

    # -- loop side: scheduling --------------------------------------------------------------------

    def _dispatch(self) -> None:
        self._dispatch_scheduled = False
        engine = self._engine
        if self._closed or engine is None or self._running is not None or not self._waiting:
            return

        def cap_of(job: Job) -> int:
            # Asks the engine from the loop thread: max_batch_images only reads free device memory.
            cap = self._max_batch if self._max_batch is not None else engine.max_batch_images(job.request)
            return max(1, cap)

        jobs = self._waiting.pop_batch(
            key_of=lambda j: j.request.batch_key(), size_of=lambda j: j.request.count, cap_of=cap_of
        )
        batch = _Batch(jobs, deadline=self._clock() + self._timeout)
        self._running = batch
        assert self._loop is not None
        batch.watchdog = self._loop.call_later(self._timeout + self._grace, self._on_watchdog, batch)
        for job in jobs:
            job.publish(Started())
        self._publish_positions()
        self._inbox.put(batch)

    def _on_watchdog(self, batch: _Batch) -> None:
        if self._running is not batch:
            return
        batch.abandoned = True
        log.error(
            "generation batch %s hung past the time limit; the worker is stuck",
            [j.job_id for j in batch.jobs],
        )
        for job in batch.jobs:
            self._settle(job, JobFailed(timeout_message(self._timeout)))

    def _on_batch_done(self, batch: _Batch) -> None:
        if batch.watchdog is not None:
            batch.watchdog.cancel()
        if self._running is batch:
            self._running = None
        for job in batch.jobs:  # a job the worker did not settle (should not happen) must still end
            self._settle(job, JobFailed("generation failed: the worker returned no result"))
        self._schedule_dispatch()

    # -- worker thread -----------------------------------------------------------------------------

    def _post(self, callback: Callable[..., object], *args: object) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening any more
            loop.call_soon_threadsafe(callback, *args)

    def _work(self, loaded: asyncio.Future[Engine]) -> None:
        try:
            engine = self._factory()
        except BaseException as exc:
            log.exception("loading the model failed")
            self._post(_resolve, loaded, exc)
            return
        self._post(_resolve, loaded, engine)
        while (batch := self._inbox.get()) is not None:
            try:
                self._run(engine, batch)
            except BaseException:  # never let the worker die with a batch in hand
                log.exception("generation worker error")
            finally:
                self._post(self._on_batch_done, batch)
        close = getattr(engine, "close", None)
        if callable(close):
            try:
                close()
            except Exception:
                log.exception("closing the engine failed")

    def _run(self, engine: Engine, batch: _Batch) -> None:
        jobs: list[Job] = []
        sources: list[bytes | None] = []
        pictures: dict[str, bytes] = {}
        for job in batch.jobs:
            digest = job.request.source_image
            try:
                source = None if digest is None else self._images.get(digest)
            except Exception:
                log.exception("source image %s of job %s is missing", digest, job.job_id)
                self._post(self._settle, job, JobFailed(SOURCE_GONE))
                continue
            try:
                pictures.update((d, self._images.get(d)) for d in job.request.reference_images)
            except Exception:
                log.exception("a reference picture of job %s is missing", job.job_id)
                self._post(self._settle, job, JobFailed(REFERENCE_GONE))
                continue
            sources.append(source)
            jobs.append(job)
        if not jobs:
            return

        BatchRun(
            engine,
            [job.request for job in jobs],
            sources,
            _LoopMembers(self, batch, jobs),
            deadline=batch.deadline,
            timeout_s=self._timeout,
            clock=self._clock,
            preview_interval_s=self._preview_interval,
            progress_interval_s=self._progress_interval,
            label=f"batch {[job.job_id for job in jobs]}",
            pictures=pictures,
        ).run()


class _LoopMembers:
    """`BatchMembers` of a local batch: reads the jobs' flags, posts their progress and endings to the
    event loop."""

    def __init__(self, service: GenerationService, batch: _Batch, jobs: list[Job]) -> None:
        self._service, self._batch, self._jobs = service, batch, jobs

    def stopped(self) -> bool:
        return self._batch.abandoned

    def cancelled(self, i: int) -> bool:
        return self._jobs[i].cancelled

    def watched(self, i: int) -> bool:
        return bool(self._jobs[i].subscribers)  # previews only for jobs someone listens to

    def report(self, step: StepDone) -> None:
        # One loop wake-up per reported step, whatever the batch size.
        events = [(self._jobs[i], Progress(step.step, step.total, png)) for i, png in step.previews.items()]
        self._service._post(_publish_all, events)

    def settle(self, i: int, outcome: Outcome) -> None:
        job = self._jobs[i]
        self._service._post(self._service._settle, job, outcome_for(job.job_id, outcome))


def _publish_all(events: Sequence[tuple[Job, Progress]]) -> None:
    for job, event in events:
        job.publish(event)


def _resolve(future: asyncio.Future[Engine], outcome: Engine | BaseException) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
