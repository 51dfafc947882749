"""`ClaimSource`: the `JobSource` of many bot processes sharing one fair queue, the jobs table of a
shared store.

With a store that implements `storage.queue.JobQueue` (PostgreSQL), `JobRunner.submit` only reserves:
the stored job is the queue. Each process's runner has one claim source, which

- claims queued jobs (`claim_next`: round-robin by owner across every process) while its backend has
  room (`capacity` jobs generating at once, a small bound so a light user's job never waits behind a
  heavy user's many in some process's local queue), and hands each to the runner (`JobRunner.work_on`);
- renews the leases of the jobs it runs every `lease_s / 3`; a job whose lease it lost (reclaimed after
  a stall, or cancelled elsewhere) is cancelled in the backend and never recorded or delivered here;
- records a job's images with `complete_claimed` while holding the job's delivery lock, and keeps that lock
  until the result is posted and recorded, so no two processes deliver one job;
- puts the jobs of dead processes back in the queue (`reclaim_expired`) and delivers done jobs that
  nobody delivered (a process that died between recording and posting): under the delivery lock;
- wakes on a NOTIFY that any process sends when a job is queued or put back, with a slow poll as the
  fallback, so it never spins.

The delivery lock is a PostgreSQL session advisory lock on the claim source's own connection, so it ends
with the process (`PgSignals`). A crash after the post and before `record_delivery` can still post one
job twice, as in one process: Discord has no idempotent post.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any

from jobs.sources import Worker
from storage.interface import JobRecord, JobState, StorageError
from storage.queue import JobQueue, QueueSignals

log = logging.getLogger(__name__)

DEFAULT_LEASE_S = 60.0
DEFAULT_CAPACITY = 4
DEFAULT_POLL_S = 1.0


def default_worker_id() -> str:
    """A name for this process's leases: host, pid and a random tag (pids repeat after restarts)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class ClaimSource:
    """`JobSource` that claims jobs from a shared `JobQueue` (see the module docstring). Give it to a
    `JobRunner` (`source=`): `runner.resume()` starts it and `runner.close()` stops it."""

    def __init__(
        self,
        queue: JobQueue,
        *,
        signals: QueueSignals | None = None,
        worker_id: str | None = None,
        capacity: int = DEFAULT_CAPACITY,
        lease_s: float = DEFAULT_LEASE_S,
        poll_s: float = DEFAULT_POLL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        if lease_s <= 0 or poll_s <= 0:
            raise ValueError("lease_s and poll_s must be > 0")
        self.queue = queue
        self._worker: Worker | None = None
        self.signals = signals
        self.worker_id = worker_id or default_worker_id()
        self.capacity = capacity
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.clock = clock
        self._held: set[str] = set()  # leased to us and generating (they fill `capacity`)
        self._locked: set[str] = set()  # delivery locks we hold
        self._handed_over: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._wakeup = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._reclaim_due = True
        self._closing = False

    # -- JobSource (called by the runner) -------------------------------------------------------------

    def attach(self, worker: Worker) -> None:
        """The runner claimed jobs go to."""
        self._worker = worker

    @property
    def worker(self) -> Worker:
        """The attached runner."""
        if self._worker is None:
            raise RuntimeError("the claim source belongs to no runner")
        return self._worker

    def queued(self, job: JobRecord) -> None:
        """A job was reserved here: claim it (or let another process) now, not at the next poll."""
        self.wake()
        if self.signals is not None:
            self._in_background(self.signals.notify())

    def holds(self, job_id: str) -> bool:
        """True while the job is leased to this process and not yet recorded."""
        return job_id in self._held

    async def mark_running(self, job_id: str) -> None:
        """Nothing to store: a claimed job is running (under its lease) already."""

    async def record_images(
        self, job: JobRecord, seeds: tuple[int, ...], image_paths: tuple[str, ...]
    ) -> bool:
        """Take the delivery lock, then record the images if the lease is still ours. True: the caller
        delivers (the lock is kept until its task ends); False: drop the result."""
        job_id = job.job_id
        if job_id not in self._held:
            return False
        if self.signals is not None:
            await self.signals.lock_delivery(job_id, wait=True)
            self._locked.add(job_id)
        try:
            done = await self.queue.complete_claimed(job_id, self.worker_id, seeds, image_paths)
        except BaseException:
            await self._unlock(job_id)
            raise
        self._held.discard(job_id)
        self.wake()  # a slot is free while this one is delivered
        if not done:
            await self._unlock(job_id)
        return done

    async def start(self) -> tuple[int, int]:
        """Start: listen, take over done-but-undelivered jobs nobody holds, start claiming. Returns
        (undelivered taken, 0): queued jobs are claimed by the loop, not counted here."""
        if self._loop_task is not None:
            return 0, 0
        if self.signals is not None:
            await self.signals.open(self.wake)
        swept = await self._sweep_undelivered()
        self._loop_task = asyncio.get_running_loop().create_task(self._run(), name="claim-source")
        return swept, 0

    async def close(self) -> None:
        """Stop claiming; put the jobs still generating here back in the queue; give back the locks."""
        if self._closing:
            return
        self._closing = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        for task in list(self._handed_over.values()):
            task.cancel()
        for task in list(self._handed_over.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._held:
            try:
                back = await self.queue.release(sorted(self._held), self.worker_id)
                log.info("released %d job(s) back to the queue", len(back))
                if back and self.signals is not None:
                    await self.signals.notify()
            except StorageError as exc:
                log.warning("could not release held jobs (their leases will run out): %s", exc)
            self._held.clear()
        for task in list(self._background):
            with contextlib.suppress(Exception):
                await task
        for job_id in list(self._locked):
            await self._unlock(job_id)
        if self.signals is not None:
            await self.signals.close()

    # -- controls ------------------------------------------------------------------------------------

    def wake(self) -> None:
        """Run the loop now (a job was queued, put back, or a slot freed)."""
        self._wakeup.set()

    def reclaim_now(self) -> None:
        """Look for expired leases on the next turn of the loop (tests with an injected clock)."""
        self._reclaim_due = True
        self.wake()

    @property
    def in_flight(self) -> int:
        """Jobs claimed here and still generating."""
        return len(self._held)

    # -- the loop ------------------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        renew_every = self.lease_s / 3
        next_renew = loop.time() + renew_every
        next_reclaim = loop.time()
        next_sweep = loop.time() + self.lease_s  # `resume` swept just now
        while not self._closing:
            self._wakeup.clear()
            try:
                if self._reclaim_due or loop.time() >= next_reclaim:
                    self._reclaim_due = False
                    next_reclaim = loop.time() + min(self.poll_s, renew_every)
                    if await self.queue.reclaim_expired(self.clock()) and self.signals is not None:
                        await self.signals.notify()
                if loop.time() >= next_renew:
                    next_renew = loop.time() + renew_every
                    await self._renew()
                if loop.time() >= next_sweep:
                    next_sweep = loop.time() + self.lease_s
                    await self._sweep_undelivered()
                await self._claim()
            except StorageError as exc:
                log.warning("claims: %s (trying again in %.1f s)", exc, self.poll_s)
            except Exception:
                log.exception("claims: unexpected error (trying again in %.1f s)", self.poll_s)
            timeout = max(0.0, min(self.poll_s, next_renew - loop.time()))
            with contextlib.suppress(TimeoutError):
                # Not asyncio.wait_for: on 3.11 it can swallow a cancel that lands as the wait ends,
                # and close() would then wait for this loop forever.
                async with asyncio.timeout(timeout):
                    await self._wakeup.wait()

    async def _claim(self) -> None:
        free = self.capacity - len(self._held)
        if free <= 0 or self._closing:
            return
        jobs = await self.queue.claim_next(self.worker_id, self.clock(), self.lease_s, limit=free)
        for job in jobs:
            self._held.add(job.job_id)
            self._hand_over(job)
        if jobs and len(self._held) < self.capacity:
            self.wake()  # others may have taken some candidates: look again before sleeping

    async def _renew(self) -> None:
        if not self._held:
            return
        asked = sorted(self._held)
        kept = set(await self.queue.renew_lease(asked, self.worker_id, self.clock(), self.lease_s))
        for job_id in asked:
            if job_id not in kept and job_id in self._held:
                log.warning("job %s: lease lost (reclaimed or cancelled elsewhere); dropping it", job_id)
                self._held.discard(job_id)
                self.worker.stop(job_id)
                self.wake()

    async def _sweep_undelivered(self) -> int:
        """Deliver done jobs nobody is delivering (their process died after recording them)."""
        taken = 0
        for job in await self.worker.store.undelivered_jobs():
            if job.job_id in self._handed_over or self._closing:
                continue
            if self.signals is not None:
                if not await self.signals.lock_delivery(job.job_id, wait=False):
                    continue
                self._locked.add(job.job_id)
            fresh = await self.worker.store.get_job(job.job_id)
            if fresh is None or fresh.state is not JobState.DONE or fresh.result_message_id is not None:
                await self._unlock(job.job_id)
                continue
            log.info("job %s: delivering a result another process recorded", job.job_id)
            self._hand_over(fresh)
            taken += 1
        return taken

    def _hand_over(self, job: JobRecord) -> None:
        self._handed_over[job.job_id] = asyncio.get_running_loop().create_task(
            self._watch(job), name=f"claimed-{job.job_id}"
        )

    async def _watch(self, job: JobRecord) -> None:
        """Hand the job to the runner and clean up after its task ends."""
        job_id = job.job_id
        cancelled = False
        try:
            if self.worker.is_active(job_id):  # an earlier lease of ours, still winding down
                await self.worker.wait(job_id)
            self.worker.work_on(job)
            await self.worker.wait(job_id)
        except asyncio.CancelledError:
            cancelled = True  # shutting down: `close` releases what is still held
        finally:
            if not cancelled:
                self._held.discard(job_id)
            self._handed_over.pop(job_id, None)
            await self._unlock(job_id)
            self.wake()

    async def _unlock(self, job_id: str) -> None:
        if job_id in self._locked:
            self._locked.discard(job_id)
            if self.signals is not None:
                try:
                    await self.signals.unlock_delivery(job_id)
                except Exception as exc:
                    log.warning("job %s: could not give back its delivery lock: %r", job_id, exc)

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


__all__ = ["DEFAULT_CAPACITY", "DEFAULT_LEASE_S", "ClaimSource", "default_worker_id"]
