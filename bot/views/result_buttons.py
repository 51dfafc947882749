"""The bot's buttons: `DynamicItem` templates whose custom_id carries the job, so they work after a
restart (registered with `Bot.add_dynamic_items`). Clicks go to the bot's `ButtonActions`."""

from __future__ import annotations

import contextlib
import io
import re
from typing import Any, Protocol

import discord
from PIL import Image

from bot.views.custom_ids import (
    INDEXED_TEMPLATE,
    JOB_TEMPLATE,
    PROMPT_TEMPLATE,
    Action,
    ButtonRef,
    make_custom_id,
)
from bot.views.edit_buttons import EDIT_ROWS, edit_items, second_model_items
from generation.families.features import Features
from jobs.delivery import ResultPost, SecondModel

EXTEND_LABEL = "Extend"
REROLL_EMOJI = "🔄"
INFO_EMOJI = "📋"
DELETE_EMOJI = "🗑️"
CANCEL_LABEL = "Cancel"


class ButtonActions(Protocol):
    """What a click calls (`bot.commands.result_actions.ResultActions`)."""

    async def on_result_button(self, interaction: discord.Interaction[Any], ref: ButtonRef) -> None: ...

    async def on_prompt_button(self, interaction: discord.Interaction[Any], index: int) -> None: ...


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
        row = 0 if ref.action is Action.UPSCALE else 1
        super().__init__(discord.ui.Button(label=label, style=style, custom_id=make_custom_id(ref), row=row))
        self.ref = ref

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> ImageButton:
        return cls(ButtonRef(Action(match["action"]), match["job"], int(match["index"]) - 1))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await _actions(interaction).on_result_button(interaction, self.ref)


# action → (emoji, label, style, row) of the buttons on a whole job
_JOB_BUTTON_LOOKS: dict[Action, tuple[str | None, str | None, discord.ButtonStyle, int]] = {
    Action.REROLL: (REROLL_EMOJI, None, discord.ButtonStyle.secondary, 0),
    Action.INFO: (INFO_EMOJI, None, discord.ButtonStyle.secondary, 2),
    Action.DELETE: (DELETE_EMOJI, None, discord.ButtonStyle.secondary, 2),
    Action.CANCEL: (None, CANCEL_LABEL, discord.ButtonStyle.danger, 0),
    Action.EXTEND: (None, EXTEND_LABEL, discord.ButtonStyle.primary, 0),
}


class JobButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=JOB_TEMPLATE):
    """🔄 (same settings, new seeds), 📋 (the job's parameters), 🗑️ (delete the result), `Extend` (a
    clip), and `Cancel` on a progress message."""

    def __init__(self, ref: ButtonRef) -> None:
        emoji, label, style, row = _JOB_BUTTON_LOOKS[ref.action]
        super().__init__(
            discord.ui.Button(emoji=emoji, label=label, style=style, custom_id=make_custom_id(ref), row=row)
        )
        self.ref = ref

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> JobButton:
        return cls(ButtonRef(Action(match["action"]), match["job"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await _actions(interaction).on_result_button(interaction, self.ref)


def result_view(
    job_id: str,
    image_count: int,
    *,
    square: bool = True,
    features: Features | None = None,
    second_models: frozenset[SecondModel] = frozenset(),
    video: bool = False,
) -> discord.ui.View:
    """U1..Un and 🔄 on the first row, V1..Vn on the second, 📋 🗑️ on the third (n = images shown).
    A one-image result has the edit buttons (`bot.views.edit_buttons`) on top, U1 🔄 V1 📋 🗑️ below
    them, and last the buttons of the `second_models` set (Animate: VIDEO_MODEL; Edit: EDIT_MODEL);
    `square` says whether its picture is square (no `Make Square` then). Only what the picture's
    model can run is shown (`features`): no U/V without image-to-image, no edit buttons without the
    edit loop. A clip (`video`) has `Extend`, 📋 and 🗑️."""
    able = features or Features()
    view = discord.ui.View(timeout=None)
    if video:
        for action in (Action.EXTEND, Action.INFO, Action.DELETE):
            view.add_item(JobButton(ButtonRef(action, job_id)))
        return view
    if image_count == 1:
        if able.image and able.edits:
            for edit in edit_items(job_id, square=square):
                view.add_item(edit)
        below: list[discord.ui.Item[Any]] = [
            *([ImageButton(ButtonRef(Action.UPSCALE, job_id, 0))] if able.image else []),
            JobButton(ButtonRef(Action.REROLL, job_id)),
            *([ImageButton(ButtonRef(Action.VARIATION, job_id, 0))] if able.image else []),
            JobButton(ButtonRef(Action.INFO, job_id)),
            JobButton(ButtonRef(Action.DELETE, job_id)),
        ]
        for item in below:
            item.row = EDIT_ROWS
            view.add_item(item)
        for item in second_model_items(job_id, second_models):
            view.add_item(item)
        return view
    for i in range(image_count if able.image else 0):
        view.add_item(ImageButton(ButtonRef(Action.UPSCALE, job_id, i)))
    view.add_item(JobButton(ButtonRef(Action.REROLL, job_id)))
    for i in range(image_count if able.image else 0):
        view.add_item(ImageButton(ButtonRef(Action.VARIATION, job_id, i)))
    view.add_item(JobButton(ButtonRef(Action.INFO, job_id)))
    view.add_item(JobButton(ButtonRef(Action.DELETE, job_id)))
    return view


def post_view(post: ResultPost) -> discord.ui.View:
    """The buttons of a result post: `result_view`, told from its one picture whether it is square."""
    square = True
    if post.image_count == 1 and post.files and not post.video:
        # a header Pillow can't read: no Make Square
        with contextlib.suppress(Exception), Image.open(io.BytesIO(post.files[0].data)) as picture:
            square = picture.width == picture.height
    return result_view(
        post.job_id,
        post.image_count,
        square=square,
        features=post.features,
        second_models=post.second_models,
        video=post.video,
    )


def progress_view(job_id: str) -> discord.ui.View:
    """`Cancel`, on the message that shows a job's queue position and progress."""
    view = discord.ui.View(timeout=None)
    view.add_item(JobButton(ButtonRef(Action.CANCEL, job_id)))
    return view


class PromptButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=PROMPT_TEMPLATE):
    """`Imagine 1`–`Imagine 4` under a `/describe` answer: draws that line's prompt for the clicker."""

    def __init__(self, index: int) -> None:
        super().__init__(
            discord.ui.Button(
                label=f"Imagine {index}", style=discord.ButtonStyle.primary, custom_id=f"imagine:p:{index}"
            )
        )
        self.index = index

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> PromptButton:
        return cls(int(match["index"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await _actions(interaction).on_prompt_button(interaction, self.index)


def prompts_view(count: int) -> discord.ui.View:
    """`Imagine 1`…`Imagine {count}`, one row."""
    view = discord.ui.View(timeout=None)
    for index in range(1, count + 1):
        view.add_item(PromptButton(index))
    return view
