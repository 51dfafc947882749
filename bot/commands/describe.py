"""`/describe image:` and the `Describe` message menu: four prompts that could have made a picture,
posted with `Imagine 1`–`Imagine 4` buttons that draw that prompt for whoever clicks.

The prompts come from `generation.pipelines.describe.Describer` (DESCRIBE_MODEL, loaded on first use,
off the event loop) and obey the server's blocklist like any prompt. The answer's text is where the
buttons read their prompt from, so they work after a restart without storing anything."""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands

from bot.commands.errors import UserError
from bot.commands.imagine import check_attachment
from bot.services import Services
from bot.views.result_buttons import prompts_view
from generation.media.image_store import decode_image
from jobs.messages import quote
from storage.blocklist import find_blocked

if TYPE_CHECKING:
    from generation.pipelines.describe import Describer

_LINE_RE = re.compile(r"^\*\*([1-4])\.\*\* (.+)$", re.MULTILINE)
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp")


def describe_text(prompts: list[str], user_id: int) -> str:
    """The answer: one numbered line per prompt (what the buttons read back)."""
    lines = [f"Prompts that could have made this picture, for <@{user_id}>:"]
    lines += [f"**{i}.** {quote(prompt)}" for i, prompt in enumerate(prompts, 1)]
    lines.append("Click **Imagine N** to draw one.")
    return "\n".join(lines)


def prompt_of(content: str, index: int) -> str | None:
    """Line `index`'s prompt of a `describe_text` answer (None when there is no such line)."""
    for match in _LINE_RE.finditer(content):
        if int(match[1]) == index:
            return match[2].replace("@\u200b", "@").strip()
    return None


def picture_of(message: discord.Message) -> discord.Attachment | None:
    """The first attachment of `message` that is a picture, by content type or file name."""
    for attachment in message.attachments:
        kind = (attachment.content_type or "").split(";")[0].strip().lower()
        if kind.startswith("image/") or attachment.filename.lower().endswith(_IMAGE_SUFFIXES):
            return attachment
    return None


class DescribeCommand:
    """The work of `/describe` and `Describe`, over the bot's services; the captioner is made on the
    first use."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._describer: Describer | None = None

    def describer(self) -> Describer:
        """The captioner of DESCRIBE_MODEL (a UserError when it is not set)."""
        settings = self.services.settings
        if settings.describe_model is None:
            raise UserError("Describing pictures isn't set up on this bot (its admin sets `DESCRIBE_MODEL`).")
        if self._describer is None:
            from generation.pipelines.describe import Describer, DescribeSettings
            from generation.pipelines.loading import resolve_device

            self._describer = Describer(
                DescribeSettings(
                    settings.describe_model, resolve_device(settings.device), settings.model_cache_dir
                )
            )
        return self._describer

    async def run(self, interaction: discord.Interaction[Any], picture: discord.Attachment) -> None:
        """Check the picture, acknowledge, describe it and post the prompts with their buttons."""
        if interaction.guild_id is None:
            raise UserError("Describing only works in a server channel.")
        describer = self.describer()
        limit = interaction.filesize_limit
        check_attachment(picture, limit)
        await interaction.response.defer(thinking=True)
        interaction.extras["public_defer"] = True
        data = await picture.read()
        if len(data) > limit:
            raise UserError("That picture is larger than this server's upload limit.")
        await asyncio.to_thread(decode_image, data)
        blocked = await self.services.store.blocked_words(interaction.guild_id)
        prompts = await describer.describe(data, lambda prompt: find_blocked(prompt, blocked) is None)
        if not prompts:
            raise UserError("I couldn't find a prompt for that picture that this server allows.")
        await interaction.followup.send(
            describe_text(prompts, interaction.user.id),
            view=prompts_view(len(prompts)),
            allowed_mentions=discord.AllowedMentions.none(),
        )


def describe_commands(
    services: Services, command: DescribeCommand
) -> list[app_commands.Command[Any, Any, None] | app_commands.ContextMenu]:
    """`/describe image:` and the `Describe` message menu."""

    @app_commands.command(name="describe", description="Four prompts that could have made a picture")
    @app_commands.describe(image="The picture to describe")
    @app_commands.guild_only()
    async def describe(interaction: discord.Interaction[Any], image: discord.Attachment) -> None:
        await command.run(interaction, image)

    @app_commands.context_menu(name="Describe")
    @app_commands.guild_only()
    async def describe_message(interaction: discord.Interaction[Any], message: discord.Message) -> None:
        picture = picture_of(message)
        if picture is None:
            raise UserError("That message has no picture to describe.")
        await command.run(interaction, picture)

    return [describe, describe_message]
