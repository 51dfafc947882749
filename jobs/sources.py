"""Where the runner's jobs come from: the `JobSource` interface and the in-process queue.

`JobRunner` reserves a job in the store and tells its source (`queued`); the source hands jobs back to
the runner to work on (`Worker.work_on`) and decides, for a job that ends, whether this process may
still end it (`holds`) and how its images are recorded (`record_images`). Two sources:

- `InProcessSource` (SQLite, one process): a queued job is worked on at once; after a restart the
  store's done-but-undelivered and unfinished jobs are worked on again.
- `jobs.claims.ClaimSource` (PostgreSQL, many processes): the stored jobs are one shared queue,
  claimed under leases, woken by LISTEN/NOTIFY, delivered under an advisory lock.

The runner never asks which one it has.
"""

from __future__ import annotations

from typing import Protocol

from storage.interface import JobRecord, JobState, Store


class Worker(Protocol):
    """What a source asks of the runner (`jobs.runner.JobRunner` implements it)."""

    store: Store

    def work_on(self, job: JobRecord) -> None:
        """Run a queued or running job, or deliver a done one's saved images."""
        ...

    def is_active(self, job_id: str) -> bool:
        """True while the runner works on the job."""
        ...

    async def wait(self, job_id: str) -> None:
        """Until the runner is done with the job."""
        ...

    def stop(self, job_id: str) -> None:
        """Stop generating a job this process may no longer end (its lease moved on)."""
        ...


class JobSource(Protocol):
    """Where jobs come from and how their ending is recorded (see the module docstring)."""

    def attach(self, worker: Worker) -> None:
        """The runner this source hands its jobs to (called once, by the runner it belongs to)."""
        ...

    async def start(self) -> tuple[int, int]:
        """Begin handing out jobs; returns (to deliver, to generate) taken up at start."""
        ...

    def queued(self, job: JobRecord) -> None:
        """A job was just reserved in the store."""
        ...

    def holds(self, job_id: str) -> bool:
        """True while this process may still end the job (fail, cancel or record it)."""
        ...

    async def mark_running(self, job_id: str) -> None:
        """The job's batch began."""
        ...

    async def record_images(
        self, job: JobRecord, seeds: tuple[int, ...], image_paths: tuple[str, ...]
    ) -> bool:
        """Record the saved images; True if this process is now the one to deliver them."""
        ...

    async def close(self) -> None:
        """Stop handing out jobs; what this process still holds goes back to the queue."""
        ...


class InProcessSource:
    """`JobSource` of one process over its own store: reserved jobs run at once, in this process."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._worker: Worker | None = None

    def attach(self, worker: Worker) -> None:
        self._worker = worker

    async def start(self) -> tuple[int, int]:
        """After a restart: deliver done-but-undelivered jobs, resubmit queued/running ones."""
        worker = self._attached()
        undelivered = await self.store.undelivered_jobs()
        for job in undelivered:
            worker.work_on(job)
        unfinished = [job for job in await self.store.unfinished_jobs() if not worker.is_active(job.job_id)]
        for job in unfinished:
            worker.work_on(job)
        return len(undelivered), len(unfinished)

    def queued(self, job: JobRecord) -> None:
        self._attached().work_on(job)

    def _attached(self) -> Worker:
        if self._worker is None:
            raise RuntimeError("the job source belongs to no runner")
        return self._worker

    def holds(self, job_id: str) -> bool:
        return True

    async def mark_running(self, job_id: str) -> None:
        await self.store.set_job_state(job_id, JobState.RUNNING)

    async def record_images(
        self, job: JobRecord, seeds: tuple[int, ...], image_paths: tuple[str, ...]
    ) -> bool:
        await self.store.record_images(job.job_id, seeds, image_paths)
        return True

    async def close(self) -> None:
        """Nothing to give back: the store keeps queued jobs for the next start."""
