"""Member commands: `/usage`, `/queue`, `/cancel [job]`, `/help`, `/loras`, `/models`. All answered
ephemerally (`/queue`, `/loras` and `/models` paged, `bot.views.pager`)."""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands

from bot.commands.errors import UserError, has_manage_guild, member_role_ids, report_error
from bot.commands.job_controls import cancel_active, job_on_this_server
from bot.commands.settings import prompt_context
from bot.formatting import HELP_TEXT, model_text, pages, usage_text
from bot.services import Services
from bot.views.pager import Listing, PagedList
from storage.interface import JobState


async def _defer(interaction: discord.Interaction[Any]) -> int:
    if interaction.guild_id is None:
        raise UserError("This command only works in a server.")
    await interaction.response.defer(ephemeral=True, thinking=True)
    return interaction.guild_id


async def _read_queue(services: Services, interaction: discord.Interaction[Any]) -> Listing:
    """The whole queue's size, and where the member's own jobs are in it."""
    guild_id = interaction.guild_id
    if guild_id is None:
        raise UserError("This command only works in a server.")
    snapshot = services.backend.queue_snapshot()
    mine_key = f"{guild_id}:{interaction.user.id}"
    ours = sum(1 for _, owner in snapshot if owner.startswith(f"{guild_id}:"))
    head = [f"**{len(snapshot)}** job(s) running or waiting ({ours} from this server)."]
    positions = [(pos, job_id) for pos, (job_id, owner) in enumerate(snapshot, 1) if owner == mine_key]
    jobs = {j.job_id: j for j in await services.store.queued_jobs(guild_id)}
    mine: list[str] = []
    for pos, job_id in positions:
        state = jobs[job_id].state if job_id in jobs else JobState.QUEUED
        where = "running" if state is JobState.RUNNING or pos == 1 else f"position {pos}"
        mine.append(f"• `{job_id}`: {where}")
    return Listing(head, mine, [] if positions else ["You have nothing waiting."])


async def _read_loras(services: Services, interaction: discord.Interaction[Any]) -> Listing:
    """The LoRA styles in LORA_DIR."""
    names = services.loras.names()
    if not names:
        return Listing(["No LoRA styles are installed on this bot (its admin puts them in `LORA_DIR`)."])
    head = "Add one to a prompt as `<lora:name:0.8>` (weight -2 to 2, default 1):"
    return Listing([head], [f"• `{name}`" for name in names])


async def _read_models(services: Services, interaction: discord.Interaction[Any]) -> Listing:
    """The models this server offers, each with what its family takes."""
    guild_id = interaction.guild_id
    if guild_id is None:
        raise UserError("This command only works in a server.")
    context = await prompt_context(services.store, guild_id, interaction.user.id, services.settings.model_set)
    offer, profiles = context.models, services.profiles()
    items = [model_text(name, profiles.get(name), default=name == offer.default) for name in offer.offered]
    head = "Pick one with `--model NAME` (✓ works, – is refused on that model):"
    return Listing([head], items, sep="\n\n")


QUEUE = PagedList("queue", _read_queue, report_error)
MODELS = PagedList("models", _read_models, report_error)
LORAS = PagedList("loras", _read_loras, report_error)


def member_commands(services: Services) -> list[app_commands.Command[Any, Any, None]]:
    """Commands every member may use."""

    @app_commands.command(name="usage", description="What you've used, what's left, when it refills")
    @app_commands.guild_only()
    async def usage(interaction: discord.Interaction[Any]) -> None:
        guild_id = await _defer(interaction)
        now = services.clock()
        usage = await services.store.usage(
            guild_id, interaction.user.id, member_role_ids(interaction.user), now
        )
        await interaction.followup.send(usage_text(usage, now), ephemeral=True)

    @app_commands.command(name="queue", description="What's waiting, and where your jobs are")
    @app_commands.guild_only()
    async def queue(interaction: discord.Interaction[Any]) -> None:
        await _defer(interaction)
        await QUEUE.send(services, interaction)

    @app_commands.command(name="cancel", description="Stop your job (your latest, or the one you name)")
    @app_commands.describe(job="The job id (from /queue); leave empty for your latest")
    @app_commands.guild_only()
    async def cancel(interaction: discord.Interaction[Any], job: str | None = None) -> None:
        guild_id = await _defer(interaction)
        user_id = interaction.user.id
        if job is not None:
            record = await job_on_this_server(services, job.strip().strip("`"), guild_id)
            if record.owner_id != user_id and not has_manage_guild(interaction):
                raise UserError("That job isn't yours, so you can't cancel it.")
        else:
            mine = [j for j in await services.store.queued_jobs(guild_id) if j.owner_id == user_id]
            if not mine:
                raise UserError("You have no job waiting or running.")
            record = mine[-1]
        await interaction.followup.send(await cancel_active(services, record), ephemeral=True)

    @app_commands.command(name="help", description="How to use the bot")
    @app_commands.guild_only()
    async def help(interaction: discord.Interaction[Any]) -> None:
        first, *rest = pages([], HELP_TEXT.splitlines())  # one private message per 2,000 characters
        await interaction.response.send_message(first, ephemeral=True)
        for page in rest:
            await interaction.followup.send(page, ephemeral=True)

    @app_commands.command(name="loras", description="The LoRA styles you can add with <lora:name:weight>")
    @app_commands.guild_only()
    async def loras(interaction: discord.Interaction[Any]) -> None:
        await LORAS.send(services, interaction)

    @app_commands.command(name="models", description="The models you can pick, and what each takes")
    @app_commands.guild_only()
    async def models(interaction: discord.Interaction[Any]) -> None:
        await _defer(interaction)
        await MODELS.send(services, interaction)

    return [usage, queue, cancel, help, loras, models]
