"""`/settings` (a member's own prompt defaults and Remix, privately) and `/server-defaults` (the
guild's, for Manage Server members): options change values at once, and the private answer shows
the current values with selects and buttons to change them, and a reset.

`prompt_context` is what `/imagine` reads once per command: the member's defaults over the guild's,
the member's macros (`/prefer`) and the guild's models (its default and the ones it offers).
`video_cost` is what one video (Animate) spends in a guild: its own cost, else the bot's VIDEO_COST."""

# No `from __future__ import annotations`: discord.py reads the commands' annotations as objects.
# ruff: noqa: UP045

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

import discord
from discord import app_commands
from discord.app_commands import Range

from bot.commands.errors import UserError, require_manage_guild
from bot.services import Services
from bot.settings import MAX_VIDEO_COST
from generation.model_set import GuildModels, ModelSet
from generation.prompts.parser import ASPECT_CHOICES, clean_text, parse_aspect
from generation.prompts.request import MAX_IMAGES, PromptDefaults
from generation.prompts.samplers import SAMPLER_LABELS, SAMPLER_NAMES
from jobs.messages import quote
from storage.interface import PromptSettings, Store

MAX_TEXT = 300  # characters of a default negative prompt or style suffix
CLEAR = "-"  # a text option of just this clears that setting
OWN_SAMPLER = "model"  # the sampler select's value for "the model's own"
CLEAR_COST = 0  # the `video_cost` option's value that clears the guild's cost (the bot's default)


def defaults_of(settings: PromptSettings) -> PromptDefaults:
    """The prompt defaults held in stored settings."""
    return PromptDefaults(
        count=settings.count,
        aspect=settings.aspect,
        negative=settings.negative,
        sampler=settings.sampler,
        suffix=settings.suffix,
    )


@dataclass(frozen=True)
class PromptContext:
    """What one command reads of the store: defaults (the member's over the guild's), the member's
    macros, and the guild's models."""

    defaults: PromptDefaults
    macros: dict[str, str]
    models: GuildModels


async def prompt_context(store: Store, guild_id: int, user_id: int, models: ModelSet) -> PromptContext:
    """One read: the member's defaults over the guild's, the member's macros and the guild's models."""
    view = await store.prompt_settings(guild_id, user_id)
    defaults = defaults_of(view.member).over(defaults_of(view.guild))
    return PromptContext(defaults, view.macros, models.for_guild(view.guild.model, view.guild.models))


def model_changes(
    models: ModelSet, current: PromptSettings, model: Optional[str], offered: Optional[str]
) -> dict[str, object | None]:
    """The store changes for a guild's default model and offered models (`CLEAR` for either: the
    bot's default, every model), checked against MODELS and against each other."""
    changes: dict[str, object | None] = {}
    if offered is not None:
        if clean_text(offered) == CLEAR:
            changes["models"] = None
        else:
            try:
                names = models.names_in(offered)
            except ValueError as exc:
                raise UserError(f"The `models` option: {exc}.") from None
            changes["models"] = None if names == models.names else ",".join(names)
    if model is not None:
        if model == CLEAR:
            changes["model"] = None
        else:
            choice = models.get(model)
            if choice is None:
                there = ", ".join(models.names)
                raise UserError(f"There is no model called `{quote(model)}` (there are {there}).")
            changes["model"] = choice.name
    stored_models = changes.get("models", current.models)
    default = changes.get("model", current.model)
    guild = models.for_guild(None, stored_models if isinstance(stored_models, str) else None)
    if isinstance(default, str) and default not in guild.offered:
        raise UserError(
            f"The default model `{default}` must be one this server offers ({', '.join(guild.offered)}): "
            "offer it too, or choose another default."
        )
    return changes


def video_cost(guild: PromptSettings, default: int) -> int:
    """Images of a member's quota one video (Animate) spends in the guild: the guild's own cost
    (`/server-defaults video_cost:`), else `default` (the bot's VIDEO_COST)."""
    return default if guild.video_cost is None else guild.video_cost


def video_cost_changes(value: Optional[int]) -> dict[str, object | None]:
    """The store change for the `video_cost` option: None (not given) changes nothing, `CLEAR_COST`
    clears it (the bot's default), 1 to MAX_VIDEO_COST sets it; anything else is refused."""
    if value is None:
        return {}
    if value == CLEAR_COST:
        return {"video_cost": None}
    if not 1 <= value <= MAX_VIDEO_COST:
        raise UserError(
            f"The `video_cost` option must be between 1 and {MAX_VIDEO_COST} images "
            f"(or {CLEAR_COST} for the bot's default), not {value}."
        )
    return {"video_cost": value}


def _value(choice: Optional[app_commands.Choice[str]]) -> Optional[str]:
    return None if choice is None else choice.value


def _text(label: str, value: Optional[str]) -> Optional[str]:
    """A text setting as given: None (not given), "" (clear it) or the cleaned text."""
    if value is None:
        return None
    text = clean_text(value)
    if text == CLEAR:
        return ""
    if not text:
        raise UserError(f"The `{label}` option needs text, or `{CLEAR}` to clear it.")
    if len(text) > MAX_TEXT:
        raise UserError(f"The `{label}` option is at most {MAX_TEXT} characters, not {len(text)}.")
    return text


def changes_of(
    count: Optional[int],
    aspect: Optional[str],
    negative: Optional[str],
    sampler: Optional[str],
    suffix: Optional[str],
) -> dict[str, object | None]:
    """The store changes the slash options ask for (None: clear a setting), checked."""
    changes: dict[str, object | None] = {}
    if count is not None:
        if not 1 <= count <= MAX_IMAGES:
            raise UserError(f"The `count` option must be between 1 and {MAX_IMAGES}.")
        changes["count"] = count
    if aspect is not None:
        w, h = parse_aspect("The `aspect` option", aspect)
        changes["aspect"] = f"{w}:{h}"
    if sampler is not None:
        if sampler != OWN_SAMPLER and sampler not in SAMPLER_LABELS:
            raise UserError(f"The `sampler` option must be one of {', '.join(SAMPLER_NAMES)}.")
        changes["sampler"] = None if sampler == OWN_SAMPLER else sampler
    for name, value in (("negative", negative), ("suffix", suffix)):
        text = _text(name, value)
        if text is not None:
            changes[name] = text or None
    return changes


def settings_text(
    settings: PromptSettings,
    *,
    guild: bool,
    models: Optional[ModelSet] = None,
    video_default: Optional[int] = None,
) -> str:
    """The current values, one per line (a guild's models too, when the bot has several, and its
    video cost when `video_default`, the bot's VIDEO_COST, is given)."""

    def shown(value: object | None, unset: str) -> str:
        return unset if value is None else f"`{quote(str(value))}`"

    sampler = SAMPLER_LABELS.get(settings.sampler or "", None)
    lines = ["**This server's defaults**" if guild else "**Your settings here**"]
    if not guild:
        lines.append(f"Remix: **{'on' if settings.remix else 'off'}**")
    lines += [
        f"Images per prompt: {shown(settings.count, 'not set (1)')}",
        f"Aspect: {shown(settings.aspect, 'not set (1:1)')}",
        f"Negative prompt: {shown(settings.negative, 'none')}",
        f"Sampler: {shown(sampler, 'the model’s own')}",
        f"Style suffix: {shown(settings.suffix, 'none')}",
    ]
    if guild and models is not None and len(models.choices) > 1:
        ours = models.for_guild(settings.model, settings.models)
        lines += [
            f"Default model: `{ours.default}`",
            f"Models offered: {', '.join(f'`{n}`' for n in ours.offered)}",
        ]
    if guild and video_default is not None:
        cost = video_cost(settings, video_default)
        whose = " (the bot's default)" if settings.video_cost is None else ""
        lines.append(f"Video cost: {cost} image{'s' if cost != 1 else ''}{whose}")
    if not guild:
        lines.append(
            "-# What wins: a slash option, an inline flag, your settings, the server's, the model's."
        )
    return "\n".join(lines)


SETTINGS_TEMPLATE = (
    r"settings:(?P<scope>[mg]):(?P<owner>[0-9]{1,20}):(?P<field>remix|reset|count|aspect|sampler)"
)
"""A panel control's custom id: whose settings (m: the member's, g: the guild's), who opened the
panel, and which control. It carries all a click needs, so the panel works after a restart."""


class SettingsControl(discord.ui.DynamicItem[Any], template=SETTINGS_TEMPLATE):
    """One button or select of a settings panel (persistent: the custom id says what it changes)."""

    def __init__(self, item: Any, scope: str, owner_id: int, field: str) -> None:
        super().__init__(item)
        self.scope, self.owner_id, self.field = scope, owner_id, field

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> "SettingsControl":
        return cls(item, match["scope"], int(match["owner"]), match["field"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        if interaction.user.id != self.owner_id:
            await interaction.response.send_message("These settings aren't yours.", ephemeral=True)
            return
        services: Services = interaction.client.services
        if interaction.guild_id is None:
            return
        user_id = self.owner_id if self.scope == "m" else None
        panel = await SettingsPanel(services, interaction.guild_id, user_id, self.owner_id).load()
        data: Mapping[str, Any] = interaction.data or {}
        values = [str(v) for v in data.get("values", [])]
        await panel.apply(interaction, panel.changes_for(self.field, values[0] if values else None))


class SettingsPanel(discord.ui.View):
    """The private panel: selects for count, aspect and sampler, buttons for Remix and Reset."""

    def __init__(self, services: Services, guild_id: int, user_id: Optional[int], owner_id: int) -> None:
        super().__init__(timeout=None)
        self.services, self.guild_id, self.user_id, self.owner_id = services, guild_id, user_id, owner_id
        self.settings = PromptSettings()

    def _control(self, item: Any, field: str) -> SettingsControl:
        scope = "g" if self.user_id is None else "m"
        item.custom_id = f"settings:{scope}:{self.owner_id}:{field}"
        return SettingsControl(item, scope, self.owner_id, field)

    async def load(self) -> "SettingsPanel":
        """Read the current values and lay the components out for them."""
        view = await self.services.store.prompt_settings(self.guild_id, self.user_id or self.owner_id)
        self.settings = view.guild if self.user_id is None else view.member
        self.clear_items()
        s = self.settings
        if self.user_id is not None:
            remix = discord.ui.Button[Any](
                label=f"Remix: {'on' if s.remix else 'off'}",
                style=discord.ButtonStyle.success if s.remix else discord.ButtonStyle.secondary,
            )
            self.add_item(self._control(remix, "remix"))
        reset = discord.ui.Button[Any](label="Reset", style=discord.ButtonStyle.danger)
        self.add_item(self._control(reset, "reset"))
        choices = {
            "count": [(f"{n} image{'s' if n > 1 else ''}", str(n)) for n in range(1, MAX_IMAGES + 1)],
            "aspect": [(a, a) for a in ASPECT_CHOICES],
            "sampler": [("The model's own", OWN_SAMPLER), *((SAMPLER_LABELS[n], n) for n in SAMPLER_NAMES)],
        }
        current = {"count": str(s.count or ""), "aspect": s.aspect or "", "sampler": s.sampler or OWN_SAMPLER}
        for name, options in choices.items():
            select = discord.ui.Select[Any](
                placeholder=f"Default {name}",
                options=[
                    discord.SelectOption(label=label, value=value, default=value == current[name])
                    for label, value in options
                ],
            )
            self.add_item(self._control(select, name))
        return self

    def changes_for(self, field: str, value: Optional[str]) -> dict[str, object | None]:
        """What a click on `field` (with a select's `value`) changes; {} resets."""
        if field == "remix":
            return {"remix": not self.settings.remix}
        if field == "reset" or value is None:
            return {}
        return changes_of(
            int(value) if field == "count" else None,
            value if field == "aspect" else None,
            None,
            value if field == "sampler" else None,
            None,
        )

    async def apply(self, interaction: discord.Interaction[Any], changes: dict[str, object | None]) -> None:
        """Store `changes` ({}: reset) and redraw the panel in place."""
        if self.user_id is None:
            require_manage_guild(interaction)
        if changes:
            await self.services.store.set_prompt_settings(self.guild_id, self.user_id, changes)
        else:
            await self.services.store.reset_prompt_settings(self.guild_id, self.user_id)
        await self.load()
        bot = self.services.settings
        text = settings_text(
            self.settings, guild=self.user_id is None, models=bot.model_set, video_default=bot.video_cost
        )
        await interaction.response.edit_message(content=text, view=self)


async def show_panel(
    services: Services,
    interaction: discord.Interaction[Any],
    user_id: Optional[int],
    changes: dict[str, object | None],
    reset: bool,
) -> None:
    """Apply `changes` (or the reset), then answer privately with the panel."""
    guild_id = interaction.guild_id
    if guild_id is None:
        raise UserError("Settings belong to a server: use this command in one.")
    if reset:
        await services.store.reset_prompt_settings(guild_id, user_id)
    if changes:
        await services.store.set_prompt_settings(guild_id, user_id, changes)
    panel = await SettingsPanel(services, guild_id, user_id, interaction.user.id).load()
    bot = services.settings
    text = settings_text(
        panel.settings, guild=user_id is None, models=bot.model_set, video_default=bot.video_cost
    )
    await interaction.response.send_message(text, view=panel, ephemeral=True)


_DESCRIBE = {
    "count": "Images per prompt (1–4)",
    "aspect": "Width:height",
    "negative": f"Negative prompt added when you give none (`{CLEAR}` clears it)",
    "sampler": "Sampler",
    "suffix": f"Style text added to every prompt (`{CLEAR}` clears it)",
    "reset": "Clear every setting first",
}
_ASPECTS = [app_commands.Choice(name=a, value=a) for a in ASPECT_CHOICES]
_SAMPLERS = [app_commands.Choice(name="the model's own", value=OWN_SAMPLER)] + [
    app_commands.Choice(name=SAMPLER_LABELS[n], value=n) for n in SAMPLER_NAMES
]


def settings_commands(services: Services) -> list[app_commands.Command[Any, Any, None]]:
    """`/settings` for every member and `/server-defaults` for Manage Server members."""

    @app_commands.command(name="settings", description="Your own defaults and Remix (private)")
    @app_commands.guild_only()
    @app_commands.describe(remix="Remix: edit the prompt before variations and rerolls run", **_DESCRIBE)
    @app_commands.choices(aspect=_ASPECTS, sampler=_SAMPLERS)
    async def settings(
        interaction: discord.Interaction[Any],
        remix: Optional[bool] = None,
        count: Optional[Range[int, 1, 4]] = None,
        aspect: Optional[app_commands.Choice[str]] = None,
        negative: Optional[Range[str, 1, MAX_TEXT]] = None,
        sampler: Optional[app_commands.Choice[str]] = None,
        suffix: Optional[Range[str, 1, MAX_TEXT]] = None,
        reset: bool = False,
    ) -> None:
        changes = changes_of(count, _value(aspect), negative, _value(sampler), suffix)
        if remix is not None:
            changes["remix"] = remix
        await show_panel(services, interaction, interaction.user.id, changes, reset)

    model_set = services.settings.model_set
    offered_example = ",".join(model_set.names[:2])
    model_choices = [app_commands.Choice(name="the bot's default", value=CLEAR)] + [
        app_commands.Choice(name=n[:100], value=n[:100]) for n in model_set.names[:24]
    ]

    @app_commands.command(name="server-defaults", description="This server's prompt defaults (Manage Server)")
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.describe(
        model="The model a prompt without --model runs on",
        models=f"The models members may choose, e.g. `{offered_example}` (`{CLEAR}`: all)"[:100],
        video_cost=f"Images of a member's quota one video (Animate) spends "
        f"(`{CLEAR_COST}`: the bot's default)",
        **_DESCRIBE,
    )
    @app_commands.choices(aspect=_ASPECTS, sampler=_SAMPLERS, model=model_choices)
    async def server_defaults(
        interaction: discord.Interaction[Any],
        count: Optional[Range[int, 1, 4]] = None,
        aspect: Optional[app_commands.Choice[str]] = None,
        negative: Optional[Range[str, 1, MAX_TEXT]] = None,
        sampler: Optional[app_commands.Choice[str]] = None,
        suffix: Optional[Range[str, 1, MAX_TEXT]] = None,
        model: Optional[app_commands.Choice[str]] = None,
        models: Optional[Range[str, 1, MAX_TEXT]] = None,
        video_cost: Optional[Range[int, CLEAR_COST, MAX_VIDEO_COST]] = None,
        reset: bool = False,
    ) -> None:
        require_manage_guild(interaction)
        changes = changes_of(count, _value(aspect), negative, _value(sampler), suffix)
        changes |= video_cost_changes(video_cost)
        if model is not None or models is not None:
            assert interaction.guild_id is not None  # guild_only
            view = await services.store.prompt_settings(interaction.guild_id, interaction.user.id)
            current = PromptSettings() if reset else view.guild
            changes |= model_changes(model_set, current, _value(model), models)
        await show_panel(services, interaction, None, changes, reset)

    return [settings, server_defaults]
