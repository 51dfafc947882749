"""The event-loop bookkeeping both backends share: jobs by id, the fair waiting queue, queue positions,
`submit`, `cancel` and settling. `GenerationService` (one local worker) and `RayBackend` (Serve
replicas) subclass it and decide only how waiting jobs become running batches (`_dispatch`).

Everything here runs on the event loop's thread.

Positions: any number of queue changes within `position_interval_s` cost one pass over the queue
(0: once per loop turn). Every waiting job's position is kept, but Queued events go only to jobs
someone listens to; a reader who subscribes later gets the current position at once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from generation.backends.protocol import GenerationResult, JobCancelled, ModelEntry, Queued
from generation.prompts.request import GenerationRequest, ModelProfile
from generation.scheduling.fairqueue import FairQueue
from generation.scheduling.job_state import Handle, Job, SourceImages, mark_retrieved

SHUTDOWN_MESSAGE = "the generator is shutting down"


@dataclass(frozen=True)
class Batching:
    """How a backend runs its batches (both take these as keyword arguments of their own)."""

    job_timeout_s: float  # a batch still running after this fails its jobs
    max_batch: int | None  # images per batch at most (None: as many as the engine fits)
    preview_interval_s: float  # at most one preview per job per interval
    progress_interval_s: float  # at most one step event per job per interval
    watchdog_grace_s: float  # after the timeout, how long a stuck batch may take to stop


class JobScheduler:
    """Base of the `GenerationBackend`s: see the module docstring. Subclasses implement `_dispatch`
    and may extend `_on_cancel` (a job was cancelled), `_waiting_order` and `_is_waiting` (jobs
    waiting outside the fair queue, e.g. a broken batch to retry)."""

    def __init__(
        self, images: SourceImages, batching: Batching, *, position_interval_s: float = 0.25
    ) -> None:
        self._images = images
        self._timeout = batching.job_timeout_s
        self._max_batch = batching.max_batch
        self._preview_interval = batching.preview_interval_s
        self._progress_interval = batching.progress_interval_s
        self._grace = batching.watchdog_grace_s
        self._position_interval = position_interval_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: FairQueue[Job] = FairQueue()
        self._jobs: dict[str, Job] = {}
        self._closed = False
        self._dispatch_scheduled = False
        self._positions_scheduled = False  # a _flush_positions is pending on the loop
        self._profile: ModelProfile | None = None  # the subclass's start() sets it
        self.catalog: dict[str, ModelEntry] = {}  # every model by name (the subclass's start() sets it)

    @property
    def profile(self) -> ModelProfile:
        """The model's profile, once `start()` has finished (settable, as `GenerationBackend` says)."""
        if self._profile is None:
            raise self._not_started()
        return self._profile

    @profile.setter
    def profile(self, value: ModelProfile) -> None:
        self._profile = value

    def _not_started(self) -> RuntimeError:
        return RuntimeError(f"{type(self).__name__}.start() has not finished")

    # -- the GenerationBackend calls ----------------------------------------------------------------

    def submit(self, job_id: str, owner: str, request: GenerationRequest) -> Handle:
        """Queue a job (on the loop thread). After `close()` the handle's result is `JobCancelled`."""
        if job_id in self._jobs:
            raise ValueError(f"job {job_id!r} is already queued or running")
        loop = self._loop or asyncio.get_running_loop()
        job = Job(job_id, owner, request, loop.create_future(), on_subscribe=self._on_subscribe)
        job.future.add_done_callback(mark_retrieved)
        if self._closed:
            job.future.set_exception(JobCancelled(SHUTDOWN_MESSAGE))
            return Handle(job)
        self._jobs[job_id] = job
        self._waiting.push(job_id, owner, job)
        self._publish_positions()
        self._schedule_dispatch()
        return Handle(job)

    def cancel(self, job_id: str) -> bool:
        """Cancel a waiting job (it leaves the queue) or a running one (its result is dropped; its
        batch stops at its next step once all members are cancelled). False if nothing to cancel."""
        job = self._jobs.get(job_id)
        if job is None or job.done:
            return False
        job.cancelled = True
        if self._waiting.remove(job_id) is not None:
            self._publish_positions()
        self._settle(job, JobCancelled("cancelled"))
        self._on_cancel(job)
        return True

    # -- for subclasses ------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        """Turn waiting jobs into running batches while there is room (clear `_dispatch_scheduled`)."""
        raise NotImplementedError

    def _on_cancel(self, job: Job) -> None:
        """`job` was just cancelled and settled."""

    def _waiting_order(self) -> list[Job]:
        """Every waiting job, in the order they will run."""
        return self._waiting.ordered()

    def _is_waiting(self, job: Job) -> bool:
        return job.job_id in self._waiting

    def _schedule_dispatch(self) -> None:
        # Deferred by one loop turn, so jobs submitted together can share a batch.
        if not self._dispatch_scheduled and self._loop is not None:
            self._dispatch_scheduled = True
            self._loop.call_soon(self._dispatch)

    def _cancel_waiting(self) -> None:
        """Shutting down: every waiting job leaves the queue, cancelled."""
        for job in self._waiting.ordered():
            self._waiting.remove(job.job_id)
            self._settle(job, JobCancelled(SHUTDOWN_MESSAGE))

    def _settle(self, job: Job, outcome: GenerationResult | BaseException) -> bool:
        """End `job` with its result or error; False if it had ended already."""
        if not job.settle(outcome):
            return False
        self._jobs.pop(job.job_id, None)
        return True

    # -- queue positions -----------------------------------------------------------------------------

    def _publish_positions(self) -> None:
        # Coalesced: any number of queue changes within one interval cost one pass over the queue.
        if not self._positions_scheduled and self._loop is not None:
            self._positions_scheduled = True
            self._loop.call_later(self._position_interval, self._flush_positions)

    def _flush_positions(self) -> None:
        """Give every waiting job its position; publish Queued only to jobs someone listens to."""
        self._positions_scheduled = False
        for index, job in enumerate(self._waiting_order(), start=1):
            if job.position != index:
                job.position = index
                if job.subscribers:
                    job.publish(Queued(index))

    def _on_subscribe(self, job: Job) -> None:
        # A new reader of a waiting job must start from its current position, which nobody may have
        # published (no readers) or which a pending flush has not computed yet.
        if not self._is_waiting(job):
            return
        if self._positions_scheduled:
            self._flush_positions()
        current = Queued(job.position)
        if job.last_event != current:
            job.last_event = current
