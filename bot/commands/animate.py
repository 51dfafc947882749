"""Animate (PRODUCT.md "Animate"): `Animate (Low motion)`/`(High motion)` on a one-image result,
`Extend` on a clip, and `/animate image: prompt: motion:`. Each is a job on the video model
(`VIDEO_MODEL`, loaded on first use by the engine pool) that spends the guild's video cost
(`/server-defaults video_cost:`, else `VIDEO_COST`) of the clicker's quota, refunded if it fails.
Without VIDEO_MODEL there are no Animate buttons and `/animate` says it is not set up."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import discord
from discord import app_commands

from bot.commands.derive import check_parent, parent_request, source_bytes
from bot.commands.errors import UserError, require_post_permissions, send_private
from bot.commands.imagine import refuse_unqueueable
from bot.commands.picture_jobs import own_picture, picture_size_of, result_picture, submit_own_picture_job
from bot.commands.settings import video_cost
from bot.formatting import refusal_text
from bot.services import Services
from bot.views.custom_ids import ButtonRef, EditButton
from generation.prompts.request import GenerationRequest, animate_of, extend_of, picture_request
from generation.prompts.video import Motion
from storage.interface import JobRecord, Refusal, Reservation

NOT_SET_UP = "Animate isn't set up on this bot (its admin sets `VIDEO_MODEL`)."
MOTION_OF_BUTTON = {EditButton.ANIMATE_LOW: Motion.LOW, EditButton.ANIMATE_HIGH: Motion.HIGH}
MAX_ANIMATE_PROMPT = 1000  # characters of `/animate`'s prompt

SubmitDerived = Callable[
    [discord.Interaction[Any], JobRecord, GenerationRequest, int | None, int],
    Awaitable[Reservation | Refusal],
]
"""`ResultActions.submit_derived`: reserve and queue a request made from a result, spending `images`."""


class AnimateActions:
    """The Animate buttons, Extend and `/animate`, over the bot's services."""

    def __init__(self, services: Services, submit_derived: SubmitDerived | None = None) -> None:
        """`submit_derived`: how the buttons' jobs are reserved (`ResultActions.submit_derived`)."""
        self.services = services
        self._submit_derived = submit_derived

    def video_model(self) -> str:
        """VIDEO_MODEL, or a UserError saying Animate is not set up."""
        model = self.services.settings.video_model
        if model is None:
            raise UserError(NOT_SET_UP)
        return model

    async def cost(self, guild_id: int, user_id: int) -> int:
        """What one clip spends in this guild."""
        view = await self.services.store.prompt_settings(guild_id, user_id)
        return video_cost(view.guild, self.services.settings.video_cost)

    async def on_click(self, interaction: discord.Interaction[Any], ref: ButtonRef) -> None:
        """`Animate (Low motion)`/`(High motion)` on a one-image result: a clip of its picture."""
        model = self.video_model()
        assert ref.edit is not None
        parent, data, digest = await result_picture(self.services, interaction, ref, "Animate")
        request = animate_of(
            parent_request(parent),
            source_hash=digest,
            size=picture_size_of(data),
            motion=MOTION_OF_BUTTON[ref.edit],
            video_model=model,
            seed=secrets.randbelow(2**32),
            of_job=parent.job_id,
        )
        await self._spend(interaction, parent, request, 0)

    async def on_extend(self, interaction: discord.Interaction[Any], ref: ButtonRef) -> None:
        """`Extend` on a clip: about 4 s more from its last frame, the clips joined."""
        model = self.video_model()
        assert interaction.guild_id is not None
        require_post_permissions(interaction)
        await interaction.response.defer(thinking=True)
        interaction.extras["public_defer"] = True
        bot = self.services
        clip = check_parent(await bot.store.get_job(ref.job_id), interaction.guild_id, ref)
        before = parent_request(clip)
        if before.video is None:
            raise UserError("Only a clip can be extended.")
        data = await asyncio.to_thread(source_bytes, clip, 0)
        digest = await asyncio.to_thread(bot.image_store.put, data)
        seed = secrets.randbelow(2**32)
        request = extend_of(before, source_hash=digest, seed=seed, of_job=clip.job_id)
        if request.model != model:  # VIDEO_MODEL changed since: the clip continues on today's
            request = dataclasses.replace(request, model=model)
        await self._spend(interaction, clip, request, None)

    async def _spend(
        self,
        interaction: discord.Interaction[Any],
        parent: JobRecord,
        request: GenerationRequest,
        parent_index: int | None,
    ) -> None:
        assert interaction.guild_id is not None and self._submit_derived is not None
        cost = await self.cost(interaction.guild_id, interaction.user.id)
        outcome = await self._submit_derived(interaction, parent, request, parent_index, cost)
        if isinstance(outcome, Refusal):
            await send_private(interaction, refusal_text(outcome, cost))

    async def run(
        self,
        interaction: discord.Interaction[Any],
        image: discord.Attachment,
        prompt: str,
        motion: Motion,
    ) -> None:
        """`/animate`: a clip of a member's own picture."""
        model = self.video_model()
        if len(prompt) > MAX_ANIMATE_PROMPT:
            raise UserError(f"The prompt is {len(prompt)} characters; at most {MAX_ANIMATE_PROMPT}.")
        picture, digest = await own_picture(self.services, interaction, image)
        request = animate_of(
            picture_request(prompt, picture.size, model),
            source_hash=digest,
            size=picture.size,
            motion=motion,
            video_model=model,
            seed=secrets.randbelow(2**32),
        )
        assert interaction.guild_id is not None
        await refuse_unqueueable(self.services, interaction.guild_id, [request])  # the server's blocked words
        cost = await self.cost(interaction.guild_id, interaction.user.id)
        await submit_own_picture_job(self.services, interaction, request, cost)


def animate_commands(services: Services) -> list[app_commands.Command[Any, Any, None]]:
    """`/animate image: prompt: motion:`."""
    actions = AnimateActions(services)

    @app_commands.command(name="animate", description="Make a short video that starts from a picture")
    @app_commands.describe(
        image="The picture the video starts from",
        prompt="What happens in the video (optional)",
        motion="How much it moves",
    )
    @app_commands.choices(
        motion=[
            app_commands.Choice(name="Low", value=Motion.LOW.value),
            app_commands.Choice(name="High", value=Motion.HIGH.value),
        ]
    )
    @app_commands.guild_only()
    async def animate(
        interaction: discord.Interaction[Any],
        image: discord.Attachment,
        prompt: str = "",
        motion: str = Motion.LOW.value,
    ) -> None:
        await actions.run(interaction, image, prompt, Motion(motion))

    return [animate]
