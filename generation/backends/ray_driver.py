"""`RayBackend`: the `GenerationBackend` over GPU workers on a Ray Serve deployment.

Fairness and batching stay here, in the driver (the bot's process), not in Ray: the scheduler picks the
next jobs fairly (`generation.scheduling.fairqueue.FairQueue.pop_batch`, the same rule as the local
service: the next job fairly plus later compatible ones in fair order, up to the batch image cap) and
sends each batch as ONE streaming call to `generation.backends.ray_replica.ImagineReplica.run`, only
while a replica has a free slot. Free slots = replicas × `max_ongoing` (the deployment's
`max_ongoing_requests`, 1 by default: one batch per replica at a time, so Serve's router can only place
a batch on an idle replica and nothing is committed to Ray's first-come-first-served queues). With
`max_ongoing=2` a second batch waits inside the replica behind the running one (hides the dispatch round
trip; costs a little fairness, since that batch is chosen one batch earlier). `@serve.batch` is not
used.

Source images are read on the driver (`image_store.get`) and sent in the call.

Several drivers may share one deployment (`generation.backends.ray_app.ServeApp` joins or deploys it).

Cancel: a waiting job leaves the queue. A member of a running batch is settled `JobCancelled` at once
and dropped from delivery; the batch is stopped (`DeploymentResponseGenerator.cancel()`, which sets
the replica's per-step stop flag) only when all its members have cancelled.

Faults: a stream that breaks (replica killed, `RayActorError`, any stream error) puts its live jobs
back at the FRONT of the queue, as one batch, to run again on another (or the restarted) replica; a
job's result is settled once, so it is delivered once. After `max_attempts` broken streams the jobs
fail. The per-job time limit is checked by the replica at every step (`JobFailed("took longer than N
s")`, counted from when the replica takes the batch up); if no step comes back, a watchdog here
fails the jobs `watchdog_grace_s` after the limit, cancels the call and kills the hung replica so
Serve replaces it (tests/test_ray_watchdog.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from pathlib import Path
from typing import Any

from generation.backends.protocol import (
    GenerationResult,
    JobCancelled,
    JobFailed,
    Progress,
    Started,
)
from generation.backends.ray_app import ReplicaModels, ServeApp
from generation.backends.ray_batch import Batch, SchedulerStats, read_sources
from generation.backends.ray_cluster import kill_replica
from generation.backends.ray_replica import BatchCall, BatchDone, EngineFactory, ReplicaStarted
from generation.pipelines.options import OptimiseOptions
from generation.pipelines.safety_options import SafetyOptions
from generation.scheduling.batch_run import StepDone, outcome_for, timeout_message

# The job state, its handle and event streams are the local service's, so both backends behave alike.
from generation.scheduling.job_state import Job, SourceImages
from generation.scheduling.scheduler import SHUTDOWN_MESSAGE, Batching, JobScheduler

log = logging.getLogger(__name__)


class RayBackend(JobScheduler):
    """`GenerationBackend` over Ray Serve replicas. Use from one event loop (like `GenerationService`)."""

    def __init__(
        self,
        model_id: str,
        device: str,
        *,
        replicas: int | None = None,
        autoscale: tuple[int, int] | None = None,
        address: str | None = None,
        image_store: SourceImages,
        job_timeout_s: float = 300.0,
        max_batch: int | None = None,
        cache_dir: Path | None = None,
        optimise: OptimiseOptions | None = None,
        safety: SafetyOptions | None = None,
        engine_factory: EngineFactory | None = None,
        max_ongoing: int = 1,
        replica_cpus: float | None = None,
        app_name: str = "imagine",
        preview_interval_s: float = 0.5,
        progress_interval_s: float = 0.25,
        position_interval_s: float = 0.25,
        watchdog_grace_s: float = 10.0,
        max_attempts: int = 3,
        models: ReplicaModels | None = None,
    ) -> None:
        """`replicas` (fixed) or `autoscale=(min, max)`; neither: one replica. `address`: the cluster to
        join (else Ray's default: `$RAY_ADDRESS` as Ray reads it, else a local cluster; a process
        already connected to Ray stays on its cluster). `engine_factory` replaces
        `DiffusersFactory(model_id, device, cache_dir, optimise)` (stand-in engines for tests and
        benchmarks). `replica_cpus`: CPUs Ray reserves per replica (None: Serve's default of 1).
        `models`: the models of MODELS each replica keeps (batches go to one that runs theirs)."""
        batching = Batching(
            job_timeout_s, max_batch, preview_interval_s, progress_interval_s, watchdog_grace_s
        )
        super().__init__(image_store, batching, position_interval_s=position_interval_s)
        self.model_id = model_id
        self.device = device
        self._serve = ServeApp(
            model_id,
            device,
            replicas=replicas,
            autoscale=autoscale,
            address=address,
            cache_dir=cache_dir,
            optimise=optimise,
            safety=safety,
            engine_factory=engine_factory,
            max_ongoing=max_ongoing,
            replica_cpus=replica_cpus,
            app_name=app_name,
            models=models,
        )
        self._max_attempts = max_attempts
        self._retry: deque[Batch] = deque()  # broken batches: they run before anything waiting
        self._running: list[Batch] = []
        self._replica_of: dict[str, str] = {}
        self._poller: asyncio.Task[None] | None = None
        self._started = False
        self._ids = itertools.count(1)
        self.stats = SchedulerStats()

    @classmethod
    def from_settings(cls, settings: Any, image_store: SourceImages) -> RayBackend:
        """Build from `bot.settings.Settings`."""
        return cls(
            settings.model_id,
            settings.device,
            replicas=settings.ray_replicas,
            autoscale=settings.ray_autoscale,
            address=settings.ray_address,
            image_store=image_store,
            job_timeout_s=settings.job_timeout_s,
            cache_dir=settings.model_cache_dir,
            optimise=settings.optimise,
            safety=SafetyOptions(settings.safety, settings.safety_checker_id),
            models=ReplicaModels(
                settings.model_set,
                settings.model_memory_gb,
                settings.lora_dir,
                settings.video_model,
                settings.edit_model,
            ),
        )

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Join or start the cluster and the Serve app (`ServeApp.open`), then begin dispatching."""
        if self._started:
            raise RuntimeError("already started")
        self._started = True
        self._loop = asyncio.get_running_loop()
        await self._serve.open()
        self._profile = self._serve.profile
        self.catalog = self._serve.catalog
        if self._serve.autoscale is not None:
            self._poller = self._loop.create_task(self._poll_replicas())
        self._schedule_dispatch()

    async def close(self) -> None:
        """Cancel waiting and running jobs, delete the deployment if this driver deployed it, leave a
        cluster we started."""
        if self._closed:
            return
        self._closed = True
        if self._poller is not None:
            self._poller.cancel()
        self._cancel_waiting()
        for batch in [*self._retry, *self._running]:
            for job in batch.jobs:
                self._settle(job, JobCancelled(SHUTDOWN_MESSAGE))
            self._stop(batch)
        self._retry.clear()
        tasks = [b.task for b in self._running if b.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._serve.close()

    # -- the GenerationBackend calls ----------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        """Tokens the model's tokenizer makes of `text` (a tokenizer fetched from a replica at start)."""
        if self._serve.counter is None:
            raise self._not_started()
        return self._serve.counter.count_tokens(text)

    def _on_cancel(self, job: Job) -> None:
        for batch in [*self._running, *self._retry]:
            if job in batch.jobs and all(j.done for j in batch.jobs):
                self._stop(batch)

    def queue_snapshot(self) -> list[tuple[str, str]]:
        """(job_id, owner) of running jobs first, then waiting ones in the order they will run."""
        running = [(j.job_id, j.owner) for b in self._running for j in b.jobs if not j.done]
        return running + [(j.job_id, j.owner) for j in self._waiting_order()]

    # -- introspection (tests, benchmarks) -----------------------------------------------------------

    def replica_of(self, job_id: str) -> str | None:
        """The Serve replica actor (namespace `serve`) that last ran or runs this job's batch."""
        return self._replica_of.get(job_id)

    @property
    def deployed_here(self) -> bool:
        """True if `start()` deployed the app; False if it joined one another driver deployed."""
        return self._serve.owns_app

    @property
    def running_batches(self) -> int:
        """Streaming calls in flight."""
        return len(self._running)

    # -- scheduling (loop thread) --------------------------------------------------------------------

    def _waiting_order(self) -> list[Job]:
        retry = [j for b in self._retry for j in b.jobs if not j.done]
        return retry + self._waiting.ordered()

    def _is_waiting(self, job: Job) -> bool:
        return job.job_id in self._waiting or any(job in b.jobs for b in self._retry)

    def _slots(self) -> int:
        slots = self._serve.capacity
        if self._serve.autoscale is not None and (self._retry or self._waiting):
            slots += 1  # one batch waiting at the handle tells Serve's autoscaler more are needed
        return slots

    def _dispatch(self) -> None:
        self._dispatch_scheduled = False
        if self._closed or self._serve.handle is None:
            return
        began = time.perf_counter()
        sent = False
        while len(self._running) < self._slots():
            batch = self._next_batch()
            if batch is None:
                break
            self._send(batch)
            sent = True
        if sent:
            self._publish_positions()
        self.stats.scheduler_s += time.perf_counter() - began

    def _next_batch(self) -> Batch | None:
        while self._retry:
            batch = self._retry.popleft()
            batch.jobs = [j for j in batch.jobs if not j.done]
            if batch.jobs:
                return batch
        jobs = self._waiting.pop_batch(
            key_of=lambda j: j.request.batch_key(), size_of=lambda j: j.request.count, cap_of=self._cap_of
        )
        return Batch(jobs) if jobs else None

    def _cap_of(self, job: Job) -> int:
        if self._max_batch is not None:
            return max(1, self._max_batch)
        # The replica's cap at the native size, scaled by area (the replica splits on OutOfMemory).
        native = self.profile.native_size
        area = job.request.width * job.request.height
        return max(1, int(self._serve.native_cap * native * native / area))

    def _send(self, batch: Batch) -> None:
        assert self._loop is not None
        batch.batch_id = f"b{next(self._ids)}"
        batch.stopped = False
        batch.replica = None
        self._running.append(batch)
        self.stats.batches += 1
        for job in batch.jobs:
            job.publish(Started())
        batch.task = self._loop.create_task(self._run(batch))

    async def _run(self, batch: Batch) -> None:
        try:
            call = await self._make_call(batch)
            if call is None:
                return
            # Named by its model, so Serve prefers a replica that already runs that model (affinity).
            model = call.requests[0].model
            batch.response = self._serve.handle.options(stream=True, multiplexed_model_id=model).run.remote(
                call
            )
            if batch.stopped:  # everyone cancelled while the sources were read
                batch.response.cancel()
                return
            async for message in batch.response:
                self._on_message(batch, message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not batch.stopped and not self._closed:
                self._requeue(batch, exc)
        finally:
            if batch.watchdog is not None:
                batch.watchdog.cancel()
            with contextlib.suppress(ValueError):
                self._running.remove(batch)
            if not self._closed:
                for job in batch.jobs:  # a stream that ended without BatchDone (should not happen)
                    if not job.done and not batch.requeued:
                        self._settle(job, JobFailed("generation failed: the worker returned no result"))
            self._schedule_dispatch()

    async def _make_call(self, batch: Batch) -> BatchCall | None:
        live, sources, missing, pictures = await read_sources(batch.jobs, self._images)
        for job, why in missing:
            self._settle(job, JobFailed(why))
        batch.jobs = live
        if not live:
            return None
        return BatchCall(
            batch_id=batch.batch_id,
            requests=tuple(j.request for j in live),
            sources=tuple(sources),
            pictures=pictures,
            timeout_s=self._timeout,
            preview_interval_s=self._preview_interval,
            progress_interval_s=self._progress_interval,
        )

    def _on_message(self, batch: Batch, message: object) -> None:
        began = time.perf_counter()
        if isinstance(message, StepDone):
            for index, png in message.previews.items():
                batch.jobs[index].publish(Progress(message.step, message.total, png))
        elif isinstance(message, ReplicaStarted):
            batch.replica = message.replica
            for job in batch.jobs:
                self._replica_of[job.job_id] = message.replica
            # The time limit runs from here, as the replica's own: waiting for a replica (one being
            # restarted, or scaled up) is queueing, not running.
            assert self._loop is not None
            batch.watchdog = self._loop.call_later(self._timeout + self._grace, self._on_watchdog, batch)
        elif isinstance(message, BatchDone):
            for job, outcome in zip(batch.jobs, message.outcomes, strict=True):
                self._settle(job, outcome_for(job.job_id, outcome))
        self.stats.scheduler_s += time.perf_counter() - began

    def _requeue(self, batch: Batch, exc: BaseException) -> None:
        live = [j for j in batch.jobs if not j.done]
        if not live:
            return
        batch.requeued = True
        if batch.attempt >= self._max_attempts:
            log.error("batch %s broke %d times (%r); failing it", batch.batch_id, batch.attempt, exc)
            for job in live:
                self._settle(job, JobFailed("generation failed: the GPU worker stopped"))
            return
        log.warning(
            "replica %s lost batch %s (%s); %d job(s) back to the front of the queue",
            batch.replica,
            batch.batch_id,
            type(exc).__name__,
            len(live),
        )
        self.stats.requeued += len(live)
        self._retry.append(Batch(live, attempt=batch.attempt + 1))
        self._publish_positions()

    def _stop(self, batch: Batch) -> None:
        batch.stopped = True
        if batch.response is not None:
            batch.response.cancel()

    def _on_watchdog(self, batch: Batch) -> None:
        if batch not in self._running:
            return
        log.error("batch %s on %s hung past the time limit", batch.batch_id, batch.replica)
        for job in batch.jobs:
            self._settle(job, JobFailed(timeout_message(self._timeout)))
        self._stop(batch)
        if batch.replica is not None and self._loop is not None:
            self._loop.create_task(asyncio.to_thread(kill_replica, batch.replica))

    async def _poll_replicas(self) -> None:
        """Autoscaling: keep the slot count at running replicas × max_ongoing."""
        while not self._closed:
            try:
                if await self._serve.refresh_capacity():
                    self._schedule_dispatch()
            except Exception:
                log.exception("reading Serve's status failed")
            await asyncio.sleep(1.0)  # a poll interval, not a wait for work

    def _settle(self, job: Job, outcome: GenerationResult | BaseException) -> bool:
        if not super()._settle(job, outcome):
            return False
        self.stats.jobs_settled += 1
        return True
