"""Edit in words (PRODUCT.md "Pictures as prompts": `Edit`, `/edit`) through the real discord.py client,
with the tiny Kontext model as EDIT_MODEL: the button on one-image results only, its modal (empty, the
picture's prompt shown), the result at the picture's size on the clicker's quota with the instruction
in its PNG, `/edit` on a member's own picture, blocked words and empty instructions refused with
nothing spent; without EDIT_MODEL no button and `/edit` says it is not set up. And on the engine: an
edit depends on its picture and is the same twice from one seed."""

from __future__ import annotations

import hashlib
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from PIL import Image

from generation.media.compose import read_parameters
from generation.pipelines.engine import DiffusersEngine
from generation.pipelines.engine_pool import instruction_editor
from generation.prompts.request import instruct_of
from testkit.answers import button_id, button_labels, job_of
from testkit.discord_loopback import InteractionRecord, Message, Upload
from tests.bot_harness import BotWorld, T

pytest_plugins = ["tests.fixtures_generation"]
pytestmark = pytest.mark.asyncio(loop_scope="module")

EDIT_MODEL = "tiny-kontext"  # what EDIT_MODEL=tiny names (tests/test_bot_settings.py)
TINY_KONTEXT_STEPS = 4


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory, tiny_model: Any) -> AsyncIterator[BotWorld]:
    async with BotWorld.open(tmp_path_factory.mktemp("edit-words"), tiny_model) as w:
        w.extra_settings = {"edit_model": EDIT_MODEL}
        await w.start_bot()
        yield w


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def wide(world: BotWorld) -> Message:
    """A finished one-image 3:2 result of alice's."""
    return await world.wait_result(world.imagine("a harbour at noon --ar 3:2 --seed 3 --n 1"))


async def opened_modal(rec: InteractionRecord) -> dict[str, Any]:
    """The modal a click answered with: its title and its one labelled text input."""
    await rec.wait_final(lambda r: r.acknowledged, timeout=T)
    assert rec.callback_type == 9 and rec.modal is not None, rec.callback_type
    [label] = rec.modal["components"]
    return {"title": rec.modal["title"], **label, "input": label["component"]}


def picture_of(message: Message) -> Image.Image:
    return Image.open(io.BytesIO(message.attachments[0].data)).convert("RGB")


async def test_one_image_results_carry_edit_and_grids_do_not(world: BotWorld, wide: Message) -> None:
    assert button_labels(wide)[-1] == "Edit"
    assert len(wide.components) <= 5 and all(len(row["components"]) <= 5 for row in wide.components)
    grid = await world.wait_result(world.imagine("two harbours --n 2 --seed 4"))
    assert "Edit" not in button_labels(grid)


async def test_edit_asks_what_to_change_and_changes_the_picture_on_the_clickers_quota(
    world: BotWorld, wide: Message
) -> None:
    click = world.server.click(wide, button_id(wide, "Edit"), world.bob)
    modal = await opened_modal(click)
    assert modal["title"] == "Edit" and modal["label"] == "What to change"
    assert "a harbour at noon" in modal["description"]  # the picture's prompt, shown
    assert not modal["input"].get("value") and modal["input"]["custom_id"] == "instruction"
    before_bob, before_alice = await world.used(world.bob), await world.used(world.alice)

    rec = world.server.submit_modal(click, {"instruction": "make it winter"}, world.bob)
    edited = await world.wait_result(rec)

    source, result = picture_of(wide), picture_of(edited)
    assert result.size == source.size  # the picture's size kept
    assert np.abs(np.asarray(result, np.int16) - np.asarray(source, np.int16)).mean() > 1
    text = read_parameters(edited.attachments[0].data) or ""
    assert text.startswith("make it winter\n")
    assert f"Model: {EDIT_MODEL}" in text and f"Steps: {TINY_KONTEXT_STEPS}," in text  # the model's own
    assert "(edit in words)" in edited.content
    assert await world.used(world.bob) == before_bob + 1 and await world.used(world.alice) == before_alice
    record = await world.store.get_job(job_of(edited) or "")
    assert record is not None and record.parent_job_id == job_of(wide) and record.images == 1
    details = world.server.click(edited, button_id(edited, "📋"), world.bob)
    await world.private(details, f"an edit in words of image 1 of job `{job_of(wide)}`", "the model's own")
    assert "Edit" in button_labels(edited)  # an edit can be edited again


async def test_slash_edit_changes_a_members_own_picture_at_its_size(world: BotWorld) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (80, 48), (30, 120, 200)).save(buffer, "PNG")
    rec = world.server.invoke(
        "edit",
        {"instruction": "add a red boat"},
        attachments={"image": Upload("sea.png", buffer.getvalue(), "image/png")},
        guild=world.guild,
        channel=world.channel,
        member=world.carol,
    )
    edited = await world.wait_result(rec)
    assert picture_of(edited).size == (80, 48)
    text = read_parameters(edited.attachments[0].data) or ""
    assert text.startswith("add a red boat\n") and "Size: 80x48" in text
    details = world.server.click(edited, button_id(edited, "📋"), world.carol)
    await world.private(details, "an edit in words of the member's own picture", "(5:3)")


async def test_a_blocked_word_or_no_instruction_is_refused_with_nothing_spent(
    world: BotWorld, wide: Message
) -> None:
    await world.store.add_blocked_word(world.guild.id, "lava")
    dave = world.server.add_member(world.guild, "dave2")
    click = world.server.click(wide, button_id(wide, "Edit"), dave)
    await opened_modal(click)
    await world.private(world.server.submit_modal(click, {"instruction": "pour LAVA on it"}, dave), "lava")
    click = world.server.click(wide, button_id(wide, "Edit"), dave)
    await opened_modal(click)
    await world.private(world.server.submit_modal(click, {"instruction": "   "}, dave), "say what to change")
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buffer, "PNG")
    rec = world.server.invoke(
        "edit",
        {"instruction": "lava everywhere"},
        attachments={"image": Upload("x.png", buffer.getvalue(), "image/png")},
        guild=world.guild,
        channel=world.channel,
        member=dave,
    )
    await world.private(rec, "a word this server blocks")
    assert await world.store.ledger(world.guild.id, dave.id) == []


@pytest.mark.asyncio(loop_scope="function")
async def test_without_edit_model_no_edit_button_and_slash_edit_says_so(
    tmp_path: Path, tiny_model: Any
) -> None:
    async with BotWorld.open(tmp_path, tiny_model) as plain:
        await plain.start_bot()
        one = await plain.wait_result(plain.imagine("a harbour --n 1 --seed 2"))
        assert "Edit" not in button_labels(one) and "Vary (Subtle)" in button_labels(one)
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64)).save(buffer, "PNG")
        rec = plain.server.invoke(
            "edit",
            {"instruction": "make it winter"},
            attachments={"image": Upload("x.png", buffer.getvalue(), "image/png")},
            guild=plain.guild,
            channel=plain.channel,
            member=plain.alice,
        )
        await plain.private(rec, "isn't set up", "EDIT_MODEL")
        assert len(await plain.store.ledger(plain.guild.id, plain.alice.id)) == 1  # the picture's job only


# -- the engine --------------------------------------------------------------------------------------


def _png(pixels: np.ndarray[Any, Any]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.asyncio(loop_scope="function")
async def test_an_edit_depends_on_its_picture_and_repeats_from_one_seed(tmp_path: Path) -> None:
    engine = instruction_editor(DiffusersEngine.load(EDIT_MODEL, "cpu", cache_dir=tmp_path))
    rng = np.random.default_rng(0)
    pictures = [_png(rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)) for _ in range(2)]

    def edit(data: bytes) -> np.ndarray[Any, Any]:
        request = instruct_of(
            source_hash=hashlib.sha256(data).hexdigest(),
            size=(80, 48),
            instruction="make it winter",
            edit_model=EDIT_MODEL,
            seed=11,
        )
        [[image]] = engine.run_batch([request], [data], lambda *_: True)
        assert (image.width, image.height) == (80, 48)
        return np.asarray(Image.open(io.BytesIO(image.png)), np.int16)

    first, again, other = edit(pictures[0]), edit(pictures[0]), edit(pictures[1])
    np.testing.assert_array_equal(first, again)
    # the picture is the model's input (ignored, the same seed would give the same pixels); random tiny
    # weights pass little of it through, so the difference is small but there
    assert not np.array_equal(first, other)


def test_a_model_that_does_not_edit_from_words_is_refused_as_edit_model(
    tmp_path: Path, tiny_model: Any
) -> None:
    engine = DiffusersEngine(tiny_model)
    with pytest.raises(ValueError, match="doesn't edit a picture from words; EDIT_MODEL takes"):
        instruction_editor(engine)
