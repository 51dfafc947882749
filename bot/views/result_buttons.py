"""The result buttons: `DynamicItem` templates whose custom_id carries the job, so they work after a
restart (registered with `Bot.add_dynamic_items`). Clicks go to the bot's `ButtonActions`."""

from __future__ import annotations

import re
from typing import Any, Protocol

import discord

from bot.views.custom_ids import INDEXED_TEMPLATE, REROLL_TEMPLATE, Action, ButtonRef, make_custom_id

REROLL_EMOJI = "🔄"


class ButtonActions(Protocol):
    """What a click calls (the buttons cog)."""

    async def on_result_button(self, interaction: discord.Interaction[Any], ref: ButtonRef) -> None: ...


def _actions(interaction: discord.Interaction[Any]) -> ButtonActions:
    actions = getattr(interaction.client, "button_actions", None)
    if actions is None:
        raise RuntimeError("the bot has no button handler")
    return actions  # type: ignore[no-any-return]


class ImageButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=INDEXED_TEMPLATE):
    """U1–U4 (upscale) and V1–V4 (variation)."""

    def __init__(self, ref: ButtonRef) -> None:
        label = f"{ref.action.value.upper()}{ref.index + 1}"
        style = discord.ButtonStyle.primary if ref.action is Action.UPSCALE else discord.ButtonStyle.secondary
        super().__init__(
            discord.ui.Button(label=label, style=style, custom_id=make_custom_id(ref), row=_row(ref.action))
        )
        self.ref = ref

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> ImageButton:
        return cls(ButtonRef(Action(match["action"]), match["job"], int(match["index"]) - 1))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await _actions(interaction).on_result_button(interaction, self.ref)


class RerollButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=REROLL_TEMPLATE):
    """🔄: same settings, new seeds."""

    def __init__(self, job_id: str) -> None:
        ref = ButtonRef(Action.REROLL, job_id)
        super().__init__(
            discord.ui.Button(
                emoji=REROLL_EMOJI, style=discord.ButtonStyle.secondary, custom_id=make_custom_id(ref), row=0
            )
        )
        self.ref = ref

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> RerollButton:
        return cls(match["job"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await _actions(interaction).on_result_button(interaction, self.ref)


def _row(action: Action) -> int:
    return 0 if action is Action.UPSCALE else 1


def result_view(job_id: str, image_count: int) -> discord.ui.View:
    """U1..Un, 🔄 on the first row, V1..Vn on the second (n = images in the result)."""
    view = discord.ui.View(timeout=None)
    for i in range(image_count):
        view.add_item(ImageButton(ButtonRef(Action.UPSCALE, job_id, i)))
    view.add_item(RerollButton(job_id))
    for i in range(image_count):
        view.add_item(ImageButton(ButtonRef(Action.VARIATION, job_id, i)))
    return view
