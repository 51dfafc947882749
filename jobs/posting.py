"""`ResultPoster`: the delivery half of a job's life, through the `jobs.delivery.Outbox`.

It builds the result message (one PNG, a grid when there are several, or an Animate clip's MP4, fit
to the upload limit),
delivers it (retried with backoff while Discord or the network fails; from the interaction token to
the channel once the token is gone), records the delivery, and tells the owner what else happened.
A post Discord refuses for good fails the job at once (failed jobs are never resumed or re-claimed),
refunds it and tells the owner privately: through the interaction while its token lives, else a DM.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from generation.families.features import Features
from generation.media.compose import fit_to_size, grid_2x2
from generation.media.video import VideoTooLarge, fit_mp4_bytes
from generation.prompts.request import GenerationRequest, Mode
from jobs import delivery
from jobs.log_fields import job_fields
from jobs.messages import refused_text, result_text
from jobs.metrics import JobMetrics
from storage.interface import JobRecord, JobState, Store

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
Seeds = tuple[int, ...]  # one per picture of a post

DELIVERY_TIMEOUT_S = 60.0  # one upload attempt: a request Discord never answers is retried, not awaited


def backoff_delays(first: float = 1.0, cap: float = 60.0) -> Callable[[int], float]:
    """attempt → seconds to wait before it: first, 2·first, 4·first, … up to cap."""
    return lambda attempt: min(cap, first * (2 ** max(0, attempt - 1)))


@dataclass(eq=False)
class ResultPoster:
    """Posts a job's result and its owner's messages; settles what will never be posted."""

    store: Store
    outbox: delivery.Outbox
    metrics: JobMetrics
    clock: Callable[[], float]
    sleep: Sleep
    retry_delay: Callable[[int], float] = field(default_factory=backoff_delays)
    delivery_timeout_s: float = DELIVERY_TIMEOUT_S
    upload_limits: dict[str, int] = field(default_factory=dict)  # job id → the interaction's, while it runs
    features_of: Callable[[str], Features] = field(default=lambda _model: Features())  # a model's (buttons)
    second_models: frozenset[delivery.SecondModel] = frozenset()  # set: one-image results carry their buttons

    def via_token(self, job: JobRecord) -> bool:
        """True while the job's interaction token may still be used."""
        return (
            job.interaction_token is not None
            and job.token_expires_at is not None
            and self.clock() < job.token_expires_at
        )

    async def settle_unposted(self, job: JobRecord, state: JobState, reason: str, *, outcome: str) -> bool:
        """Store a job that will not be posted as `state` (failed or cancelled), give its spend back
        and count it as `outcome`; True if anything was given back."""
        await self.store.set_job_state(job.job_id, state, reason)
        refunded = await self.store.refund(job.job_id, self.clock())
        self.metrics.job_settled(outcome)
        if refunded:
            self.metrics.refunded(job.images)
        return refunded

    async def tell(self, job: JobRecord, text: str, *, private: bool) -> None:
        """Tell the owner (through the interaction while its token works, else in the channel)."""
        via = self.via_token(job)
        for attempt in (1, 2):
            try:
                await self.outbox.tell_owner(job, text, via_token=via, private=private)
                return
            except delivery.TokenGone:
                via = False
            except Exception as exc:
                log.warning(
                    "job %s: could not tell the owner (attempt %d): %r",
                    job.job_id,
                    attempt,
                    exc,
                    extra=job_fields(job),
                )
                return

    def build_post(
        self,
        job: JobRecord,
        request: GenerationRequest,
        seeds: Seeds,
        pngs: list[bytes],
        *,
        spoiler: bool,
        mention: bool,
        upload_limit: int | None = None,
    ) -> delivery.ResultPost:
        """The result message: one PNG (a grid when there are several images), fit to the upload limit:
        `upload_limit` when given (a repost); else, through the interaction, its `attachment_size_limit`
        (which counts the member's Nitro); a channel post (mention=True: the token is gone) gets the
        guild's own, from its boost tier."""
        guild_limit = self.outbox.upload_limit(job.guild_id)
        limit = upload_limit or (
            guild_limit if mention else self.upload_limits.get(job.job_id) or guild_limit
        )
        video = request.mode is Mode.ANIMATE
        if video:  # a clip: lower its bitrate, then its size, to fit (never a 413)
            try:
                data, ext = fit_mp4_bytes(pngs[0], limit), "mp4"
            except VideoTooLarge as exc:
                raise delivery.PermanentDeliveryError(f"the clip can't fit the upload limit ({exc})") from exc
            refit = data is not pngs[0]
        else:
            image = grid_2x2(pngs) if len(pngs) > 1 else pngs[0]
            data, ext = fit_to_size(image, limit)
            refit = ext != "png"
        name = f"{'SPOILER_' if spoiler else ''}imagine_{job.job_id}.{ext}"
        note = " (re-encoded to fit the upload limit)" if refit else ""
        content = result_text(request, seeds, job.owner_id, mention=mention, note=note)
        files = (delivery.OutFile(name, data),)
        return delivery.ResultPost(
            job.job_id,
            content,
            files,
            len(pngs),
            self.features_of(request.model),
            second_models=self.second_models if not video and len(pngs) == 1 else frozenset(),
            video=video,
        )

    async def deliver_saved(self, job: JobRecord) -> None:
        """Deliver a job whose images are on disk (after a restart)."""
        try:
            request = GenerationRequest.from_json(job.request_json)
            pngs = [await asyncio.to_thread(Path(p).read_bytes) for p in job.image_paths]
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.error(
                "job %s: saved result unreadable (%r); giving up on it",
                job.job_id,
                exc,
                extra=job_fields(job),
            )
            await self.store.set_job_state(job.job_id, JobState.FAILED, "its saved images were lost")
            return
        if not pngs:
            return
        # Flags are not stored: in an age-restricted channel, hide everything behind spoilers.
        spoiler = await self.outbox.channel_is_nsfw(job.channel_id)
        await self.deliver(job, request, job.seeds or request.seeds, pngs, spoiler=spoiler)

    async def deliver(
        self, job: JobRecord, request: GenerationRequest, seeds: Seeds, pngs: list[bytes], *, spoiler: bool
    ) -> None:
        """Post the result until Discord takes it (or refuses it for good), then record the delivery."""
        attempt = 0
        via = self.via_token(job)
        while True:
            attempt += 1
            via = via and self.via_token(job)
            try:
                post = await asyncio.to_thread(
                    self.build_post, job, request, seeds, pngs, spoiler=spoiler, mention=not via
                )
            except delivery.PermanentDeliveryError as exc:  # a clip no size of it fits
                await self._refused_for_good(job, str(exc))
                return
            try:
                message_id, channel_id = await asyncio.wait_for(
                    self.outbox.post_result(job, post, via_token=via), self.delivery_timeout_s
                )
            except delivery.TokenGone:
                via = False
                continue
            except delivery.PermanentDeliveryError as exc:
                await self._refused_for_good(job, str(exc))
                return
            except (delivery.TransientDeliveryError, TimeoutError) as exc:
                delay = self.retry_delay(attempt)
                self.metrics.delivery_retry()
                log.warning(
                    "job %s: delivery failed (%s); retrying in %.1f s",
                    job.job_id,
                    exc,
                    delay,
                    extra=job_fields(job),
                )
                await self.sleep(delay)
                continue
            break
        await self.store.record_delivery(job.job_id, message_id, channel_id)
        self.metrics.job_settled("delivered")
        log.info("job %s delivered as message %d", job.job_id, message_id, extra=job_fields(job))

    async def _refused_for_good(self, job: JobRecord, reason: str) -> None:
        """Discord will never take this post: fail the job (so it is never resumed or re-claimed),
        refund it, tell the owner privately (interaction while its token lives, else a DM, else log)."""
        log.warning(
            "job %s: Discord refused its delivery for good: %s", job.job_id, reason, extra=job_fields(job)
        )
        refunded = await self.settle_unposted(
            job, JobState.FAILED, f"delivery refused: {reason}", outcome=JobState.FAILED.value
        )
        text = refused_text(job.job_id, reason, job.images, refunded)
        if self.via_token(job):
            try:
                await self.outbox.tell_owner(job, text, via_token=True, private=True)
                return
            except Exception as exc:
                log.info("job %s: could not tell the owner through the interaction: %r", job.job_id, exc)
        try:  # a direct message
            if not await self.outbox.direct_message(job, text):
                log.warning("job %s: owner %d not told (direct messages closed)", job.job_id, job.owner_id)
        except Exception as exc:
            log.warning("job %s: could not tell the owner by direct message: %r", job.job_id, exc)
