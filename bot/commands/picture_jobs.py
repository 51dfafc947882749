"""What Animate and Edit share: a job made from one picture on a second model (VIDEO_MODEL, EDIT_MODEL),
either a one-image result's (its button) or a member's own attachment (`/animate`, `/edit`)."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import discord
from PIL import Image

from bot.commands.derive import check_parent, source_bytes
from bot.commands.errors import UserError, member_role_ids, require_post_permissions, send_private
from bot.commands.imagine import check_attachment
from bot.formatting import refusal_text
from bot.services import Services
from bot.views.custom_ids import ButtonRef, new_job_id
from generation.media.image_store import decode_image
from generation.prompts.request import GenerationRequest
from jobs.delivery import token_expiry
from storage.interface import JobRecord, NewJob, Refusal


def picture_size_of(data: bytes) -> tuple[int, int]:
    """A stored picture's width and height, from its header."""
    with Image.open(io.BytesIO(data)) as picture:
        return picture.size


async def result_picture(
    services: Services, interaction: discord.Interaction[Any], ref: ButtonRef, what: str
) -> tuple[JobRecord, bytes, str]:
    """The clicked one-image result (checked: this guild's), its picture's bytes and their hash in the
    image store, after deferring publicly. `what` names the action in the refusal of a grid."""
    assert interaction.guild_id is not None
    require_post_permissions(interaction)
    await interaction.response.defer(thinking=True)
    interaction.extras["public_defer"] = True
    parent = check_parent(await services.store.get_job(ref.job_id), interaction.guild_id, ref)
    if len(parent.image_paths) != 1:
        raise UserError(f"{what} works on a one-image result: upscale one picture first.")
    data = await asyncio.to_thread(source_bytes, parent, 0)
    digest = await asyncio.to_thread(services.image_store.put, data)
    return parent, data, digest


async def own_picture(
    services: Services, interaction: discord.Interaction[Any], image: discord.Attachment
) -> tuple[Image.Image, str]:
    """A member's attached picture (size and type checked, then decoded) and its hash in the image
    store, after deferring publicly."""
    if interaction.guild_id is None or interaction.channel_id is None:
        raise UserError("This command only works in a server channel.")
    require_post_permissions(interaction)
    limit = interaction.filesize_limit
    check_attachment(image, limit)
    await interaction.response.defer(thinking=True)
    interaction.extras["public_defer"] = True
    data = await image.read()
    if len(data) > limit:
        raise UserError("That picture is larger than this server's upload limit.")
    picture = await asyncio.to_thread(decode_image, data)
    digest = await asyncio.to_thread(services.image_store.put, data)
    return picture, digest


async def submit_own_picture_job(
    services: Services, interaction: discord.Interaction[Any], request: GenerationRequest, images: int
) -> None:
    """Queue `request` (made from the member's own picture: no parent job) on the member's quota,
    spending `images`; a refusal is said privately."""
    assert interaction.guild_id is not None and interaction.channel_id is not None
    job = NewJob(
        job_id=new_job_id(),
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id,
        owner_id=interaction.user.id,
        request_json=request.to_json(),
        images=images,
        interaction_id=interaction.id,
        interaction_token=interaction.token,
        token_expires_at=token_expiry(services.clock()),
    )
    roles = member_role_ids(interaction.user)
    outcome = await services.runner.submit(job, request, roles, upload_limit=interaction.filesize_limit)
    if isinstance(outcome, Refusal):
        await send_private(interaction, refusal_text(outcome, images))
