"""Requests made from a stored result: variations, upscales, rerolls (Discord-free).

The rules themselves (strengths, upscale size) are `generation.prompts.request`'s derivations."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path

from bot.commands.errors import UserError
from bot.views.custom_ids import Action, ButtonRef
from generation.prompts.request import (
    SEED_MODULUS,
    GenerationRequest,
    ModelProfile,
    consecutive_seeds,
    reroll_of,
    upscale_of,
    variation_of,
)
from storage.interface import JobRecord, JobState


def fresh_seeds(count: int, random_seed: Callable[[], int] | None = None) -> tuple[int, ...]:
    """`count` consecutive seeds from a random first one."""
    first = random_seed() if random_seed is not None else secrets.randbelow(SEED_MODULUS)
    return consecutive_seeds(first, count)


def parent_request(parent: JobRecord) -> GenerationRequest:
    """The parent's request; its seeds are the images actually kept (flagged ones may be dropped)."""
    request = GenerationRequest.from_json(parent.request_json)
    return request.with_seeds(parent.seeds) if parent.seeds else request


def check_parent(parent: JobRecord | None, guild_id: int | None, ref: ButtonRef) -> JobRecord:
    """The parent job if it may be used from `guild_id` for `ref`, else a UserError."""
    if parent is None or guild_id is None or parent.guild_id != guild_id:
        raise UserError("I can't find that result on this server, so I can't do that.")
    if parent.state is not JobState.DONE or not parent.image_paths:
        raise UserError("That result isn't finished, so there's nothing to work from yet.")
    if ref.action is not Action.REROLL and not 0 <= ref.index < len(parent.image_paths):
        raise UserError(f"That result has no image {ref.index + 1}.")
    return parent


def source_bytes(parent: JobRecord, index: int) -> bytes:
    """The saved PNG of image `index` of `parent`."""
    try:
        return Path(parent.image_paths[index]).read_bytes()
    except OSError:
        raise UserError("That image is no longer kept on the bot's disk, so I can't work from it.") from None


def derive(
    parent: JobRecord,
    ref: ButtonRef,
    profile: ModelProfile,
    source_hash: str | None,
    *,
    random_seed: Callable[[], int] | None = None,
) -> GenerationRequest:
    """The request a button or reaction asks for. `source_hash` is the stored picture for U/V."""
    original = GenerationRequest.from_json(parent.request_json)
    seeds = fresh_seeds(original.count, random_seed)
    if ref.action is Action.REROLL:
        return reroll_of(original, seeds)
    assert source_hash is not None
    base = parent_request(parent)
    if ref.action is Action.VARIATION:
        return variation_of(base, ref.index, source_hash, seeds)
    return upscale_of(base, ref.index, source_hash, profile)
