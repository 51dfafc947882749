"""Edit in words (PRODUCT.md "Pictures as prompts"): `Edit` on a one-image result opens a modal for an
instruction ("make it winter"); `/edit image: instruction:` does the same to a member's own picture.
Each is a one-image job on the instruction-editing model (`EDIT_MODEL`: Flux Kontext and the like,
loaded on first use by the engine pool) at the picture's size, on the clicker's quota. Without
EDIT_MODEL there is no `Edit` button and `/edit` says it is not set up."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import discord
from discord import app_commands

from bot.commands.derive import check_parent, parent_request
from bot.commands.errors import UserError, reporting, send_private
from bot.commands.imagine import refuse_blocked_words
from bot.commands.picture_jobs import own_picture, picture_size_of, result_picture, submit_own_picture_job
from bot.formatting import refusal_text
from bot.services import Services
from bot.views.custom_ids import ButtonRef
from bot.views.edit_modals import INSTRUCTION_MAX, InstructModal, Submitted
from generation.prompts.request import GenerationRequest, instruct_of
from storage.interface import JobRecord, Refusal, Reservation

NOT_SET_UP = "Edit isn't set up on this bot (its admin sets `EDIT_MODEL`)."
EDIT_IMAGES = 1  # an edit spends one image of the quota

SubmitDerived = Callable[
    [discord.Interaction[Any], JobRecord, GenerationRequest, int | None, int],
    Awaitable[Reservation | Refusal],
]
"""`ResultActions.submit_derived`: reserve and queue a request made from a result, spending `images`."""


def checked_instruction(text: str) -> str:
    """The instruction stripped, or a UserError when it is empty or too long."""
    instruction = text.strip()
    if not instruction:
        raise UserError("Say what to change, e.g. “make it winter”.")
    if len(instruction) > INSTRUCTION_MAX:
        raise UserError(f"The instruction is {len(instruction)} characters; at most {INSTRUCTION_MAX}.")
    return instruction


class EditInWords:
    """The `Edit` button, its modal, and `/edit`, over the bot's services."""

    def __init__(self, services: Services, submit_derived: SubmitDerived | None = None) -> None:
        """`submit_derived`: how the button's jobs are reserved (`ResultActions.submit_derived`)."""
        self.services = services
        self._submit_derived = submit_derived

    def edit_model(self) -> str:
        """EDIT_MODEL, or a UserError saying Edit is not set up."""
        model = self.services.settings.edit_model
        if model is None:
            raise UserError(NOT_SET_UP)
        return model

    async def on_click(self, interaction: discord.Interaction[Any], ref: ButtonRef) -> None:
        """`Edit` on a one-image result: the modal that asks what to change."""
        self.edit_model()
        parent = check_parent(await self.services.store.get_job(ref.job_id), interaction.guild_id, ref)

        @reporting
        async def submitted(modal_interaction: discord.Interaction[Any], sent: Submitted) -> None:
            await self.run_on_result(modal_interaction, ref, sent.prompt)

        await interaction.response.send_modal(InstructModal(parent_request(parent).prompt, submitted))

    async def run_on_result(self, interaction: discord.Interaction[Any], ref: ButtonRef, text: str) -> None:
        """The result's picture changed as `text` says: a job on EDIT_MODEL for the clicker."""
        model = self.edit_model()
        instruction = checked_instruction(text)
        assert interaction.guild_id is not None and self._submit_derived is not None
        await refuse_blocked_words(self.services, interaction.guild_id, [instruction], "instruction")
        parent, data, digest = await result_picture(self.services, interaction, ref, "Edit")
        request = instruct_of(
            aspect=parent_request(parent).aspect,
            source_hash=digest,
            size=picture_size_of(data),
            instruction=instruction,
            edit_model=model,
            seed=secrets.randbelow(2**32),
        )
        outcome = await self._submit_derived(interaction, parent, request, 0, EDIT_IMAGES)
        if isinstance(outcome, Refusal):
            await send_private(interaction, refusal_text(outcome, EDIT_IMAGES))

    async def run(self, interaction: discord.Interaction[Any], image: discord.Attachment, text: str) -> None:
        """`/edit`: a member's own picture changed as `text` says."""
        model = self.edit_model()
        instruction = checked_instruction(text)
        if interaction.guild_id is None:
            raise UserError("`/edit` only works in a server channel.")
        await refuse_blocked_words(self.services, interaction.guild_id, [instruction], "instruction")
        picture, digest = await own_picture(self.services, interaction, image)
        request = instruct_of(
            source_hash=digest,
            size=picture.size,
            instruction=instruction,
            edit_model=model,
            seed=secrets.randbelow(2**32),
        )
        await submit_own_picture_job(self.services, interaction, request, EDIT_IMAGES)


def edit_commands(services: Services) -> list[app_commands.Command[Any, Any, None]]:
    """`/edit image: instruction:`."""
    actions = EditInWords(services)

    @app_commands.command(name="edit", description="Change a picture as your words say")
    @app_commands.describe(image="The picture to change", instruction="What to change, e.g. make it winter")
    @app_commands.guild_only()
    async def edit(
        interaction: discord.Interaction[Any],
        image: discord.Attachment,
        instruction: app_commands.Range[str, 1, INSTRUCTION_MAX],
    ) -> None:
        await actions.run(interaction, image, instruction)

    return [edit]
