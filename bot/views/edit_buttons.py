"""The buttons of a one-image result (PRODUCT.md "Working on one picture"): Vary, Zoom Out, pan,
Make Square and Upscale (and, where VIDEO_MODEL is set, Animate; where EDIT_MODEL is, Edit), as
`DynamicItem`s whose custom id carries the job, so they work after a restart. Clicks go to the bot's
`ButtonActions.on_result_button` like every result button."""

from __future__ import annotations

import re
from typing import Any

import discord

from bot.views.custom_ids import (
    ANIMATE_BUTTONS,
    EDIT_TEMPLATE,
    SECOND_MODEL_BUTTONS,
    Action,
    ButtonRef,
    EditButton,
    make_custom_id,
)
from jobs.delivery import SecondModel

# edit → (label, emoji, row) on the result; labels are PRODUCT.md's (outside tests click by them)
EDIT_BUTTON_LOOKS: dict[EditButton, tuple[str | None, str | None, int]] = {
    EditButton.VARY_SUBTLE: ("Vary (Subtle)", None, 0),
    EditButton.VARY_STRONG: ("Vary (Strong)", None, 0),
    EditButton.VARY_REGION: ("Vary (Region)", None, 0),
    EditButton.UPSCALE_SUBTLE: ("Upscale (Subtle)", None, 0),
    EditButton.UPSCALE_CREATIVE: ("Upscale (Creative)", None, 0),
    EditButton.ZOOM_2X: ("Zoom Out 2x", None, 1),
    EditButton.ZOOM_15X: ("Zoom Out 1.5x", None, 1),
    EditButton.CUSTOM_ZOOM: ("Custom Zoom", None, 1),
    EditButton.MAKE_SQUARE: ("Make Square", None, 1),
    EditButton.PAN_LEFT: (None, "⬅️", 2),
    EditButton.PAN_RIGHT: (None, "➡️", 2),
    EditButton.PAN_UP: (None, "⬆️", 2),
    EditButton.PAN_DOWN: (None, "⬇️", 2),
    EditButton.ANIMATE_LOW: ("Animate (Low motion)", None, 4),
    EditButton.ANIMATE_HIGH: ("Animate (High motion)", None, 4),
    EditButton.INSTRUCT: ("Edit", None, 4),
}
EDIT_ROWS = 3  # the rows the edit buttons fill; a one-image result's other buttons go below them


class EditItem(discord.ui.DynamicItem[discord.ui.Button[Any]], template=EDIT_TEMPLATE):
    """One edit of a one-image result."""

    def __init__(self, ref: ButtonRef) -> None:
        assert ref.edit is not None
        label, emoji, row = EDIT_BUTTON_LOOKS[ref.edit]
        style = discord.ButtonStyle.primary if row == 0 else discord.ButtonStyle.secondary
        button = discord.ui.Button[Any](
            label=label, emoji=emoji, style=style, custom_id=make_custom_id(ref), row=row
        )
        super().__init__(button)
        self.ref = ref

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> EditItem:
        return cls(ButtonRef(Action.EDIT, match["job"], edit=EditButton(match["edit"])))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        actions = getattr(interaction.client, "button_actions", None)
        if actions is None:
            raise RuntimeError("the bot has no button handler")
        await actions.on_result_button(interaction, self.ref)


def edit_items(job_id: str, *, square: bool) -> list[EditItem]:
    """The edit buttons for a one-image result, in their rows (`Make Square` only when not square)."""
    edits = [
        e
        for e in EDIT_BUTTON_LOOKS
        if e not in SECOND_MODEL_BUTTONS and not (square and e is EditButton.MAKE_SQUARE)
    ]
    return [EditItem(ButtonRef(Action.EDIT, job_id, edit=edit)) for edit in edits]


SECOND_MODEL_OF: dict[EditButton, SecondModel] = {
    **dict.fromkeys(ANIMATE_BUTTONS, SecondModel.ANIMATE),
    EditButton.INSTRUCT: SecondModel.EDIT,
}


def second_model_items(job_id: str, second_models: frozenset[SecondModel]) -> list[EditItem]:
    """The buttons of the second models set (`Animate (Low motion)`/`(High motion)`: VIDEO_MODEL;
    `Edit`: EDIT_MODEL), on the last row of a one-image result."""
    return [
        EditItem(ButtonRef(Action.EDIT, job_id, edit=edit))
        for edit in EDIT_BUTTON_LOOKS
        if edit in SECOND_MODEL_OF and SECOND_MODEL_OF[edit] in second_models
    ]
