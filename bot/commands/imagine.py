"""`/imagine`: parse (pure, before acknowledging, so bad input gets its own ephemeral answer), defer
at once, then blocked words, the source picture, and the atomic reservation through the runner."""

# No `from __future__ import annotations` here: the command's Range annotations are built from the
# loaded model's step limits at run time and discord.py reads them as real objects (hence Optional).
# ruff: noqa: UP045

import asyncio
import dataclasses
import secrets
from typing import Any, Optional

import discord
from discord import app_commands
from discord.app_commands import Range

from bot.commands.errors import UserError, member_role_ids, require_post_permissions, send_private
from bot.commands.reference_pictures import attached_references, check_reference_urls, store_references
from bot.commands.settings import prompt_context
from bot.formatting import refusal_text
from bot.services import Services
from bot.views.custom_ids import new_job_id
from generation.media.image_store import decode_image
from generation.prompts.command import parse_command
from generation.prompts.loras import with_lora_option
from generation.prompts.parser import ASPECT_CHOICES
from generation.prompts.request import GenerationRequest, PromptOptions
from jobs.delivery import token_expiry
from jobs.messages import quote
from storage.blocklist import find_blocked
from storage.interface import NewJob, Refusal

PENDING_SOURCE = "0" * 64  # stands in for the source picture's hash until it is read (after the defer)
SEED_LIMIT = 2**32 - 1


def random_seed() -> int:
    """A fresh seed."""
    return secrets.randbelow(2**32)


def check_attachment(image: discord.Attachment, limit: int) -> None:
    """A UserError unless `image` is a picture within `limit` bytes (by its size and content type)."""
    if image.size > limit:
        raise UserError(
            f"That picture is {image.size / 2**20:.1f} MiB; the limit here is {limit / 2**20:.1f} MiB."
        )
    kind = (image.content_type or "").split(";")[0].strip().lower()
    if kind and not kind.startswith("image/"):
        raise UserError(
            f"`{quote(image.filename)}` isn't a picture ({kind}): attach a PNG, JPEG or WebP image."
        )


async def refuse_unqueueable(services: Services, guild_id: int, requests: list[GenerationRequest]) -> None:
    """A `UserError` for requests that parse but may not be queued: a LoRA the model can't take (read
    off the event loop), or a word the server blocks."""
    for model, loras in dict.fromkeys((r.model, r.loras) for r in requests if r.loras):
        why = await asyncio.to_thread(services.loras.refusal, model, loras)
        if why is not None:
            raise UserError(f"{why} It wasn't queued.")
    await refuse_blocked_words(services, guild_id, [r.prompt for r in requests])


async def refuse_blocked_words(
    services: Services, guild_id: int, texts: list[str], what: str = "prompt"
) -> None:
    """A `UserError` when any of `texts` (a member's `what`) holds a word the server blocks."""
    words = await services.store.blocked_words(guild_id)
    blocked = next((b for b in (find_blocked(text, words) for text in texts) if b is not None), None)
    if blocked is not None:
        raise UserError(
            f"Your {what} contains a word this server blocks (“{quote(blocked)}”), so it wasn't queued."
        )


def build_imagine_command(cog: "ImagineCommand") -> app_commands.Command[Any, Any, None]:
    """The `/imagine` command, with the step range of the loaded model."""
    profile = cog.services.backend.profile
    low, high = profile.min_steps, profile.max_steps
    models = cog.services.settings.model_set.names[:25]  # Discord's most choices

    @app_commands.command(name="imagine", description="Draw a picture from a prompt")
    @app_commands.guild_only()
    @app_commands.describe(
        prompt="What to draw; flags like --ar 16:9 --seed 42 --no text may follow",
        negative="What to keep out of the picture",
        aspect="Width:height of the picture",
        steps=f"Denoising steps ({low}–{high})",
        guidance="How closely to follow the prompt (0–30)",
        seed="Seed for a repeatable picture",
        count="How many pictures (1–4)",
        image="Start from your own picture",
        strength="How far to move from your picture (0–1)",
        model="Which model draws it (the first is the default)",
        lora="A LoRA style to apply (weight 1, or name:weight); /loras lists them",
        style_image="A picture whose style to take (as --sref)",
        subject_image="A picture of a character or object to carry in (as --oref)",
    )
    @app_commands.choices(
        aspect=[app_commands.Choice(name=a, value=a) for a in ASPECT_CHOICES],
        model=[app_commands.Choice(name=m[:100], value=m[:100]) for m in models],
    )
    async def imagine(
        interaction: discord.Interaction[Any],
        prompt: Range[str, 1, 6000],
        negative: Optional[Range[str, 0, 2000]] = None,
        aspect: Optional[app_commands.Choice[str]] = None,
        steps: Optional[Range[int, low, high]] = None,
        guidance: Optional[Range[float, 0.0, 30.0]] = None,
        seed: Optional[Range[int, 0, SEED_LIMIT]] = None,
        count: Optional[Range[int, 1, 4]] = None,
        image: Optional[discord.Attachment] = None,
        strength: Optional[Range[float, 0.0, 1.0]] = None,
        model: Optional[app_commands.Choice[str]] = None,
        lora: Optional[Range[str, 1, 100]] = None,
        style_image: Optional[discord.Attachment] = None,
        subject_image: Optional[discord.Attachment] = None,
    ) -> None:
        await cog.run(
            interaction,
            with_lora_option(prompt, lora),
            PromptOptions(
                negative=negative,
                aspect=aspect.value if aspect is not None else None,
                steps=steps,
                guidance=guidance,
                seed=seed,
                count=count,
                strength=strength,
                model=model.value if model is not None else None,
            ),
            image,
            style_image,
            subject_image,
        )

    @imagine.autocomplete("lora")
    async def lora_choices(
        interaction: discord.Interaction[Any], typed: str
    ) -> list[app_commands.Choice[str]]:
        names = cog.services.loras.matching(typed)
        return [app_commands.Choice(name=n[:100], value=n[:100]) for n in names]

    return imagine


def picture_size(image: Optional[discord.Attachment]) -> tuple[int, int] | None:
    """An attached picture's width and height as Discord reports them (None: not given)."""
    if image is None or not image.width or not image.height:
        return None
    return image.width, image.height


class ImagineCommand:
    """The `/imagine` command's work, over the bot's services."""

    def __init__(self, services: Services) -> None:
        self.services = services

    async def run(
        self,
        interaction: discord.Interaction[Any],
        text: str,
        options: PromptOptions,
        image: Optional[discord.Attachment],
        style_image: Optional[discord.Attachment] = None,
        subject_image: Optional[discord.Attachment] = None,
    ) -> None:
        """The whole command: everything before `defer` is synchronous and fast (reference URLs are
        checked, not fetched, before it; fetched after it, before anything is spent)."""
        bot = self.services
        if interaction.guild_id is None or interaction.channel_id is None:
            raise UserError("`/imagine` only works in a server channel.")
        require_post_permissions(interaction)
        limit = interaction.filesize_limit
        if image is not None:
            check_attachment(image, limit)
        references = attached_references(style_image, subject_image)
        for attachment in references.values():
            check_attachment(attachment, limit)
        context = await prompt_context(
            bot.store, interaction.guild_id, interaction.user.id, bot.settings.model_set
        )
        offer = context.models
        requests = parse_command(
            text,
            options,
            # A job without `--model` runs on the guild's default model.
            dataclasses.replace(bot.backend.profile, name=offer.default),
            count_tokens=bot.backend.count_tokens,
            random_seed=random_seed,
            defaults=context.defaults,
            macros=context.macros,
            source_image=PENDING_SOURCE if image is not None else None,
            models=bot.settings.model_set.names,
            loras=bot.loras.names(),
            profiles=bot.profiles(),
            counters=bot.counters(),
            source_size=picture_size(image),
            attached={kind: attachment.url for kind, attachment in references.items()},
        )
        refused = next((r.model for r in requests if r.model not in offer.offered), None)
        if refused is not None:
            raise UserError(
                f"This server doesn't offer the model `{refused}`; it offers {', '.join(offer.offered)}."
            )
        by_url = {attachment.url: attachment for attachment in references.values()}
        check_reference_urls(bot, requests, by_url)
        # Acknowledge now: nothing above awaited anything but one read of the member's settings.
        await interaction.response.defer(thinking=True)
        interaction.extras["public_defer"] = True

        await refuse_unqueueable(bot, interaction.guild_id, requests)
        if image is not None:
            data = await image.read()
            if len(data) > limit:
                raise UserError("That picture is larger than this server's upload limit.")
            await asyncio.to_thread(decode_image, data)
            digest = await asyncio.to_thread(bot.image_store.put, data)
            requests = [dataclasses.replace(r, source_image=digest) for r in requests]
        if any(r.references for r in requests):
            requests = await store_references(bot, interaction, requests, by_url)
        for position, request in enumerate(requests):
            if not await self._submit(interaction, request, first=position == 0):
                return

    async def _submit(
        self, interaction: discord.Interaction[Any], request: GenerationRequest, *, first: bool
    ) -> bool:
        """Reserve and queue one job of the command; False (the member told) when refused. The first
        job answers in the interaction; the others post to the channel, mentioning the member."""
        bot, limit = self.services, interaction.filesize_limit
        assert interaction.guild_id is not None and interaction.channel_id is not None
        job = NewJob(
            job_id=new_job_id(),
            guild_id=interaction.guild_id,
            channel_id=interaction.channel_id,
            owner_id=interaction.user.id,
            request_json=request.to_json(),
            images=request.count,
            interaction_id=interaction.id if first else None,
            interaction_token=interaction.token if first else None,
            token_expires_at=token_expiry(bot.clock()) if first else None,
        )
        outcome = await bot.runner.submit(job, request, member_role_ids(interaction.user), upload_limit=limit)
        if isinstance(outcome, Refusal):
            text = refusal_text(outcome, request.count)
            if first:
                await send_private(interaction, text)
            else:  # the first job's answer stays; the rest of the command is not queued
                await interaction.followup.send(
                    f"The rest of this command wasn't queued: {text}"[:1900], ephemeral=True
                )
            return False
        return True


def imagine_commands(services: Services) -> list[app_commands.Command[Any, Any, None]]:
    """`/imagine`, built for the loaded model."""
    return [build_imagine_command(ImagineCommand(services))]
