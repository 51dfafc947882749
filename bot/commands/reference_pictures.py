"""Pictures as prompts on Discord's side: the reference pictures of `--sref`/`--oref` URLs and of
`/imagine`'s `style_image`/`subject_image` attachments (and `/blend`'s), checked before anything is
spent and stored in the image store (a restart never fetches them again: the job's request holds
their hashes)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import discord

from bot.commands.errors import UserError
from bot.picture_urls import PictureOrigins, fetch_picture
from bot.services import Services
from generation.media.image_store import decode_image
from generation.prompts.references import ReferenceKind
from generation.prompts.request import GenerationRequest


def picture_origins(services: Services) -> PictureOrigins:
    """Where reference URLs may point: Discord's CDN, or the Discord this bot talks to (DISCORD_API_BASE)."""
    return PictureOrigins.from_api_base(services.settings.discord_api_base)


def check_reference_urls(
    services: Services, requests: Sequence[GenerationRequest], attached: Mapping[str, discord.Attachment]
) -> None:
    """Refuse (a UserError, before anything is fetched or spent) a reference URL Discord doesn't serve."""
    origins = picture_origins(services)
    for request in requests:
        for reference in request.references:
            for origin in reference.origins:
                if origin not in attached:
                    origins.check(origin)


async def store_references(
    services: Services,
    interaction: discord.Interaction[Any],
    requests: Sequence[GenerationRequest],
    attached: Mapping[str, discord.Attachment],
) -> list[GenerationRequest]:
    """`requests` with every reference picture fetched (or read, for an attachment), checked and put in
    the image store, each once; a UserError for any that can't be."""
    origins, limit = picture_origins(services), interaction.filesize_limit
    stored: dict[str, str] = {}  # origin → hash
    for request in requests:
        for reference in request.references:
            for origin in reference.origins:
                if origin in stored:
                    continue
                attachment = attached.get(origin)
                if attachment is not None:
                    data = await attachment.read()
                    if len(data) > limit:
                        raise UserError("That picture is larger than this server's upload limit.")
                    await asyncio.to_thread(decode_image, data)
                else:
                    data = await fetch_picture(origin, origins, limit_bytes=limit)
                stored[origin] = await asyncio.to_thread(services.image_store.put, data)
    return [
        dataclasses.replace(
            request,
            references=tuple(
                r.with_images(tuple(stored[origin] for origin in r.origins)) for r in request.references
            ),
        )
        for request in requests
    ]


def attached_references(
    style: discord.Attachment | None, subject: discord.Attachment | None
) -> dict[ReferenceKind, discord.Attachment]:
    """`/imagine`'s reference attachments by kind (those given)."""
    attached = {ReferenceKind.STYLE: style, ReferenceKind.SUBJECT: subject}
    return {kind: a for kind, a in attached.items() if a is not None}


async def store_pending_references(
    services: Services, interaction: discord.Interaction[Any], request: GenerationRequest
) -> GenerationRequest:
    """`request` with any reference not yet stored (a Remix's new `--sref`/`--oref` URL) checked and
    stored; as it is when every picture is (nothing fetched again)."""
    if all(r.fetched for r in request.references):
        return request
    check_reference_urls(services, [request], {})
    [stored] = await store_references(services, interaction, [request], {})
    return stored
