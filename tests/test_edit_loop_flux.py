"""The edit loop on a transformer family through the real discord.py client: tiny Flux as the server's
only model (MODELS). U1 of a grid, then every edit button: each result's size (on Flux's 16-pixel
step, within its own cap), image count and kept pixels; Vary (Region) with an uploaded mask; Custom
Zoom; Remix with a changed prompt; the buttons after a restart; an edit on the PostgreSQL claim path."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from PIL import Image

from generation.media.canvas import SizeCap, prepare_canvas
from generation.prompts.edits import Direction, EditKind, EditSpec, edit_spec
from storage.interface import JobState
from testkit.answers import button_labels as labels
from testkit.answers import job_of
from testkit.discord_loopback import Message, Upload
from tests.bot_harness import BotWorld
from tests.test_edit_loop import (
    EDIT_LABELS,
    click,
    job,
    parameters,
    picture,
    set_remix,
    through_modal,
)

pytest_plugins = ["tests.fixtures_generation", "tests.pg_fixtures"]
pytestmark = pytest.mark.asyncio(loop_scope="module")

FLUX = {"models": "flux=tiny-flux"}
CAP = SizeCap(4 * 128 * 128, 16)  # tiny Flux's: 4× its native 128² pixels, sides on its 16-pixel step


def assert_kept(spec: EditSpec, source: Image.Image, result: Image.Image) -> None:
    """The result has the canvas's size and equals the source exactly where the edit keeps it."""
    canvas = prepare_canvas(spec, source, CAP)
    assert result.size == canvas.size and result.width % 16 == 0 and result.height % 16 == 0
    if canvas.keep is not None:
        keep = np.asarray(canvas.keep) == 255
        assert keep.any()
        assert np.array_equal(np.asarray(result)[keep], np.asarray(canvas.image)[keep])


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory, tiny_model: Any) -> AsyncIterator[BotWorld]:
    async with BotWorld.open(tmp_path_factory.mktemp("edit-loop-flux"), tiny_model) as w:
        w.extra_settings = FLUX
        await w.start_bot()
        yield w


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def one(world: BotWorld) -> Message:
    """U1 of a two-image 3:2 Flux grid: a one-image result."""
    grid = await world.wait_result(world.imagine("a harbour at dawn --ar 3:2 --n 2 --seed 4"))
    return await world.wait_result(world.server.click(grid, f"imagine:u:{job_of(grid)}:1", world.alice))


async def test_u1_of_a_flux_grid_carries_every_edit_button(world: BotWorld, one: Message) -> None:
    record = await job(world, one)
    assert len(record.image_paths) == 1 and "Model: flux" in (parameters(record) or "")
    assert labels(one)[: len(EDIT_LABELS)] == EDIT_LABELS


@pytest.mark.parametrize(
    ("label", "spec"),
    [
        ("Vary (Subtle)", edit_spec(EditKind.VARY_SUBTLE)),
        ("Vary (Strong)", edit_spec(EditKind.VARY_STRONG)),
        ("Upscale (Subtle)", edit_spec(EditKind.UPSCALE_SUBTLE)),
        ("Upscale (Creative)", edit_spec(EditKind.UPSCALE_CREATIVE)),
        ("Zoom Out 2x", edit_spec(EditKind.ZOOM_OUT, factor=2)),
        ("Zoom Out 1.5x", edit_spec(EditKind.ZOOM_OUT, factor=1.5)),
        ("Make Square", edit_spec(EditKind.MAKE_SQUARE)),
        ("⬅️", edit_spec(EditKind.PAN, direction=Direction.LEFT)),
        ("➡️", edit_spec(EditKind.PAN, direction=Direction.RIGHT)),
        ("⬆️", edit_spec(EditKind.PAN, direction=Direction.UP)),
        ("⬇️", edit_spec(EditKind.PAN, direction=Direction.DOWN)),
    ],
)
async def test_every_edit_button_on_a_flux_picture(
    world: BotWorld, one: Message, label: str, spec: EditSpec
) -> None:
    parent = await job(world, one)
    result = await world.wait_result(click(world, one, label, world.bob))
    record = await job(world, result)
    assert record.owner_id == world.bob.id and record.parent_job_id == parent.job_id
    # an edit makes as many as the grid behind U1 (two); an upscale one
    upscale = spec.kind in (EditKind.UPSCALE_SUBTLE, EditKind.UPSCALE_CREATIVE)
    assert len(record.image_paths) == (1 if upscale else 2)
    source, edited = picture(parent), picture(record)
    assert_kept(spec, source, edited)
    if upscale:
        assert source.width * source.height < edited.width * edited.height <= CAP.max_pixels
    text = parameters(record) or ""
    assert (
        "Model: flux" in text and text.splitlines()[-1] == f"Action: {spec.describe()} of job {parent.job_id}"
    )


async def test_vary_region_with_a_mask_and_custom_zoom_on_flux(world: BotWorld, one: Message) -> None:
    source = picture(await job(world, one))
    mask = Image.new("L", source.size, 0)
    mask.paste(255, (source.width // 2, 0, source.width, source.height))  # the right half
    data = io.BytesIO()
    mask.save(data, "PNG")
    upload = [Upload("mask.png", data.getvalue(), "image/png")]
    region = await world.wait_result(await through_modal(world, one, "Vary (Region)", {"mask": upload}))
    edited = np.asarray(picture(await job(world, region)), dtype=np.int16)
    want = np.asarray(source, dtype=np.int16)
    quarter = source.width // 4
    assert edited.shape == want.shape
    assert np.array_equal(edited[:, :quarter], want[:, :quarter])  # far from the mask: exact
    assert np.abs(edited[:, -quarter:] - want[:, -quarter:]).mean() > 2  # under it: redrawn
    zoomed = await world.wait_result(await through_modal(world, one, "Custom Zoom", {"zoom": "1.25"}))
    assert_kept(edit_spec(EditKind.ZOOM_OUT, factor=1.25), source, picture(await job(world, zoomed)))


async def test_remix_with_a_changed_prompt_on_flux(world: BotWorld, one: Message) -> None:
    await set_remix(world, world.dave, True)
    try:
        sent = {"prompt": "a stone tower by the sea --steps 3"}
        result = await world.wait_result(await through_modal(world, one, "➡️", sent, world.dave))
    finally:
        await set_remix(world, world.dave, False)
    record = await job(world, result)
    assert_kept(
        edit_spec(EditKind.PAN, direction=Direction.RIGHT), picture(await job(world, one)), picture(record)
    )
    text = parameters(record) or ""
    assert text.startswith("a stone tower by the sea\n") and "Steps: 3" in text and "Model: flux" in text


async def test_flux_edit_buttons_work_after_a_restart(world: BotWorld, one: Message) -> None:
    parent = await job(world, one)
    await world.restart_bot()
    result = await world.wait_result(click(world, one, "Zoom Out 2x"))
    record = await job(world, result)
    assert record.parent_job_id == parent.job_id and record.state is JobState.DONE
    assert_kept(edit_spec(EditKind.ZOOM_OUT, factor=2), picture(parent), picture(record))


@pytest.mark.asyncio(loop_scope="function")
async def test_a_flux_edit_is_a_job_on_the_postgres_claim_path(
    tmp_path: Path, tiny_model: Any, pg_url: str
) -> None:
    async with BotWorld.open(tmp_path, tiny_model) as pg_world:
        pg_world.extra_settings = {**FLUX, "database_url": pg_url}
        await pg_world.start_bot()
        store = pg_world.running.store if pg_world.running else None
        assert store is not None
        one = await pg_world.wait_result(pg_world.imagine("a harbour at dawn --ar 3:2 --seed 6 --n 1"))
        parent = await store.get_job(job_of(one) or "")
        result = await pg_world.wait_result(click(pg_world, one, "⬅️", pg_world.bob))
        record = await store.get_job(job_of(result) or "")
        assert parent is not None and record is not None
        assert record.state is JobState.DONE and record.parent_job_id == parent.job_id
        assert_kept(edit_spec(EditKind.PAN, direction=Direction.LEFT), picture(parent), picture(record))
