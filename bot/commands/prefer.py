"""`/prefer option set|list|delete`: a member's personal macros (`--gold` → `golden hour, 35mm
--ar 3:2`), per guild, at most `MAX_MACROS`, expanded by `/imagine` before parsing. Private."""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands

from bot.commands.errors import UserError, report_error
from bot.services import Services
from bot.views.pager import Listing, PagedList
from generation.prompts.flags import FLAG_NAMES
from generation.prompts.grammar import MAX_MACROS, check_macro
from jobs.messages import quote

NO_MACROS = "You have no macros here. Add one with `/prefer option set name:gold value:golden hour --ar 3:2`."


def _guild(interaction: discord.Interaction[Any]) -> int:
    if interaction.guild_id is None:
        raise UserError("Macros belong to a server: use this command in one.")
    return interaction.guild_id


def macros_listing(macros: dict[str, str]) -> Listing:
    """The member's macros, one a line (paged when they don't fit one message)."""
    if not macros:
        return Listing([NO_MACROS])
    head = [f"**Your macros** ({len(macros)} of {MAX_MACROS})"]
    return Listing(head, [f"`--{name}` → {quote(value)}" for name, value in macros.items()])


async def _read_macros(services: Services, interaction: discord.Interaction[Any]) -> Listing:
    view = await services.store.prompt_settings(_guild(interaction), interaction.user.id)
    return macros_listing(view.macros)


MACROS = PagedList("macros", _read_macros, report_error)


def prefer_commands(services: Services) -> list[app_commands.Group]:
    """The `/prefer` group with its `option` subgroup."""
    prefer = app_commands.Group(name="prefer", description="Your personal shortcuts", guild_only=True)
    option = app_commands.Group(
        name="option", description="Macros: --name in a prompt becomes its value", parent=prefer
    )

    @option.command(name="set", description="Add or change a macro")
    @app_commands.describe(name="The macro's name, used as --name", value="What --name becomes")
    async def set_(
        interaction: discord.Interaction[Any],
        name: app_commands.Range[str, 1, 40],
        value: app_commands.Range[str, 1, 400],
    ) -> None:
        guild_id = _guild(interaction)
        key, text = check_macro(name, value, FLAG_NAMES)
        if not await services.store.set_macro(guild_id, interaction.user.id, key, text, MAX_MACROS):
            raise UserError(f"You have {MAX_MACROS} macros already: delete one first.")
        await interaction.response.send_message(f"`--{key}` now means {quote(text)}.", ephemeral=True)

    @option.command(name="list", description="Your macros")
    async def list_(interaction: discord.Interaction[Any]) -> None:
        await MACROS.send(services, interaction)

    @option.command(name="delete", description="Remove a macro")
    @app_commands.describe(name="The macro's name")
    async def delete(interaction: discord.Interaction[Any], name: app_commands.Range[str, 1, 40]) -> None:
        key = name.strip().removeprefix("--").lower()
        if not await services.store.delete_macro(_guild(interaction), interaction.user.id, key):
            raise UserError(f"You have no macro `--{quote(key)}`.")
        await interaction.response.send_message(f"`--{quote(key)}` is gone.", ephemeral=True)

    return [prefer]
