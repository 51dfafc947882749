"""Domain errors the bot shows to members, and the one place that turns any error into a reply."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import discord
from discord import app_commands

from generation.media.image_store import ImageStoreError, InvalidImage
from generation.prompts.parser import PromptError
from jobs.runner import ShuttingDown
from storage.interface import StorageError

T = TypeVar("T")

log = logging.getLogger("bot.commands.errors")

APOLOGY = "Sorry, something went wrong on my side. It has been logged; please try again."


class UserError(Exception):
    """A refusal whose `str()` is the message to show the member (ephemerally)."""


class NotAllowed(UserError):
    """The member lacks the permission an admin command needs."""


def user_message(error: BaseException) -> str | None:
    """The short message for a known error, or None for an unexpected one."""
    if isinstance(error, app_commands.CommandInvokeError | app_commands.TransformerError) and error.__cause__:
        error = error.__cause__
    if isinstance(error, app_commands.CommandInvokeError):
        error = error.original
    if isinstance(error, UserError | PromptError | ShuttingDown):
        return str(error)
    if isinstance(error, InvalidImage):
        return str(error) or "That attachment isn't an image I can read: attach a PNG, JPEG or WebP picture."
    if isinstance(error, StorageError):
        return "The bot's database is busy or unavailable; nothing was spent. Please try again shortly."
    if isinstance(error, ImageStoreError):
        return "The bot couldn't store that picture right now; nothing was spent. Please try again later."
    if isinstance(error, app_commands.NoPrivateMessage):
        return "This command only works in a server."
    if isinstance(error, app_commands.MissingPermissions | app_commands.BotMissingPermissions):
        return "You need the **Manage Server** permission for this."
    if isinstance(error, app_commands.TransformerError):
        return f"`{error.value}` isn't a valid value for that option."
    if isinstance(error, app_commands.CheckFailure):
        return "You can't use this command here."
    return None


async def send_private(interaction: discord.Interaction[Any], text: str) -> None:
    """Answer ephemerally whatever state the interaction is in. After a public "thinking" defer the
    original response is deleted first, so the ephemeral followup is not merged into it."""
    text = text[:1900]
    if not interaction.response.is_done():
        await interaction.response.send_message(text, ephemeral=True)
        return
    if interaction.extras.get("public_defer"):
        interaction.extras["public_defer"] = False
        # The first followup after a "thinking" defer fills that (public) message whatever its
        # ephemeral flag, even once it is deleted: settle it with an edit first, then remove it.
        with contextlib.suppress(discord.HTTPException):
            await interaction.edit_original_response(content="…")
        with contextlib.suppress(discord.HTTPException):
            await interaction.delete_original_response()
    await interaction.followup.send(text, ephemeral=True)


def describe(interaction: discord.Interaction[Any]) -> str:
    """Context for a log line (never the token)."""
    command = interaction.command.qualified_name if interaction.command else interaction.custom_id or "?"
    where = f"guild={interaction.guild_id} channel={interaction.channel_id}"
    return f"command={command!r} {where} user={interaction.user.id}"


async def report_error(interaction: discord.Interaction[Any], error: BaseException) -> None:
    """Reply to the member with a short message for a domain error, or an apology (logged) otherwise."""
    message = user_message(error)
    if message is None:
        original = getattr(error, "original", error)
        log.error("unexpected error (%s)", describe(interaction), exc_info=original)
        message = APOLOGY
    else:
        log.info("refused (%s): %s", describe(interaction), message)
    try:
        await send_private(interaction, message)
    except discord.HTTPException as exc:
        log.warning("could not send the error reply (%s): %r", describe(interaction), exc)


def reporting(
    handler: Callable[[discord.Interaction[Any], T], Awaitable[None]],
) -> Callable[[discord.Interaction[Any], T], Awaitable[None]]:
    """`handler` (a modal's submit) with any error answered as a command's is (`report_error`)."""

    async def reported(interaction: discord.Interaction[Any], value: T) -> None:
        try:
            await handler(interaction, value)
        except Exception as exc:
            await report_error(interaction, exc)

    return reported


class ImagineTree(app_commands.CommandTree[Any]):
    """The command tree with one error handler for every command."""

    async def on_error(
        self, interaction: discord.Interaction[Any], error: app_commands.AppCommandError
    ) -> None:
        await report_error(interaction, error)


def member_role_ids(user: discord.abc.User | discord.Member) -> tuple[int, ...]:
    """The member's role ids (empty outside a guild)."""
    roles = getattr(user, "roles", None) or []
    return tuple(role.id for role in roles if not role.is_default())


def has_manage_guild(interaction: discord.Interaction[Any]) -> bool:
    """Manage Server (or Administrator), from the interaction's permissions or the member's roles."""
    perms = interaction.permissions
    if perms.manage_guild or perms.administrator:
        return True
    member = interaction.user
    if isinstance(member, discord.Member):
        if member.guild.owner_id == member.id:
            return True
        gp = member.guild_permissions
        return gp.manage_guild or gp.administrator
    return False


def require_manage_guild(interaction: discord.Interaction[Any]) -> None:
    """The run-time check behind admin commands (a forged interaction can skip Discord's filter)."""
    if interaction.guild_id is None:
        raise NotAllowed("This command only works in a server.")
    if not has_manage_guild(interaction):
        raise NotAllowed("You need the **Manage Server** permission to change limits or blocked words.")


POST_PERMISSIONS = (("view_channel", "View Channel"), ("attach_files", "Attach Files"))


def missing_post_permissions(interaction: discord.Interaction[Any]) -> list[str]:
    """What the bot lacks (by `app_permissions`) to post a result in the interaction's channel: View
    Channel, Send Messages (Send Messages in Threads in a thread) and Attach Files."""
    perms = interaction.app_permissions
    if perms.administrator:
        return []
    in_thread = isinstance(interaction.channel, discord.Thread)
    send = (
        ("send_messages_in_threads", "Send Messages in Threads")
        if in_thread
        else ("send_messages", "Send Messages")
    )
    needed = (POST_PERMISSIONS[0], send, POST_PERMISSIONS[1])
    return [label for name, label in needed if not getattr(perms, name)]


def require_post_permissions(interaction: discord.Interaction[Any]) -> None:
    """Refuse a job (before anything is spent) in a channel where its result could not be posted."""
    missing = missing_post_permissions(interaction)
    if missing:
        raise UserError(
            f"I can't post pictures in this channel: I'm missing **{'**, **'.join(missing)}** here."
            " Ask an admin to grant it, or use another channel. Nothing was spent."
        )
