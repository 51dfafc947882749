"""`JobRunner`: a job's whole life, apart from Discord.

reserve (atomic, in the store) → submit to the backend → follow its events (queue position, then
step k of n with a preview; edits throttled) → save the PNGs → record them → deliver (retried with
backoff while Discord or the network fails) → record the delivery. A failure or cancel sets the
job's state, gives the spend back and tells the owner. Discord is behind the `Outbox` protocol
(`bot.delivery.discord_outbox.DiscordOutbox` implements it), so tests drive this with a fake one.

After a restart `resume()` delivers done-but-undelivered jobs and resubmits queued or running ones
under the same id, from the stored request: nothing is spent twice, nothing delivered twice
(`record_delivery` only after the post succeeded).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bot.delivery.throttle import EditThrottle
from bot.formatting import progress_text, queued_text, result_text
from generation.backends.protocol import (
    GeneratedImage,
    GenerationBackend,
    GenerationError,
    GenerationResult,
    JobCancelled,
    JobEvent,
    Progress,
    Queued,
    Started,
)
from generation.media.compose import fit_to_size, grid_2x2
from generation.prompts.request import GenerationRequest
from storage.interface import JobRecord, JobState, NewJob, Refusal, Reservation, Store

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

DEFAULT_UPLOAD_LIMIT = 8 * 1024 * 1024  # Discord's smallest per-file limit; interactions say the real one
TOKEN_LIFETIME_S = 15 * 60.0
TOKEN_MARGIN_S = 60.0
PROGRESS_EDIT_TIMEOUT_S = 5.0
DELIVERY_TIMEOUT_S = 60.0  # one upload attempt: a request Discord never answers is retried, not awaited


class JobClaims(Protocol):
    """The shared queue's side of a runner (`bot.dispatch.ClaimDispatcher`): with it, `submit` only
    reserves (the stored job is the queue) and jobs arrive through `follow`, under a lease."""

    def queued(self, job: JobRecord) -> None:
        """A job was reserved: wake the dispatchers."""
        ...

    def holds(self, job_id: str) -> bool:
        """True while this process still holds the job's lease."""
        ...

    async def complete(self, job: JobRecord, seeds: tuple[int, ...], image_paths: tuple[str, ...]) -> bool:
        """Record the images if the lease is still held (then this process alone delivers); else False."""
        ...

    async def resume(self) -> tuple[int, int]:
        """Start claiming; returns (undelivered, unfinished) jobs found at start."""
        ...

    async def close(self) -> None:
        """Stop claiming; give back the jobs still held."""
        ...


class ResultImages(Protocol):
    """What the runner needs of `generation.media.image_store.ImageStore`."""

    def save_result(self, job_id: str, index: int, png: bytes) -> Path: ...


@dataclass(frozen=True)
class OutFile:
    """An attachment to upload."""

    filename: str
    data: bytes


@dataclass(frozen=True)
class ResultPost:
    """A finished job's message: text, the image file(s), and buttons for `image_count` images."""

    job_id: str
    content: str
    files: tuple[OutFile, ...]
    image_count: int


class TransientDeliveryError(Exception):
    """Discord answered 429/5xx or the network failed: worth trying again later."""


class TokenGone(Exception):
    """The interaction token no longer works (expired or unknown): post to the channel instead."""


class Outbox(Protocol):
    """Where messages about a job go. `via_token` means: through the job's interaction (editing its
    original response, or an ephemeral followup); otherwise a channel message mentioning the owner."""

    async def show_progress(self, job: JobRecord, text: str, preview_png: bytes | None) -> None:
        """Edit the original response to show progress (only called while the token is valid)."""
        ...

    async def post_result(self, job: JobRecord, post: ResultPost, *, via_token: bool) -> tuple[int, int]:
        """Post the result; returns (message_id, channel_id). Raises TransientDeliveryError or TokenGone."""
        ...

    async def tell_owner(self, job: JobRecord, text: str, *, via_token: bool, private: bool) -> None:
        """Tell the owner something (failure, cancel, flagged images). `private` asks for an
        ephemeral message where there is an interaction (the original response is then removed)."""
        ...

    async def channel_is_nsfw(self, channel_id: int) -> bool:
        """True if the channel is age-restricted (unknown channels count as not)."""
        ...

    def upload_limit(self, guild_id: int) -> int:
        """Per-file upload limit of a guild when no interaction said it."""
        ...


def token_expiry(created_at: float) -> float:
    """When to stop using an interaction token made at `created_at` (15 min minus a margin)."""
    return created_at + TOKEN_LIFETIME_S - TOKEN_MARGIN_S


def backoff_delays(first: float = 1.0, cap: float = 60.0) -> Callable[[int], float]:
    """attempt → seconds to wait before it: first, 2·first, 4·first, … up to cap."""
    return lambda attempt: min(cap, first * (2 ** max(0, attempt - 1)))


class JobRunner:
    """Owns running jobs: their tasks, progress edits, saving, delivery, refunds."""

    def __init__(
        self,
        store: Store,
        backend: GenerationBackend,
        images: ResultImages,
        outbox: Outbox,
        *,
        clock: Clock = time.time,
        edit_interval_s: float = 1.5,
        sleep: Sleep = asyncio.sleep,
        retry_delay: Callable[[int], float] | None = None,
    ) -> None:
        self.store = store
        self.backend = backend
        self.images = images
        self.outbox = outbox
        self.clock = clock
        self._sleep = sleep
        self._retry_delay = retry_delay or backoff_delays()
        self._throttle = EditThrottle(edit_interval_s, clock)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._upload_limits: dict[str, int] = {}
        self._closing = False
        self.delivery_timeout_s = DELIVERY_TIMEOUT_S
        self.claims: JobClaims | None = None  # set by bot.dispatch.ClaimDispatcher on a shared queue

    # -- entry points -------------------------------------------------------------------------------

    async def submit(
        self,
        job: NewJob,
        request: GenerationRequest,
        role_ids: tuple[int, ...],
        *,
        upload_limit: int | None = None,
    ) -> Reservation | Refusal:
        """Reserve the spend and queue the job (both at once, in the store); run it if granted."""
        outcome = await self.store.reserve(job, role_ids, self.clock())
        if isinstance(outcome, Reservation):
            if upload_limit is not None:
                self._upload_limits[job.job_id] = upload_limit
            if self.claims is not None:
                self.claims.queued(outcome.job)
            else:
                self._spawn(outcome.job, request)
        return outcome

    async def resume(self) -> tuple[int, int]:
        """After a restart: deliver done-but-undelivered jobs, resubmit queued/running ones.
        Returns (delivered, resubmitted) counts of jobs started on. On a shared queue: start claiming."""
        if self.claims is not None:
            return await self.claims.resume()
        undelivered = await self.store.undelivered_jobs()
        for job in undelivered:
            self._track(job.job_id, self._deliver_saved(job))
        unfinished = await self.store.unfinished_jobs()
        resubmitted = 0
        for job in unfinished:
            if job.job_id in self._tasks:
                continue
            try:
                request = GenerationRequest.from_json(job.request_json)
            except (ValueError, TypeError, KeyError) as exc:
                log.error("job %s: stored request unreadable (%s); failing it", job.job_id, exc)
                self._track(
                    job.job_id, self._end(job, JobState.FAILED, "its stored settings were unreadable")
                )
                continue
            self._spawn(job, request)
            resubmitted += 1
        if undelivered or resubmitted:
            log.info("resumed: %d to deliver, %d to generate", len(undelivered), resubmitted)
        return len(undelivered), resubmitted

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

    async def close(self) -> None:
        """Stop following jobs; their stored state stays, so the next start resumes them."""
        self._closing = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.claims is not None:
            await self.claims.close()

    def follow(self, job: JobRecord) -> None:
        """Work on a job this process claimed from the shared queue: run it, or deliver its saved
        images if it is done already (a dead process's)."""
        if job.state is JobState.DONE:
            self._track(job.job_id, self._deliver_saved(job))
            return
        try:
            request = GenerationRequest.from_json(job.request_json)
        except (ValueError, TypeError, KeyError) as exc:
            log.error("job %s: stored request unreadable (%s); failing it", job.job_id, exc)
            self._track(job.job_id, self._end(job, JobState.FAILED, "its stored settings were unreadable"))
            return
        self._spawn(job, request)

    # -- a job's life -------------------------------------------------------------------------------

    def _spawn(self, job: JobRecord, request: GenerationRequest) -> None:
        self._track(job.job_id, self._run(job, request))

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
                self._upload_limits.pop(job_id, None)
                self._throttle.forget(job_id)

        self._tasks[job_id] = asyncio.get_running_loop().create_task(wrapper(), name=f"job-{job_id}")

    def _via_token(self, job: JobRecord) -> bool:
        return (
            job.interaction_token is not None
            and job.token_expires_at is not None
            and self.clock() < job.token_expires_at
        )

    async def _run(self, job: JobRecord, request: GenerationRequest) -> None:
        try:
            handle = self.backend.submit(job.job_id, f"{job.guild_id}:{job.owner_id}", request)
        except Exception as exc:
            log.exception("job %s: the backend refused it", job.job_id)
            await self._end(job, JobState.FAILED, f"it could not be queued ({type(exc).__name__})")
            return
        try:
            async for event in handle.events():
                await self._on_event(job, event)
            result = await handle.result()
        except JobCancelled as exc:
            if self._closing:
                return  # shutting down: the job stays queued/running in the store and resumes later
            await self._end(job, JobState.CANCELLED, str(exc) or "cancelled")
            return
        except GenerationError as exc:
            await self._end(job, JobState.FAILED, str(exc) or type(exc).__name__)
            return
        await self._finish(job, request, result)

    async def _on_event(self, job: JobRecord, event: JobEvent) -> None:
        if isinstance(event, Started):
            if self.claims is None:  # a claimed job is running (under its lease) already
                await self.store.set_job_state(job.job_id, JobState.RUNNING)
            return
        if not self._via_token(job) or not self._throttle.ready(job.job_id):
            return
        if isinstance(event, Queued):
            text, preview = queued_text(event.position), None
        elif isinstance(event, Progress):
            text, preview = progress_text(event.step, event.total), event.preview_png
        else:
            return
        try:
            await asyncio.wait_for(self.outbox.show_progress(job, text, preview), PROGRESS_EDIT_TIMEOUT_S)
        except Exception as exc:  # progress is best effort; the result is what must arrive
            log.debug("job %s: progress edit failed: %r", job.job_id, exc)

    async def _end(self, job: JobRecord, state: JobState, reason: str) -> None:
        """Failed or cancelled: store it, refund, tell the owner."""
        if self.claims is not None and not self.claims.holds(job.job_id):
            return  # the lease moved on (reclaimed, or cancelled elsewhere): not ours to end
        await self.store.set_job_state(job.job_id, state, reason)
        refunded = await self.store.refund(job.job_id, self.clock())
        were = "s were" if job.images != 1 else " was"
        back = f" Your {job.images} image{were} given back." if refunded else ""
        if state is JobState.CANCELLED:
            text = f"Your job `{job.job_id}` was cancelled ({reason}).{back}"
        else:
            text = f"Sorry, your job `{job.job_id}` failed: {reason}.{back}"
        log.info("job %s %s: %s", job.job_id, state.value, reason)
        await self._tell(job, text, private=False)

    async def _tell(self, job: JobRecord, text: str, *, private: bool) -> None:
        via = self._via_token(job)
        for attempt in (1, 2):
            try:
                await self.outbox.tell_owner(job, text, via_token=via, private=private)
                return
            except TokenGone:
                via = False
            except Exception as exc:
                log.warning("job %s: could not tell the owner (attempt %d): %r", job.job_id, attempt, exc)
                return

    async def _finish(self, job: JobRecord, request: GenerationRequest, result: GenerationResult) -> None:
        if self.claims is not None and not self.claims.holds(job.job_id):
            return
        nsfw_channel = any(i.nsfw for i in result.images) and await self.outbox.channel_is_nsfw(
            job.channel_id
        )
        kept: list[GeneratedImage] = [i for i in result.images if nsfw_channel or not i.nsfw]
        dropped = len(result.images) - len(kept)
        if not kept:
            await self.store.set_job_state(job.job_id, JobState.FAILED, "flagged by the safety checker")
            refunded = await self.store.refund(job.job_id, self.clock())
            back = " Your spend was given back." if refunded else ""
            await self._tell(
                job,
                "The safety checker flagged your picture(s), so they weren't posted in this channel"
                f" (it isn't age-restricted).{back}",
                private=True,
            )
            return
        try:
            paths = await asyncio.to_thread(self._save, job.job_id, kept)
        except Exception as exc:
            log.error("job %s: saving images failed: %r", job.job_id, exc)
            await self._end(job, JobState.FAILED, f"the images could not be saved ({type(exc).__name__})")
            return
        seeds = tuple(i.seed for i in kept)
        if self.claims is None:
            await self.store.record_images(job.job_id, seeds, tuple(str(p) for p in paths))
        elif not await self.claims.complete(job, seeds, tuple(str(p) for p in paths)):
            log.info("job %s: lease lost before it was recorded; another process delivers it", job.job_id)
            return
        if dropped:
            refunded = await self.store.refund_images(job.job_id, dropped, self.clock())
            back = f" {dropped} image{'s were' if dropped != 1 else ' was'} given back." if refunded else ""
            await self._tell(
                job,
                f"{dropped} of your {len(result.images)} pictures were flagged by the safety checker and "
                f"not posted (this channel isn't age-restricted).{back}",
                private=True,
            )
        await self._deliver(job, request, seeds, [i.png for i in kept], spoiler=any(i.nsfw for i in kept))

    def _save(self, job_id: str, images: list[GeneratedImage]) -> list[Path]:
        return [self.images.save_result(job_id, index, image.png) for index, image in enumerate(images)]

    async def _deliver_saved(self, job: JobRecord) -> None:
        """Deliver a job whose images are on disk (after a restart)."""
        try:
            request = GenerationRequest.from_json(job.request_json)
            pngs = [await asyncio.to_thread(Path(p).read_bytes) for p in job.image_paths]
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.error("job %s: saved result unreadable (%r); giving up on it", job.job_id, exc)
            await self.store.set_job_state(job.job_id, JobState.FAILED, "its saved images were lost")
            return
        if not pngs:
            return
        # Flags are not stored: in an age-restricted channel, hide everything behind spoilers.
        spoiler = await self.outbox.channel_is_nsfw(job.channel_id)
        await self._deliver(job, request, job.seeds or request.seeds, pngs, spoiler=spoiler)

    def build_post(
        self,
        job: JobRecord,
        request: GenerationRequest,
        seeds: tuple[int, ...],
        pngs: list[bytes],
        *,
        spoiler: bool,
        mention: bool,
    ) -> ResultPost:
        """The result message: one PNG (a grid when there are several images), fit to the upload limit."""
        limit = self._upload_limits.get(job.job_id) or self.outbox.upload_limit(job.guild_id)
        image = grid_2x2(pngs) if len(pngs) > 1 else pngs[0]
        data, ext = fit_to_size(image, limit)
        name = f"{'SPOILER_' if spoiler else ''}imagine_{job.job_id}.{ext}"
        note = " (re-encoded to fit the upload limit)" if ext != "png" else ""
        content = result_text(request, seeds, job.owner_id, mention=mention, note=note)
        return ResultPost(job.job_id, content, (OutFile(name, data),), len(pngs))

    async def _deliver(
        self,
        job: JobRecord,
        request: GenerationRequest,
        seeds: tuple[int, ...],
        pngs: list[bytes],
        *,
        spoiler: bool,
    ) -> None:
        attempt = 0
        via = self._via_token(job)
        while True:
            attempt += 1
            via = via and self._via_token(job)
            post = await asyncio.to_thread(
                self.build_post, job, request, seeds, pngs, spoiler=spoiler, mention=not via
            )
            try:
                message_id, channel_id = await asyncio.wait_for(
                    self.outbox.post_result(job, post, via_token=via), self.delivery_timeout_s
                )
            except TokenGone:
                via = False
                continue
            except (TransientDeliveryError, TimeoutError) as exc:
                delay = self._retry_delay(attempt)
                log.warning("job %s: delivery failed (%s); retrying in %.1f s", job.job_id, exc, delay)
                await self._sleep(delay)
                continue
            break
        await self.store.record_delivery(job.job_id, message_id, channel_id)
        log.info("job %s delivered as message %d", job.job_id, message_id)
