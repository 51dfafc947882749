"""The modals of the edit loop: `Vary (Region)` (which part, an optional mask, the prompt), `Custom
Zoom` (a factor and the prompt), Remix (the prompt and its flags) and `Edit` (an instruction). Each
hands what was submitted to a callback (`bot.commands.edit_actions`, `bot.commands.edit_words`); none
holds state beyond the open modal (a modal ends with its interaction token, 15 minutes)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import discord

from generation.prompts.edits import REGION_NAMES

MODAL_TIMEOUT_S = 15 * 60  # as long as the click's interaction token lives
PROMPT_MAX = 4000  # Discord's most for a text input
INSTRUCTION_MAX = 1000  # characters of an `Edit` instruction (`/edit` takes as many)
DESCRIPTION_MAX = 100  # Discord's most for a label's description


@dataclass(frozen=True)
class Submitted:
    """What a member sent back: the prompt text, and (per modal) a zoom factor, parts and a mask."""

    prompt: str
    zoom: str | None = None
    regions: tuple[str, ...] = ()
    mask: discord.Attachment | None = None


OnSubmit = Callable[[discord.Interaction[Any], Submitted], Awaitable[None]]


def _prompt_input(prefill: str) -> discord.ui.TextInput[Any]:
    return discord.ui.TextInput(
        custom_id="prompt",
        style=discord.TextStyle.paragraph,
        default=prefill[:PROMPT_MAX],
        max_length=PROMPT_MAX,
        required=True,
    )


class _EditModal(discord.ui.Modal):
    def __init__(self, title: str, on_submit: OnSubmit) -> None:
        super().__init__(title=title, timeout=MODAL_TIMEOUT_S)
        self._on_submit = on_submit

    def submitted(self) -> Submitted:
        raise NotImplementedError

    async def on_submit(self, interaction: discord.Interaction[Any]) -> None:
        await self._on_submit(interaction, self.submitted())


class RemixModal(_EditModal):
    """Remix: the prompt and its flags, pre-filled; what is submitted runs."""

    def __init__(self, prefill: str, on_submit: OnSubmit, *, title: str = "Remix") -> None:
        super().__init__(title, on_submit)
        self.prompt = _prompt_input(prefill)
        self.add_item(discord.ui.Label(text="Prompt", component=self.prompt))

    def submitted(self) -> Submitted:
        return Submitted(self.prompt.value)


class ZoomModal(_EditModal):
    """`Custom Zoom`: a factor (1 < F ≤ 2) and the prompt, pre-filled."""

    def __init__(self, prefill: str, on_submit: OnSubmit) -> None:
        super().__init__("Custom Zoom", on_submit)
        self.zoom = discord.ui.TextInput[Any](
            custom_id="zoom", default="2", placeholder="1.5", min_length=1, max_length=8, required=True
        )
        self.prompt = _prompt_input(prefill)
        self.add_item(
            discord.ui.Label(text="Zoom factor", description="More than 1, at most 2", component=self.zoom)
        )
        self.add_item(discord.ui.Label(text="Prompt", component=self.prompt))

    def submitted(self) -> Submitted:
        return Submitted(self.prompt.value, zoom=self.zoom.value)


class RegionModal(_EditModal):
    """`Vary (Region)`: which parts of the 3×3 grid, an optional mask picture and the prompt."""

    def __init__(self, prefill: str, on_submit: OnSubmit) -> None:
        super().__init__("Vary (Region)", on_submit)
        self.regions = discord.ui.Select[Any](
            custom_id="regions",
            placeholder="Which part to redraw",
            options=[discord.SelectOption(label=name, value=name) for name in REGION_NAMES],
            min_values=0,
            max_values=len(REGION_NAMES),
            required=False,
        )
        self.mask = discord.ui.FileUpload[Any](custom_id="mask", required=False, max_values=1)
        self.prompt = _prompt_input(prefill)
        self.add_item(discord.ui.Label(text="Part to redraw", component=self.regions))
        self.add_item(
            discord.ui.Label(text="Mask (optional)", description="White = redraw", component=self.mask)
        )
        self.add_item(discord.ui.Label(text="Prompt", component=self.prompt))

    def submitted(self) -> Submitted:
        mask = self.mask.values[0] if self.mask.values else None
        return Submitted(self.prompt.value, regions=tuple(self.regions.values), mask=mask)


class InstructModal(_EditModal):
    """`Edit`: what to change, in words (empty at first); the picture's prompt shown above it."""

    def __init__(self, prompt: str, on_submit: OnSubmit) -> None:
        super().__init__("Edit", on_submit)
        self.instruction = discord.ui.TextInput[Any](
            custom_id="instruction",
            style=discord.TextStyle.paragraph,
            placeholder="make it winter",
            max_length=INSTRUCTION_MAX,
            required=True,
        )
        shown = f"Its prompt: {prompt}"
        if len(shown) > DESCRIPTION_MAX:
            shown = shown[: DESCRIPTION_MAX - 1] + "…"
        self.add_item(discord.ui.Label(text="What to change", description=shown, component=self.instruction))

    def submitted(self) -> Submitted:
        return Submitted(self.instruction.value)
