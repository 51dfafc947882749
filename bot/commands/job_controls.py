"""Job controls: `Cancel` on a progress message, 📋 and 🗑️ on a result, and `/show job:`.

`Cancel` works for the job's owner only; 🗑️ for the owner or a member with Manage Messages; 📋 for
anyone on the job's server. Every answer to a click is private. The job named by a custom id must
exist on this server (custom ids are untrusted)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

import discord
from discord import app_commands

from bot.commands.errors import UserError, require_post_permissions, send_private
from bot.delivery.discord_outbox import discord_files
from bot.services import Services
from bot.views.custom_ids import Action, ButtonRef, is_job_id
from bot.views.result_buttons import post_view
from generation.prompts.request import GenerationRequest
from jobs.messages import details_text
from storage.interface import JobRecord, JobState

log = logging.getLogger(__name__)


async def job_on_this_server(services: Services, job_id: str, guild_id: int | None) -> JobRecord:
    """The job if it exists on `guild_id`, else a UserError."""
    record = await services.store.get_job(job_id) if is_job_id(job_id) else None
    if record is None or guild_id is None or record.guild_id != guild_id:
        raise UserError("There's no job with that id on this server.")
    return record


async def cancel_active(services: Services, job: JobRecord) -> str:
    """Cancel a queued or running job (the caller has checked who may); the member's answer, or a
    UserError when it has ended or is already being delivered."""
    if job.state not in (JobState.QUEUED, JobState.RUNNING):
        raise UserError(f"Job `{job.job_id}` has already ended ({job.state.value}).")
    if not await services.runner.cancel(job.job_id):
        raise UserError(f"Job `{job.job_id}` is already finishing and can't be stopped now.")
    return f"Cancelling `{job.job_id}`; its spend is given back."


class JobControls:
    """The clicks on `Cancel`, 📋 and 🗑️ (`ResultActions` hands them over)."""

    def __init__(self, services: Services) -> None:
        self.services = services

    async def on_button(self, interaction: discord.Interaction[Any], ref: ButtonRef) -> None:
        """Answer one click, privately."""
        job = await job_on_this_server(self.services, ref.job_id, interaction.guild_id)
        if ref.action is Action.CANCEL:
            await send_private(interaction, await self._cancel(job, interaction.user.id))
        elif ref.action is Action.INFO:
            request = GenerationRequest.from_json(job.request_json)
            await send_private(interaction, details_text(job, request))
        elif ref.action is Action.DELETE:
            await self._delete(interaction, job)
        else:
            raise ValueError(f"not a job control: {ref.action}")

    async def _cancel(self, job: JobRecord, user_id: int) -> str:
        if job.owner_id != user_id:
            raise UserError("Only the member who started this job can cancel it.")
        return await cancel_active(self.services, job)

    async def _delete(self, interaction: discord.Interaction[Any], job: JobRecord) -> None:
        may_manage = interaction.permissions.manage_messages or interaction.permissions.administrator
        if job.owner_id != interaction.user.id and not may_manage:
            raise UserError("Only the member who made this picture, or a moderator, can delete it.")
        message = interaction.message
        me = interaction.client.user
        if message is None or me is None or message.author.id != me.id:
            raise UserError("I can only delete my own messages.")
        await interaction.response.defer(ephemeral=True, thinking=True)
        with contextlib.suppress(discord.NotFound):  # already gone: what was asked for
            await message.delete()
        log.info("result of job %s deleted by %s", job.job_id, interaction.user.id)
        await interaction.followup.send("Deleted.", ephemeral=True)


def _read_images(job: JobRecord) -> list[bytes]:
    try:
        return [Path(path).read_bytes() for path in job.image_paths]
    except OSError:
        raise UserError(
            f"The pictures of job `{job.job_id}` are no longer kept on the bot's disk, so I can't show it."
        ) from None


def job_control_commands(services: Services) -> list[app_commands.Command[Any, Any, None]]:
    """`/show job:`."""

    @app_commands.command(name="show", description="Post a finished job's result again, with its buttons")
    @app_commands.describe(job="The job id (📋 on a result shows it)")
    @app_commands.guild_only()
    async def show(interaction: discord.Interaction[Any], job: app_commands.Range[str, 1, 40]) -> None:
        record = await job_on_this_server(services, job.strip().strip("`"), interaction.guild_id)
        if record.state is not JobState.DONE or not record.image_paths:
            raise UserError(f"Job `{record.job_id}` has no finished result to show ({record.state.value}).")
        require_post_permissions(interaction)
        await interaction.response.defer(thinking=True)
        interaction.extras["public_defer"] = True
        outbox = services.runner.poster.outbox
        here_nsfw = await outbox.channel_is_nsfw(interaction.channel_id or 0)
        if not here_nsfw and await outbox.channel_is_nsfw(record.channel_id):
            # Flags are not stored: what was shown behind spoilers there may not be shown here.
            raise UserError("That result was made in an age-restricted channel; show it there.")
        pngs = await asyncio.to_thread(_read_images, record)
        request = GenerationRequest.from_json(record.request_json)
        post = await asyncio.to_thread(
            services.runner.poster.build_post,
            record,
            request,
            record.seeds or request.seeds,
            pngs,
            spoiler=here_nsfw,
            mention=False,
            upload_limit=interaction.filesize_limit,
        )
        await interaction.followup.send(post.content, files=discord_files(post.files), view=post_view(post))

    return [show]
