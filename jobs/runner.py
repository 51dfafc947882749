"""`JobRunner`: a job's whole life, apart from Discord.

reserve (atomic, in the store) → hand it to the job source (`jobs.sources`), which gives it back to run
→ submit to the backend → follow its events (queue position, then step k of n with a preview; edits
throttled) → save the PNGs → record them (through the source) → deliver (retried with backoff while
Discord or the network fails) → record the delivery. A failure or cancel sets the job's state, gives
the spend back and tells the owner; so does a post Discord refuses for good, at once and privately.
Discord is behind the `jobs.delivery.Outbox` protocol (`bot.delivery.discord_outbox.DiscordOutbox`
implements it), so tests drive this with a fake one.

After a restart `resume()` starts the source, which hands back done-but-undelivered jobs (delivered
from their saved images) and queued or running ones (resubmitted under the same id, from the stored
request): nothing is spent twice, nothing delivered twice (`record_delivery` only after the post).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from generation.backends.protocol import (
    GeneratedImage,
    GenerationBackend,
    GenerationError,
    GenerationResult,
    JobCancelled,
    JobEvent,
    JobFailed,
    Progress,
    Queued,
    Started,
)
from generation.families.features import Features
from generation.prompts.request import GenerationRequest
from jobs.delivery import Outbox, ResultImages, SecondModel
from jobs.log_fields import job_fields
from jobs.messages import given_back_text, progress_text, queued_text
from jobs.metrics import JobMetrics, NoMetrics
from jobs.posting import ResultPoster, Sleep, backoff_delays
from jobs.sources import InProcessSource, JobSource
from jobs.throttle import EditThrottle
from storage.interface import JobRecord, JobState, NewJob, Refusal, Reservation, Store

log = logging.getLogger(__name__)

PROGRESS_EDIT_TIMEOUT_S = 5.0

UNREADABLE_SETTINGS = "its stored settings were unreadable"
FLAGGED = "flagged by the safety checker"
UNSCREENED = "not screened: a safety check is required and none could be loaded"


class ShuttingDown(Exception):
    """The bot is stopping: it takes no new jobs (`str()` is the member's message)."""


class JobRunner:
    """Owns running jobs: their tasks, progress edits, saving, delivery, refunds. Its jobs come from
    `source` (default: `InProcessSource`, this process's own queue); it never asks which source."""

    def __init__(
        self,
        store: Store,
        backend: GenerationBackend,
        images: ResultImages,
        outbox: Outbox,
        *,
        source: JobSource | None = None,
        clock: Callable[[], float] = time.time,
        edit_interval_s: float = 1.5,
        sleep: Sleep = asyncio.sleep,
        retry_delay: Callable[[int], float] | None = None,
        metrics: JobMetrics | None = None,
        second_models: frozenset[SecondModel] = frozenset(),
    ) -> None:
        """`second_models`: those set (VIDEO_MODEL, EDIT_MODEL): one-image results carry their buttons."""
        self.store = store
        self.backend = backend
        self.images = images
        self.clock = clock
        self.source: JobSource = source or InProcessSource(store)
        self.source.attach(self)
        self._throttle = EditThrottle(edit_interval_s, clock)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._closing = False
        self._started: dict[str, float] = {}  # jobs whose batch is on the engine: since (monotonic)
        self.metrics: JobMetrics = metrics or NoMetrics()
        self.poster = ResultPoster(
            store,
            outbox,
            self.metrics,
            clock,
            sleep,
            retry_delay or backoff_delays(),
            features_of=self.features_of,
            second_models=second_models,
        )

    def features_of(self, model: str) -> Features:
        """What model `model` can do: its family's features (a model the backend doesn't run, such as
        one taken out of MODELS since: an SD model's, so its buttons stay and a click says why)."""
        entry = self.backend.catalog.get(model)
        return entry.profile.features if entry is not None else Features()

    # -- entry points -------------------------------------------------------------------------------

    async def submit(
        self,
        job: NewJob,
        request: GenerationRequest,
        role_ids: tuple[int, ...],
        *,
        upload_limit: int | None = None,
    ) -> Reservation | Refusal:
        """Reserve the spend and queue the job (both at once, in the store); hand it to the source."""
        if self._closing:
            raise ShuttingDown(
                "The bot is restarting and takes no new jobs right now; try again in a minute."
            )
        outcome = await self.store.reserve(job, role_ids, self.clock())
        if isinstance(outcome, Reservation):
            if upload_limit is not None:
                self.poster.upload_limits[job.job_id] = upload_limit
            self.source.queued(outcome.job)
        return outcome

    async def resume(self) -> tuple[int, int]:
        """After a restart: start the source. Returns the (to deliver, to generate) jobs it took up."""
        undelivered, unfinished = await self.source.start()
        if undelivered or unfinished:
            log.info("resumed: %d to deliver, %d to generate", undelivered, unfinished)
        return undelivered, unfinished

    async def cancel(self, job_id: str) -> bool:
        """Stop a queued or running job (refund and the owner's message follow from its task)."""
        if job_id in self._tasks and self.backend.cancel(job_id):
            return True
        job = await self.store.get_job(job_id)
        if job is None or job.state not in (JobState.QUEUED, JobState.RUNNING):
            return False
        if job_id in self._tasks:
            return False  # being saved or delivered: too late to cancel
        await self.store.set_job_state(job_id, JobState.CANCELLED, "cancelled")
        await self.store.refund(job_id, self.clock())
        return True

    def is_active(self, job_id: str) -> bool:
        """True while this process works on the job."""
        return job_id in self._tasks

    async def wait(self, job_id: str) -> None:
        """Wait until this process is done with a job (tests, shutdown)."""
        task = self._tasks.get(job_id)
        if task is not None:
            await asyncio.shield(task)

    async def drain(self, grace_s: float) -> None:
        """Stop taking jobs; give the running batch `grace_s` seconds to finish (saved and delivered);
        leave waiting jobs queued in the store, for the next start."""
        self._closing = True
        for job_id in [j for j in self._tasks if j not in self._started]:
            self.backend.cancel(job_id)  # its task returns at once, the job stays queued in the store
        running = [task for job_id, task in self._tasks.items() if job_id in self._started]
        if running:
            log.info("waiting up to %.0f s for %d running job(s)", grace_s, len(running))
            _, late = await asyncio.wait(running, timeout=grace_s)
            if late:
                log.warning("%d job(s) did not finish in time; they run again at the next start", len(late))

    async def close(self) -> None:
        """Stop following jobs; their stored state stays, so the next start resumes them."""
        self._closing = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.source.close()

    # -- what the source calls (jobs.sources.Worker) --------------------------------------------------

    def work_on(self, job: JobRecord) -> None:
        """Run a job the source handed over, or deliver its saved images if it is done already."""
        if self._closing:
            return  # stopping: it stays in the store for the next start
        if job.state is JobState.DONE:
            self._track(job.job_id, self.poster.deliver_saved(job))
            return
        try:
            request = GenerationRequest.from_json(job.request_json)
        except (ValueError, TypeError, KeyError) as exc:
            log.error(
                "job %s: stored request unreadable (%s); failing it", job.job_id, exc, extra=job_fields(job)
            )
            self._track(job.job_id, self._end(job, JobFailed(UNREADABLE_SETTINGS)))
            return
        self._track(job.job_id, self._run(job, request))

    def stop(self, job_id: str) -> None:
        """Stop generating a job whose lease moved on; its ending is no longer this process's."""
        self.backend.cancel(job_id)

    # -- a job's life -------------------------------------------------------------------------------

    def _track(self, job_id: str, work: Awaitable[None]) -> None:
        async def wrapper() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("job %s: unexpected error", job_id)
            finally:
                self._tasks.pop(job_id, None)
                self._started.pop(job_id, None)
                self.poster.upload_limits.pop(job_id, None)
                self._throttle.forget(job_id)

        self._tasks[job_id] = asyncio.get_running_loop().create_task(wrapper(), name=f"job-{job_id}")

    async def _run(self, job: JobRecord, request: GenerationRequest) -> None:
        try:
            handle = self.backend.submit(job.job_id, f"{job.guild_id}:{job.owner_id}", request)
        except Exception as exc:
            log.exception("job %s: the backend refused it", job.job_id, extra=job_fields(job))
            await self._end(job, JobFailed(f"it could not be queued ({type(exc).__name__})"))
            return
        try:
            async for event in handle.events():
                await self._on_event(job, event)
            result = await handle.result()
            began = self._started.get(job.job_id)
            if began is not None:
                self.metrics.generated(time.monotonic() - began, request.steps, len(result.images))
        except JobCancelled as exc:
            if self._closing:
                return  # shutting down: the job stays queued/running in the store and resumes later
            await self._end(job, exc)
            return
        except GenerationError as exc:
            failed = exc if isinstance(exc, JobFailed) else JobFailed(str(exc) or type(exc).__name__)
            await self._end(job, failed)
            return
        await self._finish(job, request, result)

    async def _on_event(self, job: JobRecord, event: JobEvent) -> None:
        if isinstance(event, Started):
            self._started[job.job_id] = time.monotonic()
            await self.source.mark_running(job.job_id)
            return
        if not self.poster.via_token(job) or not self._throttle.ready(job.job_id):
            return
        if isinstance(event, Queued):
            text, preview = queued_text(event.position), None
        elif isinstance(event, Progress):
            text, preview = progress_text(event.step, event.total), event.preview_png
        else:
            return
        try:
            await asyncio.wait_for(
                self.poster.outbox.show_progress(job, text, preview), PROGRESS_EDIT_TIMEOUT_S
            )
        except Exception as exc:  # progress is best effort; the result is what must arrive
            log.debug("job %s: progress edit failed: %r", job.job_id, exc, extra=job_fields(job))

    async def _end(self, job: JobRecord, outcome: JobFailed | JobCancelled) -> None:
        """Failed or cancelled: store it, refund, tell the owner."""
        if not self.source.holds(job.job_id):
            return  # the lease moved on (reclaimed, or cancelled elsewhere): not ours to end
        cancelled = isinstance(outcome, JobCancelled)
        reason = str(outcome) or ("cancelled" if cancelled else type(outcome).__name__)
        state = JobState.CANCELLED if cancelled else JobState.FAILED
        refunded = await self.poster.settle_unposted(job, state, reason, outcome=state.value)
        back = given_back_text(job.images, refunded)
        if cancelled:
            text = f"Your job `{job.job_id}` was cancelled ({reason}).{back}"
        else:
            text = f"Sorry, your job `{job.job_id}` failed: {reason}.{back}"
        log.info("job %s %s: %s", job.job_id, state.value, reason, extra=job_fields(job))
        await self.poster.tell(job, text, private=False)

    async def _finish(self, job: JobRecord, request: GenerationRequest, result: GenerationResult) -> None:
        if not self.source.holds(job.job_id):
            return
        nsfw_channel = any(i.nsfw for i in result.images) and await self.poster.outbox.channel_is_nsfw(
            job.channel_id
        )
        kept: list[GeneratedImage] = [i for i in result.images if nsfw_channel or not i.nsfw]
        dropped = len(result.images) - len(kept)
        screened = self.backend.profile.has_safety_checker  # else `require` found no checker
        if not kept:
            reason = FLAGGED if screened else UNSCREENED
            refunded = await self.poster.settle_unposted(job, JobState.FAILED, reason, outcome="flagged")
            back = " Your spend was given back." if refunded else ""
            await self.poster.tell(
                job,
                (
                    "The safety checker flagged your picture(s)"
                    if screened
                    else "Your picture(s) couldn't be screened (the bot requires a safety check and has none)"
                )
                + f", so they weren't posted in this channel (it isn't age-restricted).{back}",
                private=True,
            )
            return
        try:
            paths = await asyncio.to_thread(self._save, job.job_id, kept)
        except Exception as exc:
            log.error("job %s: saving images failed: %r", job.job_id, exc, extra=job_fields(job))
            await self._end(job, JobFailed(f"the images could not be saved ({type(exc).__name__})"))
            return
        seeds = tuple(i.seed for i in kept)
        if not await self.source.record_images(job, seeds, tuple(str(p) for p in paths)):
            log.info(
                "job %s: lease lost before it was recorded; another process delivers it",
                job.job_id,
                extra=job_fields(job),
            )
            return
        if dropped:
            refunded = await self.store.refund_images(job.job_id, dropped, self.clock())
            if refunded:
                self.metrics.refunded(dropped)
            back = f" {dropped} image{'s were' if dropped != 1 else ' was'} given back." if refunded else ""
            await self.poster.tell(
                job,
                f"{dropped} of your {len(result.images)} pictures were "
                f"{'flagged by the safety checker' if screened else 'not screened (no safety checker)'} and "
                f"not posted (this channel isn't age-restricted).{back}",
                private=True,
            )
        await self.poster.deliver(
            job, request, seeds, [i.png for i in kept], spoiler=any(i.nsfw for i in kept)
        )

    def _save(self, job_id: str, images: list[GeneratedImage]) -> list[Path]:
        return [
            self.images.save_result(job_id, index, image.png, image.media)
            for index, image in enumerate(images)
        ]
