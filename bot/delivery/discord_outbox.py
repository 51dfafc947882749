"""`DiscordOutbox`: the runner's `Outbox` over discord.py. Edits the original response through the
stored interaction token (works after a restart too), else posts to the channel mentioning the owner.
Discord's 429/5xx and network failures become `TransientDeliveryError` (the runner retries); the
answers Discord gives for good (`PERMANENT_CODES`) become `PermanentDeliveryError` (the job fails)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from typing import Any, cast

import aiohttp
import discord

from bot.views.result_buttons import post_view, progress_view
from jobs.delivery import (
    DEFAULT_UPLOAD_LIMIT,
    OutFile,
    PermanentDeliveryError,
    ResultPost,
    TokenGone,
    TransientDeliveryError,
)
from storage.interface import JobRecord

log = logging.getLogger(__name__)

# discord.py formats the message id into the URL; "@original" addresses the interaction's response.
ORIGINAL = cast(int, "@original")


def discord_files(files: tuple[OutFile, ...]) -> list[discord.File]:
    """Attachments as discord.py uploads."""
    return [discord.File(io.BytesIO(f.data), filename=f.filename) for f in files]


TOKEN_GONE_CODES = (10015, 50027)  # Unknown Webhook, Invalid Webhook Token
CANNOT_DM = 50007
PERMANENT_CODES = {
    50013: "I'm missing a permission I need in that channel",  # Missing Permissions
    50001: "I can't see that channel any more",  # Missing Access
    10003: "that channel no longer exists",  # Unknown Channel
    50083: "that thread is archived",  # Operation on an archived thread
    160005: "that thread is locked",  # Thread locked
    40005: "the picture is larger than that channel accepts",  # Request entity too large
    10008: "the message I was to update was deleted",  # Unknown Message (on an edit)
    CANNOT_DM: "I can't send you direct messages",
}


def permanent_reason(exc: BaseException) -> str | None:
    """Why Discord refused a post for good (in words for the owner), or None if it may work later."""
    if not isinstance(exc, discord.HTTPException):
        return None
    if exc.status == 413:
        return PERMANENT_CODES[40005]
    return PERMANENT_CODES.get(exc.code) if exc.status in (400, 403, 404) else None


def result_nonce(job_id: str) -> str:
    """The nonce of a job's result message in a channel. discord.py sends it with `enforce_nonce`, so
    Discord answers a second post with the same nonce (a retry after a timeout, or after a restart
    that lost the record of the first) with the first message instead of posting again."""
    return f"imagine-{job_id}"[:25]  # Discord's limit on a nonce's length


def is_token_gone(exc: BaseException) -> bool:
    """The interaction token no longer works: 401 Invalid Webhook Token (expired), 404 Unknown
    Webhook, or 404 for a deleted original response."""
    if not isinstance(exc, discord.HTTPException):
        return False
    return exc.status in (401, 404) or exc.code in TOKEN_GONE_CODES


def is_transient(exc: BaseException) -> bool:
    """429, 5xx, timeouts and connection failures: worth retrying."""
    if isinstance(exc, discord.HTTPException):
        return exc.status == 429 or exc.status >= 500
    return isinstance(exc, discord.RateLimited | aiohttp.ClientError | asyncio.TimeoutError | ConnectionError)


class DiscordOutbox:
    """Sends a job's messages with a discord.py client."""

    def __init__(self, client: discord.Client) -> None:
        self.client = client

    def _webhook(self, job: JobRecord) -> discord.Webhook:
        if job.interaction_token is None or self.client.application_id is None:
            raise TokenGone("no interaction token")
        hook = discord.Webhook.partial(self.client.application_id, job.interaction_token, client=self.client)
        hook.type = discord.WebhookType.application  # an interaction webhook: ephemeral followups work
        return hook

    def _channel(self, job: JobRecord) -> discord.PartialMessageable:
        return self.client.get_partial_messageable(job.channel_id, guild_id=job.guild_id)

    def _mentions(self, job: JobRecord) -> discord.AllowedMentions:
        return discord.AllowedMentions(everyone=False, roles=False, users=[discord.Object(job.owner_id)])

    async def show_progress(self, job: JobRecord, text: str, preview_png: bytes | None) -> None:
        files = discord_files((OutFile("preview.png", preview_png),)) if preview_png else []
        view = progress_view(job.job_id)
        await self._webhook(job).edit_message(ORIGINAL, content=text, attachments=files, view=view)

    async def post_result(self, job: JobRecord, post: ResultPost, *, via_token: bool) -> tuple[int, int]:
        view = post_view(post)
        try:
            if via_token:
                message: discord.Message | discord.WebhookMessage = await self._webhook(job).edit_message(
                    ORIGINAL,
                    content=post.content,
                    attachments=discord_files(post.files),
                    view=view,
                    allowed_mentions=self._mentions(job),
                )
            else:
                message = await self._channel(job).send(
                    post.content,
                    files=discord_files(post.files),
                    view=view,
                    allowed_mentions=self._mentions(job),
                    nonce=result_nonce(job.job_id),  # a retry of a post that did land returns it
                )
        except Exception as exc:
            reason = permanent_reason(exc)
            if reason is not None:
                raise PermanentDeliveryError(reason) from exc
            if via_token and is_token_gone(exc):
                raise TokenGone(str(exc)) from exc
            if is_transient(exc):
                raise TransientDeliveryError(f"{type(exc).__name__}: {exc}") from exc
            raise
        return message.id, message.channel.id

    async def tell_owner(self, job: JobRecord, text: str, *, via_token: bool, private: bool) -> None:
        if not via_token:
            await self._channel(job).send(f"<@{job.owner_id}> {text}", allowed_mentions=self._mentions(job))
            return
        hook = self._webhook(job)
        try:
            if private:
                # Edit before deleting: a followup right after a "thinking" defer would fill it. Both
                # are best effort (the original may be gone, or in a thread Discord refuses edits in).
                with contextlib.suppress(discord.HTTPException):
                    await hook.edit_message(ORIGINAL, content="…", attachments=[], view=None)
                with contextlib.suppress(discord.HTTPException):
                    await hook.delete_message(ORIGINAL)
                await hook.send(text, ephemeral=True, wait=True)
            else:
                await hook.edit_message(ORIGINAL, content=text, attachments=[], view=None)
        except discord.HTTPException as exc:
            if is_token_gone(exc):
                raise TokenGone(str(exc)) from exc
            raise

    async def direct_message(self, job: JobRecord, text: str) -> bool:
        try:
            channel = await self.client.create_dm(discord.Object(job.owner_id))
            await channel.send(text)
        except discord.Forbidden as exc:
            if exc.code != CANNOT_DM:
                raise
            log.info("job %s: owner %d has closed direct messages", job.job_id, job.owner_id)
            return False
        return True

    async def channel_is_nsfw(self, channel_id: int) -> bool:
        channel: Any = self.client.get_channel(channel_id)
        is_nsfw = getattr(channel, "is_nsfw", None)
        return bool(is_nsfw()) if callable(is_nsfw) else False

    def upload_limit(self, guild_id: int) -> int:
        guild = self.client.get_guild(guild_id)
        return guild.filesize_limit if guild is not None else DEFAULT_UPLOAD_LIMIT
