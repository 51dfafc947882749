"""Admin commands: `/limits show|set|reset` and `/blocklist add|remove|list`.

Hidden from members without Manage Server by default permissions, and checked again at run time
(`require_manage_guild`), because a forged interaction can skip Discord's filter."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import discord
from discord import app_commands

from bot.commands.errors import UserError, member_role_ids, report_error, require_manage_guild
from bot.formatting import limits_text, limits_view_text, patch_text
from bot.services import Services
from bot.views.pager import Listing, PagedList
from jobs.messages import quote
from storage.blocklist import clean_phrase
from storage.interface import LimitsPatch, Scope

MAX_COUNT = 1_000_000
MAX_COOLDOWN = 86_400.0
Phrase = app_commands.Range[str, 1, 200]
MANAGE_GUILD = discord.Permissions(manage_guild=True)
Interaction = discord.Interaction[Any]
MaybeMember = discord.Member | None  # a slash option naming a member, or none
MaybeRole = discord.Role | None


def _target(
    user: discord.Member | discord.User | None, role: discord.Role | None
) -> tuple[Scope, int | None, str]:
    if user is not None and role is not None:
        raise UserError("Pick a user or a role, not both.")
    if user is not None:
        return Scope.USER, user.id, f"<@{user.id}>"
    if role is not None:
        if role.is_default():
            return Scope.GUILD, None, "the server default"
        return Scope.ROLE, role.id, f"role {quote(role.name)}"
    return Scope.GUILD, None, "the server default"


async def _admin_defer(interaction: Interaction) -> int:
    require_manage_guild(interaction)
    await interaction.response.defer(ephemeral=True, thinking=True)
    assert interaction.guild_id is not None
    return interaction.guild_id


class AdminGroup(app_commands.Group, guild_only=True, default_permissions=MANAGE_GUILD):
    """A command group for servers only, shown to Manage Server members (its subclasses inherit both;
    each command checks again with `_admin_defer`)."""

    def __init__(self, services: Services) -> None:
        super().__init__()
        self.services = services


class LimitsGroup(AdminGroup, name="limits", description="Image limits for this server (admins)"):
    """`/limits show|set|reset`."""

    @app_commands.command(name="show", description="Show the server's limits, or a member's")
    @app_commands.describe(user="Whose limits to show", role="A role's override")
    async def show(self, interaction: Interaction, user: MaybeMember = None, role: MaybeRole = None) -> None:
        guild_id = await _admin_defer(interaction)
        roles = member_role_ids(user) if isinstance(user, discord.Member) else ()
        view = await self.services.store.show_limits(guild_id, user.id if user else None, roles)
        names = {r.id: quote(r.name) for r in interaction.guild.roles} if interaction.guild else {}
        extra: list[str] = []
        if role is not None and not role.is_default():
            patch = view.role_overrides.get(role.id)
            extra.append(f"**Role {quote(role.name)}:** {patch_text(patch) if patch else 'no override'}")
        if user is None:
            effective = await self.services.store.effective_limits(guild_id, 0, ())
            extra.append(f"**Effective default:** {limits_text(effective)}")
        text = limits_view_text(view, user_id=user.id if user else None, role_names=names, extra=extra)
        await interaction.followup.send(text, ephemeral=True)

    @app_commands.command(name="set", description="Set limits for the server, a role or a member")
    @app_commands.describe(
        user="Set a member's override",
        role="Set a role's override",
        images_per_hour="Images per sliding hour",
        images_per_day="Images per sliding day",
        max_queued="Jobs waiting at once",
        cooldown_seconds="Seconds between requests",
    )
    async def set_(
        self,
        interaction: Interaction,
        user: MaybeMember = None,
        role: MaybeRole = None,
        images_per_hour: app_commands.Range[int, 0, MAX_COUNT] | None = None,
        images_per_day: app_commands.Range[int, 0, MAX_COUNT] | None = None,
        max_queued: app_commands.Range[int, 0, MAX_COUNT] | None = None,
        cooldown_seconds: app_commands.Range[float, 0.0, MAX_COOLDOWN] | None = None,
    ) -> None:
        guild_id = await _admin_defer(interaction)
        scope, target, label = _target(user, role)
        patch = LimitsPatch(images_per_hour, images_per_day, max_queued, cooldown_seconds)
        if patch == LimitsPatch():
            raise UserError(
                "Give at least one of images_per_hour, images_per_day, max_queued, cooldown_seconds."
            )
        await self.services.store.set_limits(guild_id, scope, target, patch)
        await interaction.followup.send(f"Limits for {label} set: {patch_text(patch)}.", ephemeral=True)

    set_.name = "set"

    @app_commands.command(name="reset", description="Remove an override (or the server default)")
    @app_commands.describe(user="Whose override to remove", role="Which role's override to remove")
    async def reset(self, interaction: Interaction, user: MaybeMember = None, role: MaybeRole = None) -> None:
        guild_id = await _admin_defer(interaction)
        scope, target, label = _target(user, role)
        removed = await self.services.store.reset_limits(guild_id, scope, target)
        text = f"Limits for {label} reset." if removed else f"There was nothing set for {label}."
        await interaction.followup.send(text, ephemeral=True)


def _phrase(raw: str) -> str:
    """A blocked phrase as stored, or a UserError saying why it can't be one."""
    try:
        return clean_phrase(raw)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def blocked_listing(words: Sequence[str]) -> Listing:
    """The blocked phrases, quoted, comma-separated (paged when they don't fit one message)."""
    if not words:
        return Listing(["Nothing is blocked."])
    return Listing([f"Blocked ({len(words)}):"], [f"“{quote(w)}”" for w in words], sep=", ")


async def _read_blocked(services: Services, interaction: Interaction) -> Listing:
    require_manage_guild(interaction)
    assert interaction.guild_id is not None
    return blocked_listing(await services.store.blocked_words(interaction.guild_id))


BLOCKED = PagedList("blocklist", _read_blocked, report_error)


class BlocklistGroup(AdminGroup, name="blocklist", description="Blocked words (admins)"):
    """`/blocklist add|remove|list`."""

    @app_commands.command(name="add", description="Block a word or phrase in prompts")
    @app_commands.describe(phrase="A word or phrase (whole words, any case)")
    async def add(self, interaction: Interaction, phrase: Phrase) -> None:
        await self._change(interaction, phrase, block=True)

    @app_commands.command(name="remove", description="Unblock a word or phrase")
    @app_commands.describe(phrase="The blocked word or phrase")
    async def remove(self, interaction: Interaction, phrase: Phrase) -> None:
        await self._change(interaction, phrase, block=False)

    @app_commands.command(name="list", description="List blocked words and phrases")
    async def list_(self, interaction: Interaction) -> None:
        await _admin_defer(interaction)
        await BLOCKED.send(self.services, interaction)

    async def _change(self, interaction: Interaction, phrase: str, *, block: bool) -> None:
        """Block (or unblock) one phrase and say whether anything changed."""
        guild_id = await _admin_defer(interaction)
        cleaned = _phrase(phrase)
        store = self.services.store
        change = store.add_blocked_word if block else store.remove_blocked_word
        changed = await change(guild_id, cleaned)
        shown = quote(cleaned)
        if block:
            text = f"Blocked “{shown}”." if changed else f"“{shown}” was already blocked."
        else:
            text = f"Unblocked “{shown}”." if changed else f"“{shown}” wasn't blocked."
        await interaction.followup.send(text, ephemeral=True)


def admin_commands(services: Services) -> list[app_commands.Group]:
    """`/limits` and `/blocklist`."""
    return [LimitsGroup(services), BlocklistGroup(services)]
