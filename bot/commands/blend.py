"""`/blend` (PRODUCT.md "Pictures as prompts"): one job whose picture mixes 2–5 pictures (the reference
adapter's blend: their image embeddings averaged, on every layer), with an optional prompt and a shape."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import discord
from discord import app_commands

from bot.commands.errors import UserError, require_post_permissions
from bot.commands.imagine import check_attachment, random_seed, refuse_blocked_words
from bot.commands.picture_jobs import submit_own_picture_job
from bot.commands.reference_pictures import store_references
from bot.commands.settings import prompt_context
from bot.services import Services
from generation.prompts.references import MAX_BLEND_PICTURES, NEEDS_ADAPTER, Reference, ReferenceKind
from generation.prompts.request import GenerationRequest, consecutive_seeds, model_unit, snap_size

BLEND_DIMENSIONS = {"portrait": (2, 3), "square": (1, 1), "landscape": (3, 2)}


class BlendCommand:
    """`/blend`: one picture that mixes 2–5 pictures, on the guild's default model."""

    def __init__(self, services: Services) -> None:
        self.services = services

    async def run(
        self,
        interaction: discord.Interaction[Any],
        pictures: Sequence[discord.Attachment],
        prompt: str,
        dimensions: str,
    ) -> None:
        """Check, store the pictures, queue the job (one image of the member's quota per picture made)."""
        bot = self.services
        if interaction.guild_id is None or interaction.channel_id is None:
            raise UserError("`/blend` only works in a server channel.")
        require_post_permissions(interaction)
        limit = interaction.filesize_limit
        for picture in pictures:
            check_attachment(picture, limit)
        context = await prompt_context(
            bot.store, interaction.guild_id, interaction.user.id, bot.settings.model_set
        )
        model = context.models.default
        profile = bot.profiles().get(model, bot.backend.profile)
        if not profile.features.references:
            raise UserError(f"{profile.features.refusal('`/blend`', model)} {NEEDS_ADAPTER}")
        await refuse_blocked_words(bot, interaction.guild_id, [prompt])
        await interaction.response.defer(thinking=True)
        interaction.extras["public_defer"] = True
        wide, high = BLEND_DIMENSIONS[dimensions]
        width, height = snap_size(wide / high, float(profile.native_size**2), model_unit(profile))
        count = context.defaults.count or 1
        origins = tuple(p.url for p in pictures)
        request = GenerationRequest(
            prompt=prompt,
            width=width,
            height=height,
            steps=profile.default_steps,
            guidance=0.0 if profile.is_turbo else float(profile.default_guidance),
            seeds=consecutive_seeds(random_seed(), count),
            model=model,
            aspect=f"{wide}:{high}",
            references=(Reference(ReferenceKind.BLEND, 100, origins),),
        )
        [request] = await store_references(bot, interaction, [request], {p.url: p for p in pictures})
        await submit_own_picture_job(bot, interaction, request, request.count)


def blend_commands(services: Services) -> list[app_commands.Command[Any, Any, None]]:
    """`/blend image1 image2 [image3 image4 image5] [prompt] [dimensions]`."""
    blend = BlendCommand(services)

    @app_commands.command(name="blend", description="Mix 2 to 5 pictures into one")
    @app_commands.describe(
        image1="A picture to mix",
        image2="Another picture to mix",
        image3="Another (optional)",
        image4="Another (optional)",
        image5="Another (optional)",
        prompt="Words to steer the mix (optional)",
        dimensions="The result's shape",
    )
    @app_commands.choices(
        dimensions=[
            app_commands.Choice(name="Portrait (2:3)", value="portrait"),
            app_commands.Choice(name="Square", value="square"),
            app_commands.Choice(name="Landscape (3:2)", value="landscape"),
        ]
    )
    @app_commands.guild_only()
    async def blend_command(
        interaction: discord.Interaction[Any],
        image1: discord.Attachment,
        image2: discord.Attachment,
        image3: discord.Attachment | None = None,
        image4: discord.Attachment | None = None,
        image5: discord.Attachment | None = None,
        prompt: app_commands.Range[str, 0, 1000] = "",
        dimensions: str = "square",
    ) -> None:
        pictures = [p for p in (image1, image2, image3, image4, image5) if p is not None]
        assert len(pictures) <= MAX_BLEND_PICTURES
        await blend.run(interaction, pictures, prompt.strip(), dimensions)

    return [blend_command]
