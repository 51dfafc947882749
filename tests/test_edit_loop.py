"""The edit loop through the real discord.py client on the loopback Discord and `tiny` (PRODUCT.md
"Working on one picture"): every edit button and modal, Remix on and off, the buttons after a
restart, and the clicker's quota spent (and given back when the edit fails)."""

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
from generation.media.compose import read_parameters
from generation.prompts.edits import REGION_NAMES, Direction, EditKind, EditSpec, edit_spec
from storage.interface import JobRecord, JobState
from testkit.answers import button_id as button
from testkit.answers import button_labels as labels
from testkit.answers import job_of
from testkit.discord_loopback import InteractionRecord, Member, Message, Upload
from tests.bot_harness import BotWorld, FaultyEngine, T

pytest_plugins = ["tests.fixtures_generation", "tests.pg_fixtures"]
pytestmark = pytest.mark.asyncio(loop_scope="module")

CAP = SizeCap.for_native(64)  # the tiny model's
EDIT_LABELS = [
    "Vary (Subtle)",
    "Vary (Strong)",
    "Vary (Region)",
    "Upscale (Subtle)",
    "Upscale (Creative)",
    "Zoom Out 2x",
    "Zoom Out 1.5x",
    "Custom Zoom",
    "Make Square",
    "⬅️",
    "➡️",
    "⬆️",
    "⬇️",
]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory, tiny_model: Any) -> AsyncIterator[BotWorld]:
    async with BotWorld.open(tmp_path_factory.mktemp("edit-loop"), tiny_model) as w:
        w.engine_wrapper = FaultyEngine
        await w.start_bot()
        yield w


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def wide(world: BotWorld) -> Message:
    """A finished one-image, not square, result of alice's (`--ar 3:2 --n 1`)."""
    return await world.wait_result(world.imagine("a lighthouse on a cliff --ar 3:2 --seed 3 --n 1"))


def click(world: BotWorld, message: Message, label: str, member: Member | None = None) -> InteractionRecord:
    return world.server.click(message, button(message, label), member or world.alice)


async def job(world: BotWorld, message: Message) -> JobRecord:
    job_id = job_of(message)
    assert job_id is not None
    record = await world.store.get_job(job_id)
    assert record is not None
    return record


def picture(record: JobRecord, index: int = 0) -> Image.Image:
    return Image.open(record.image_paths[index]).convert("RGB")


def parameters(record: JobRecord) -> str | None:
    """The `parameters` text of a job's first saved PNG."""
    return read_parameters(Path(record.image_paths[0]).read_bytes())


def assert_kept(spec: EditSpec, source: Image.Image, result: Image.Image) -> None:
    """The result equals the source exactly where the edit keeps it (the seam masked out)."""
    canvas = prepare_canvas(spec, source, CAP)
    assert result.size == canvas.size
    assert canvas.keep is not None
    keep = np.asarray(canvas.keep) == 255
    assert keep.any()
    assert np.array_equal(np.asarray(result)[keep], np.asarray(canvas.image)[keep])


async def set_remix(world: BotWorld, member: Member, on: bool) -> None:
    await world.store.set_prompt_settings(world.guild.id, member.id, {"remix": on})


# -- the buttons ----------------------------------------------------------------------------------


async def test_a_one_image_result_has_the_edit_buttons_in_five_rows_at_most(
    world: BotWorld, wide: Message
) -> None:
    assert labels(wide)[: len(EDIT_LABELS)] == EDIT_LABELS
    assert {"U1", "V1", "🔄", "📋", "🗑️"} <= set(labels(wide))
    assert len(wide.components) <= 5 and all(len(row["components"]) <= 5 for row in wide.components)
    square = await world.wait_result(world.imagine("a square owl --seed 4 --n 1"))
    assert "Make Square" not in labels(square) and "Zoom Out 2x" in labels(square)
    grid = await world.wait_result(world.imagine("two owls --seed 4 --n 2"))
    assert not set(EDIT_LABELS) & set(labels(grid))  # a grid keeps U1–U2, V1–V2 and 🔄


@pytest.mark.parametrize(
    ("label", "spec"),
    [
        ("Zoom Out 2x", edit_spec(EditKind.ZOOM_OUT, factor=2)),
        ("Zoom Out 1.5x", edit_spec(EditKind.ZOOM_OUT, factor=1.5)),
        ("⬅️", edit_spec(EditKind.PAN, direction=Direction.LEFT)),
        ("⬇️", edit_spec(EditKind.PAN, direction=Direction.DOWN)),
        ("Make Square", edit_spec(EditKind.MAKE_SQUARE)),
    ],
)
async def test_outpainting_buttons_keep_the_picture_and_paint_around_it(
    world: BotWorld, wide: Message, label: str, spec: EditSpec
) -> None:
    parent = await job(world, wide)
    result = await world.wait_result(click(world, wide, label, world.bob))
    record = await job(world, result)
    assert record.owner_id == world.bob.id and record.parent_job_id == parent.job_id
    assert len(record.image_paths) == 1  # as many as the original request made: one
    source, edited = picture(parent), picture(record)
    assert_kept(spec, source, edited)
    if spec.kind is EditKind.PAN and spec.direction is Direction.LEFT:
        assert edited.height == source.height and edited.width > source.width
    if spec.kind is EditKind.MAKE_SQUARE:
        assert edited.width == edited.height == max(source.size)
    text = parameters(record)
    assert text is not None
    assert text.splitlines()[-1] == f"Action: {spec.describe()} of job {parent.job_id}"


async def test_vary_makes_as_many_as_the_grid_behind_an_upscale_on_the_clickers_quota(
    world: BotWorld,
) -> None:
    grid = await world.wait_result(world.imagine("three foxes --seed 8 --n 3"))
    one = await world.wait_result(world.server.click(grid, f"imagine:u:{job_of(grid)}:2", world.alice))
    before = await world.used(world.carol)
    varied = await world.wait_result(click(world, one, "Vary (Strong)", world.carol))
    record = await job(world, varied)
    assert len(record.seeds) == 3 and record.images == 3
    assert await world.used(world.carol) == before + 3
    assert not set(EDIT_LABELS) & set(labels(varied))  # three images: a grid's buttons
    subtle = await job(world, await world.wait_result(click(world, one, "Vary (Subtle)")))
    assert len(subtle.seeds) == 3 and picture(subtle).size == picture(await job(world, one)).size


async def test_upscales_double_the_picture_within_the_cap(world: BotWorld, wide: Message) -> None:
    source = picture(await job(world, wide))
    for label in ("Upscale (Subtle)", "Upscale (Creative)"):
        result = await world.wait_result(click(world, wide, label))
        record = await job(world, result)
        assert len(record.image_paths) == 1
        big = picture(record)
        assert big.width * big.height <= CAP.max_pixels
        assert abs(big.width / big.height - source.width / source.height) < 0.1
        assert big.width * big.height > source.width * source.height
        assert "Vary (Subtle)" in labels(result)  # one image: the edit buttons again


# -- the modals ------------------------------------------------------------------------------------


def modal_fields(rec: InteractionRecord) -> dict[str, dict[str, Any]]:
    assert rec.modal is not None
    fields = {}
    for top in rec.modal["components"]:
        component = top.get("component") or top["components"][0]
        fields[str(component["custom_id"])] = component
    return fields


async def opened_modal(rec: InteractionRecord) -> dict[str, dict[str, Any]]:
    await rec.wait_final(lambda r: r.acknowledged, timeout=T)
    assert rec.callback_type == 9, rec.callback_type
    return modal_fields(rec)


async def through_modal(
    world: BotWorld, message: Message, label: str, values: dict[str, Any], member: Member | None = None
) -> InteractionRecord:
    """Click `label`, wait for its modal, submit `values` (a modal closes once submitted)."""
    member = member or world.alice
    rec = click(world, message, label, member)
    await opened_modal(rec)
    return world.server.submit_modal(rec, values, member)


async def test_custom_zoom_asks_for_the_factor_and_refuses_a_bad_one(world: BotWorld, wide: Message) -> None:
    parent = await job(world, wide)
    fields = await opened_modal(click(world, wide, "Custom Zoom"))
    assert fields["prompt"]["value"].startswith("a lighthouse on a cliff") and fields["zoom"]["value"] == "2"
    before = await world.used(world.alice)
    await world.private(await through_modal(world, wide, "Custom Zoom", {"zoom": "3"}), "at most 2")
    await world.private(await through_modal(world, wide, "Custom Zoom", {"zoom": "lots"}), "between 1 and 2")
    assert await world.used(world.alice) == before  # nothing was queued
    result = await world.wait_result(await through_modal(world, wide, "Custom Zoom", {"zoom": "1.25"}))
    assert_kept(edit_spec(EditKind.ZOOM_OUT, factor=1.25), picture(parent), picture(await job(world, result)))
    inline = {"prompt": f"{fields['prompt']['value']} --zoom 1.75", "zoom": "2"}
    result = await world.wait_result(await through_modal(world, wide, "Custom Zoom", inline))
    assert_kept(edit_spec(EditKind.ZOOM_OUT, factor=1.75), picture(parent), picture(await job(world, result)))


async def test_vary_region_redraws_the_chosen_cells_and_keeps_the_rest(
    world: BotWorld, wide: Message
) -> None:
    parent = await job(world, wide)
    rec = click(world, wide, "Vary (Region)")
    fields = await opened_modal(rec)
    assert [o["value"] for o in fields["regions"]["options"]] == list(REGION_NAMES)
    assert fields["mask"]["type"] == 19 and fields["mask"].get("required") is False
    assert fields["prompt"]["value"].startswith("a lighthouse on a cliff")
    await world.private(world.server.submit_modal(rec, {}, world.alice), "choose a part")
    sent = {"regions": ["top left", "center"], "prompt": "a lighthouse with a red roof"}
    result = await world.wait_result(await through_modal(world, wide, "Vary (Region)", sent))
    record = await job(world, result)
    spec = edit_spec(EditKind.VARY_REGION, regions=("top left", "center"))
    assert_kept(spec, picture(parent), picture(record))
    text = parameters(record)
    assert text is not None and text.startswith("a lighthouse with a red roof")


async def test_vary_region_takes_an_uploaded_mask(world: BotWorld, wide: Message) -> None:
    source = picture(await job(world, wide))
    mask = Image.new("L", source.size, 0)
    mask.paste(255, (source.width // 2, 0, source.width, source.height))  # the right half
    data = io.BytesIO()
    mask.save(data, "PNG")
    upload = [Upload("mask.png", data.getvalue(), "image/png")]
    result = await world.wait_result(await through_modal(world, wide, "Vary (Region)", {"mask": upload}))
    edited = np.asarray(picture(await job(world, result)), dtype=np.int16)
    want = np.asarray(source, dtype=np.int16)
    quarter = source.width // 4
    assert np.array_equal(edited[:, :quarter], want[:, :quarter])  # far left of the mask: exact
    assert np.abs(edited[:, -quarter:] - want[:, -quarter:]).mean() > 2  # under it: redrawn
    black = io.BytesIO()
    Image.new("L", source.size, 0).save(black, "PNG")
    again = click(world, wide, "Vary (Region)")
    await opened_modal(again)
    refused = world.server.submit_modal(
        again, {"mask": [Upload("m.png", black.getvalue(), "image/png")]}, world.alice
    )
    await world.private(refused, "all black")


# -- Remix -------------------------------------------------------------------------------------------


async def test_remix_opens_the_prompt_before_vary_zoom_pan_v_and_reroll(
    world: BotWorld, wide: Message
) -> None:
    await set_remix(world, world.dave, True)
    try:
        for label in ("Vary (Subtle)", "Zoom Out 2x", "➡️", "V1", "🔄"):
            fields = await opened_modal(click(world, wide, label, world.dave))
            assert fields["prompt"]["value"].startswith("a lighthouse on a cliff"), label
            assert "--steps" in fields["prompt"]["value"]
        bad = {"prompt": "a tower --steps 0"}
        await world.private(await through_modal(world, wide, "⬆️", bad, world.dave), "steps")
        good = {"prompt": "a stone tower --steps 3"}
        result = await world.wait_result(await through_modal(world, wide, "⬆️", good, world.dave))
        record = await job(world, result)
        assert_kept(
            edit_spec(EditKind.PAN, direction=Direction.UP), picture(await job(world, wide)), picture(record)
        )
        text = parameters(record)
        assert text is not None and text.startswith("a stone tower\n") and "Steps: 3" in text
        reroll = click(world, wide, "🔄", world.dave)
        await opened_modal(reroll)
        rerolled = await world.wait_result(
            world.server.submit_modal(reroll, {"prompt": "a red barn --ar 1:1 --n 2"}, world.dave)
        )
        barn = await job(world, rerolled)
        assert len(barn.seeds) == 2 and "a red barn" in (parameters(barn) or "")
        upscaled = await world.wait_result(
            click(world, wide, "Upscale (Subtle)", world.dave)
        )  # never a modal
        assert (await job(world, upscaled)).owner_id == world.dave.id
    finally:
        await set_remix(world, world.dave, False)
    result = await world.wait_result(click(world, wide, "Vary (Subtle)", world.dave))  # Remix off: at once
    assert (await job(world, result)).owner_id == world.dave.id


async def test_remix_v1_runs_the_submitted_aspect_and_an_edit_refuses_one(world: BotWorld) -> None:
    erin = world.server.add_member(world.guild, "erin")
    grid = await world.wait_result(world.imagine("a harbour at dawn --ar 16:9 --n 2 --seed 4", member=erin))
    await set_remix(world, erin, True)
    try:
        fields = await opened_modal(click(world, grid, "V1", erin))
        prefill = fields["prompt"]["value"]
        assert "--ar 16:9" in prefill and "--n 2" in prefill, prefill  # every flag of the request
        submitted = prefill.replace("--ar 16:9", "--ar 1:1")
        square = await world.wait_result(await through_modal(world, grid, "V1", {"prompt": submitted}, erin))
        record = await job(world, square)
        assert len(record.image_paths) == 2
        assert all(picture(record, i).size == (64, 64) for i in range(2))  # square, not the grid's 16:9
        assert "Size: 64x64" in (parameters(record) or "")
        one = await world.wait_result(world.imagine("a buoy --ar 3:2 --n 1 --seed 2", member=erin))
        refused = await through_modal(world, one, "Vary (Subtle)", {"prompt": "a buoy --ar 1:1"}, erin)
        await world.private(refused, "`--ar` reshapes a variation or a reroll")
    finally:
        await set_remix(world, erin, False)


async def test_a_failed_edit_gives_the_clickers_images_back(world: BotWorld, wide: Message) -> None:
    await set_remix(world, world.carol, True)
    try:
        with FaultyEngine.of(world):
            rec = click(world, wide, "Zoom Out 1.5x", world.carol)
            await opened_modal(rec)
            before = await world.used(world.carol)
            failed = world.server.submit_modal(
                rec, {"prompt": f"{FaultyEngine.RAISE} a lighthouse"}, world.carol
            )
            await failed.wait_final(
                lambda r: r.original is not None and r.original.content.startswith("Sorry"), timeout=T
            )
    finally:
        await set_remix(world, world.carol, False)
    [record] = [j for j in await world.store.ledger(world.guild.id, world.carol.id) if j.refunded]
    assert await world.used(world.carol) == before
    assert record.refunded


async def test_edit_buttons_work_after_a_restart(world: BotWorld, wide: Message) -> None:
    parent = await job(world, wide)
    await world.restart_bot()
    result = await world.wait_result(click(world, wide, "Zoom Out 2x"))
    record = await job(world, result)
    assert record.parent_job_id == parent.job_id and record.state is JobState.DONE
    assert_kept(edit_spec(EditKind.ZOOM_OUT, factor=2), picture(parent), picture(record))


@pytest.mark.asyncio(loop_scope="function")
async def test_an_edit_is_a_job_on_the_postgres_claim_path(
    tmp_path: Path, tiny_model: Any, pg_url: str
) -> None:
    async with BotWorld.open(tmp_path, tiny_model) as pg_world:
        pg_world.extra_settings = {"database_url": pg_url}
        await pg_world.start_bot()
        store = pg_world.running.store if pg_world.running else None
        assert store is not None
        one = await pg_world.wait_result(pg_world.imagine("a harbour at dawn --ar 3:2 --seed 6 --n 1"))
        parent = await store.get_job(job_of(one) or "")
        result = await pg_world.wait_result(click(pg_world, one, "⬅️", pg_world.bob))
        record = await store.get_job(job_of(result) or "")
        assert parent is not None and record is not None
        assert record.state is JobState.DONE and record.parent_job_id == parent.job_id
        assert record.owner_id == pg_world.bob.id
        assert_kept(edit_spec(EditKind.PAN, direction=Direction.LEFT), picture(parent), picture(record))
