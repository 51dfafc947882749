"""The edit loop's clicks and modals (PRODUCT.md "Working on one picture", Remix).

An edit button on a one-image result either runs at once or first opens a modal: `Vary (Region)`
and `Custom Zoom` always; with the clicker's Remix on, the Vary, zoom and pan buttons (and `V1`–`V4`,
`🔄`, see `bot.commands.result_actions`) open the Remix modal. What is submitted is parsed as
`/imagine` parses a prompt, checked against the server's blocklist, and runs on the clicker's quota
like any job (a `NewJob` with the parent's id; its source picture in the image store)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import discord
from PIL import Image

from bot.commands.derive import (
    button_spec,
    check_model_runs,
    check_parent,
    derive_edit,
    original_count,
    parent_request,
    source_bytes,
)
from bot.commands.errors import UserError, reporting, require_post_permissions, send_private
from bot.commands.imagine import random_seed, refuse_unqueueable
from bot.commands.reference_pictures import store_pending_references
from bot.formatting import refusal_text
from bot.services import Services
from bot.views.custom_ids import ButtonRef, EditButton
from bot.views.edit_modals import RegionModal, RemixModal, Submitted, ZoomModal
from generation.media.canvas import SizeCap, canvas_size, with_redraw_mask
from generation.media.image_store import decode_image, load_source
from generation.prompts.command import parse_command
from generation.prompts.edits import parse_zoom
from generation.prompts.remix import gives_shape, remix_text, remixed, split_zoom_flag
from generation.prompts.request import GenerationRequest, PromptOptions
from storage.interface import JobRecord, Refusal, Reservation

REMIXABLE = frozenset(
    {
        EditButton.VARY_SUBTLE,
        EditButton.VARY_STRONG,
        EditButton.ZOOM_2X,
        EditButton.ZOOM_15X,
        EditButton.PAN_LEFT,
        EditButton.PAN_RIGHT,
        EditButton.PAN_UP,
        EditButton.PAN_DOWN,
    }
)
"""Edit buttons that open the Remix modal when the clicker has Remix on."""

Submit = Callable[
    [discord.Interaction[Any], JobRecord, GenerationRequest, int | None], Awaitable[Reservation | Refusal]
]
"""Reserve and queue a derived job for the clicker (`ResultActions.submit_derived`)."""


class EditActions:
    """Edit buttons, their modals, and Remix's parsing (shared with V1–V4 and 🔄)."""

    def __init__(self, services: Services, submit: Submit) -> None:
        self.services = services
        self._submit = submit

    async def remix_on(self, interaction: discord.Interaction[Any]) -> bool:
        """Whether the clicker has Remix on in this server."""
        if interaction.guild_id is None:
            return False
        view = await self.services.store.prompt_settings(interaction.guild_id, interaction.user.id)
        return bool(view.member.remix)

    async def on_click(self, interaction: discord.Interaction[Any], ref: ButtonRef) -> None:
        """An edit button: open its modal, or run it."""
        assert ref.edit is not None
        button = ref.edit
        parent = await self._parent(interaction, ref)
        prefill = remix_text(parent_request(parent))

        @reporting
        async def submitted(modal_interaction: discord.Interaction[Any], sent: Submitted) -> None:
            await self.run(modal_interaction, ref, sent)

        if button is EditButton.VARY_REGION:
            await interaction.response.send_modal(RegionModal(prefill, submitted))
        elif button is EditButton.CUSTOM_ZOOM:
            await interaction.response.send_modal(ZoomModal(prefill, submitted))
        elif button in REMIXABLE and await self.remix_on(interaction):
            await interaction.response.send_modal(RemixModal(prefill, submitted))
        else:
            await self.run(interaction, ref, None)

    async def run(
        self, interaction: discord.Interaction[Any], ref: ButtonRef, sent: Submitted | None
    ) -> None:
        """Make the edit's job: from the button alone, or with what a modal sent."""
        assert ref.edit is not None
        bot = self.services
        require_post_permissions(interaction)
        text, factor = split_zoom_flag(sent.prompt) if sent is not None else ("", None)
        if sent is not None and sent.zoom is not None and factor is None:
            factor = parse_zoom(sent.zoom)
        await interaction.response.defer(thinking=True)
        interaction.extras["public_defer"] = True
        parent = await self._parent(interaction, ref)
        model = parent_request(parent).model
        submitted = await self.parse_remix(interaction, text, model) if sent is not None else None
        if gives_shape(text):
            raise UserError(
                "`--ar` reshapes a variation or a reroll; an edit keeps its picture's shape "
                "(use Make Square, a pan or Zoom Out to change it)."
            )
        data = await asyncio.to_thread(source_bytes, parent, 0)
        picture = await asyncio.to_thread(load_source, data)
        mask_digest = None
        if sent is not None and sent.mask is not None:
            data, mask_digest = await self._carry_mask(interaction, picture, sent.mask)
        regions = sent.regions if sent is not None else ()
        spec = button_spec(ref.edit, parent.job_id, factor=factor, regions=regions, mask_image=mask_digest)
        # the picture's own model decides the canvas: its native size, cap and size step
        profile = bot.profiles().get(model, bot.backend.profile)
        size = canvas_size(spec, picture.size, SizeCap.for_profile(profile))
        count = await original_count(bot.store, parent)
        digest = await asyncio.to_thread(bot.image_store.put, data)
        request = derive_edit(parent, spec, digest, size, count)
        if submitted is not None:
            request = await store_pending_references(bot, interaction, remixed(request, submitted))
        outcome = await self._submit(interaction, parent, request, 0)
        if isinstance(outcome, Refusal):
            await send_private(interaction, refusal_text(outcome, request.count))

    async def parse_remix(
        self, interaction: discord.Interaction[Any], text: str, model: str
    ) -> GenerationRequest:
        """The submitted Remix text as `/imagine` parses it for the picture's `model` (macros apply;
        the member's defaults were already written into it), refused as `/imagine` refuses: bad
        input, or a blocked word."""
        bot = self.services
        assert interaction.guild_id is not None
        view = await bot.store.prompt_settings(interaction.guild_id, interaction.user.id)
        requests = parse_command(
            text,
            PromptOptions(),
            replace(bot.backend.profile, name=model),
            count_tokens=bot.backend.count_tokens,
            random_seed=random_seed,
            macros=view.macros,
            models=bot.settings.model_set.names,
            loras=bot.loras.names(),
            profiles=bot.profiles(),
            counters=bot.counters(),
        )
        if len(requests) != 1:
            raise UserError(f"Remix runs one prompt; that text makes {len(requests)} jobs.")
        await refuse_unqueueable(bot, interaction.guild_id, requests)
        return requests[0]

    async def _parent(self, interaction: discord.Interaction[Any], ref: ButtonRef) -> JobRecord:
        parent = check_parent(await self.services.store.get_job(ref.job_id), interaction.guild_id, ref)
        check_model_runs(self.services.runner.features_of(parent_request(parent).model), ref.action)
        if len(parent.image_paths) != 1:
            raise UserError("Those buttons work on a result with one picture.")
        return parent

    async def _carry_mask(
        self, interaction: discord.Interaction[Any], picture: Image.Image, mask: discord.Attachment
    ) -> tuple[bytes, str]:
        """The picture with the member's mask in its alpha (`with_redraw_mask`), and the mask's digest."""
        if mask.size > interaction.filesize_limit:
            raise UserError("That mask is larger than this server's upload limit.")
        mask_bytes = await mask.read()
        mask_image = await asyncio.to_thread(decode_image, mask_bytes)
        carried = with_redraw_mask(picture, mask_image)
        buffer = io.BytesIO()
        await asyncio.to_thread(carried.save, buffer, "PNG")
        digest = await asyncio.to_thread(self.services.image_store.put, mask_bytes)
        return buffer.getvalue(), digest
