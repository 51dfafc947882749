"""Requests made from a stored result: variations, upscales, rerolls (Discord-free).

Uses `generation.parser`'s derivations when present; the fallbacks here follow the same rules
(`generation.request`: VARIATION_STRENGTH, UPSCALE_FACTOR, UPSCALE_STRENGTH)."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable
from pathlib import Path

from bot.errors import UserError
from bot.ids import Action, ButtonRef
from generation import parser as _parser
from generation.request import (
    UPSCALE_FACTOR,
    UPSCALE_STRENGTH,
    VARIATION_STRENGTH,
    GenerationRequest,
    Mode,
    ModelProfile,
)
from storage.interface import JobRecord, JobState

SEED_MODULUS = 2**32


def fresh_seeds(count: int, random_seed: Callable[[], int] | None = None) -> tuple[int, ...]:
    """`count` consecutive seeds from a random first one."""
    first = random_seed() if random_seed is not None else secrets.randbelow(SEED_MODULUS)
    return tuple((first + i) % SEED_MODULUS for i in range(count))


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
    base = parent_request(parent)
    original_count = len(GenerationRequest.from_json(parent.request_json).seeds)
    seeds = fresh_seeds(original_count, random_seed)
    if ref.action is Action.REROLL:
        fn = getattr(_parser, "reroll_of", None)
        original = GenerationRequest.from_json(parent.request_json)
        return fn(original, seeds) if fn else original.with_seeds(seeds)
    assert source_hash is not None
    if ref.action is Action.VARIATION:
        fn = getattr(_parser, "variation_of", None)
        if fn:
            return fn(base, ref.index, source_hash, seeds)  # type: ignore[no-any-return]
        return dataclasses.replace(
            base, seeds=seeds, mode=Mode.VARIATION, strength=VARIATION_STRENGTH, source_image=source_hash
        )
    fn = getattr(_parser, "upscale_of", None)
    if fn:
        return fn(base, ref.index, source_hash, profile)  # type: ignore[no-any-return]
    return dataclasses.replace(
        base,
        seeds=(base.seeds[ref.index],),
        width=base.width * UPSCALE_FACTOR,
        height=base.height * UPSCALE_FACTOR,
        mode=Mode.UPSCALE,
        strength=UPSCALE_STRENGTH,
        source_image=source_hash,
    )
