"""Requests made from a stored result: variations, upscales, rerolls and edits (Discord-free).

The rules themselves (strengths, upscale size) are `generation.prompts.request`'s derivations."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path

from bot.commands.errors import UserError
from bot.views.custom_ids import Action, ButtonRef, EditButton
from generation.families.features import Features
from generation.prompts.edits import Direction, EditError, EditKind, EditSpec, edit_spec
from generation.prompts.request import (
    MAX_IMAGES,
    SEED_MODULUS,
    GenerationRequest,
    Mode,
    ModelProfile,
    consecutive_seeds,
    edit_of,
    reroll_of,
    upscale_of,
    variation_of,
)
from storage.interface import JobRecord, JobState, Store


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


def check_model_runs(features: Features, action: Action) -> None:
    """A UserError when the picture's model can no longer run `action` (settings changed since the
    result was posted): U/V need image-to-image, the edit buttons the edit loop."""
    if action in (Action.UPSCALE, Action.VARIATION) and not features.image:
        raise UserError(
            f"That picture's model ({features.label}) can't start from a picture, so it can't do that."
        )
    if action is Action.EDIT and not (features.image and features.edits):
        raise UserError(f"That picture's model ({features.label}) can't run the edit buttons.")


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


UPSCALE_EDITS = frozenset({EditKind.UPSCALE_SUBTLE, EditKind.UPSCALE_CREATIVE})
MAX_WALK = 16  # parents followed to find the grid a picture came from


def button_spec(
    button: EditButton,
    of_job: str,
    *,
    factor: float | None = None,
    regions: tuple[str, ...] = (),
    mask_image: str | None = None,
) -> EditSpec:
    """The edit an edit button asks for; `factor` (Custom Zoom, or an inline `--zoom`) wins over the
    button's own. An `EditError` (a `PromptError`) for what cannot be done."""
    kind, own_factor, direction = _BUTTON_EDITS[button]
    if factor is not None and kind is not EditKind.ZOOM_OUT:
        raise EditError("`--zoom` goes with Zoom Out and Custom Zoom only.")
    factor = factor if factor is not None else own_factor
    if kind is EditKind.ZOOM_OUT and factor is None:
        raise EditError("Give a zoom factor between 1 and 2, like 1.5.")
    return edit_spec(
        kind, factor=factor, direction=direction, regions=regions, mask_image=mask_image, of_job=of_job
    )


_BUTTON_EDITS: dict[EditButton, tuple[EditKind, float | None, Direction | None]] = {
    EditButton.VARY_SUBTLE: (EditKind.VARY_SUBTLE, None, None),
    EditButton.VARY_STRONG: (EditKind.VARY_STRONG, None, None),
    EditButton.VARY_REGION: (EditKind.VARY_REGION, None, None),
    EditButton.ZOOM_2X: (EditKind.ZOOM_OUT, 2.0, None),
    EditButton.ZOOM_15X: (EditKind.ZOOM_OUT, 1.5, None),
    EditButton.CUSTOM_ZOOM: (EditKind.ZOOM_OUT, None, None),
    EditButton.PAN_LEFT: (EditKind.PAN, None, Direction.LEFT),
    EditButton.PAN_RIGHT: (EditKind.PAN, None, Direction.RIGHT),
    EditButton.PAN_UP: (EditKind.PAN, None, Direction.UP),
    EditButton.PAN_DOWN: (EditKind.PAN, None, Direction.DOWN),
    EditButton.MAKE_SQUARE: (EditKind.MAKE_SQUARE, None, None),
    EditButton.UPSCALE_SUBTLE: (EditKind.UPSCALE_SUBTLE, None, None),
    EditButton.UPSCALE_CREATIVE: (EditKind.UPSCALE_CREATIVE, None, None),
}


def _picks_one_picture(request: GenerationRequest) -> bool:
    """True for a request that makes one picture of an earlier result (U1–U4, Upscale edits)."""
    return request.mode is Mode.UPSCALE or (request.edit is not None and request.edit.kind in UPSCALE_EDITS)


async def original_count(store: Store, parent: JobRecord) -> int:
    """How many images the request that `parent`'s picture came from made: vary, zoom and pan make
    that many (the grid behind a `U2`, or the parent itself)."""
    record = parent
    for _ in range(MAX_WALK):
        request = parent_request(record)
        if not _picks_one_picture(request) or record.parent_job_id is None:
            return request.count
        grid = await store.get_job(record.parent_job_id)
        if grid is None:
            return request.count
        record = grid
    return parent_request(record).count


def derive_edit(
    parent: JobRecord,
    spec: EditSpec,
    source_hash: str,
    size: tuple[int, int],
    count: int,
    *,
    random_seed: Callable[[], int] | None = None,
) -> GenerationRequest:
    """`spec` done to `parent`'s one picture (stored as `source_hash`), on a canvas of `size`, making
    `count` images (one for the upscales) with fresh seeds."""
    images = 1 if spec.kind in UPSCALE_EDITS else max(1, min(count, MAX_IMAGES))
    return edit_of(parent_request(parent), spec, source_hash, size, fresh_seeds(images, random_seed))
