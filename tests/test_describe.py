"""`/describe`, the `Describe` message menu and `Imagine 1`–`4`: the captioner on its own (the `tiny`
BLIP through transformers' real `from_pretrained`) and through the real discord.py client."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from PIL import Image

from bot.commands.describe import describe_text, prompt_of
from generation.media.compose import read_parameters
from generation.pipelines.describe import (
    MAX_PROMPT_CHARS,
    PROMPTS,
    Describer,
    DescribeSettings,
    distinct_prompts,
)
from generation.pipelines.tiny_describe import TINY_DESCRIBER_FOLDER
from testkit.discord_loopback import InteractionRecord, Message, Upload
from tests.bot_harness import BotWorld, T

pytest_plugins = ["tests.fixtures_generation"]


def _png(color: tuple[int, int, int] = (30, 120, 200), size: tuple[int, int] = (64, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


# -- the pieces -----------------------------------------------------------------------------------------


def test_distinct_prompts_folds_dedupes_filters_and_caps() -> None:
    candidates = [
        "a  fox\nin snow",
        "A fox in snow",
        "",
        "   ",
        "a cat",
        "a bad word",
        "x" * 500,
        "one",
        "two",
    ]
    kept = distinct_prompts(candidates, lambda p: "bad" not in p)
    assert kept == ["a fox in snow", "a cat", "x" * MAX_PROMPT_CHARS, "one"]
    assert distinct_prompts(["same", "SAME"], lambda p: True) == ["same"]


def test_the_answer_text_gives_back_each_prompt() -> None:
    prompts = ["a fox at @dawn", "an owl", "a lake", "a city at night"]
    text = describe_text(prompts, 42)
    assert [prompt_of(text, i) for i in range(1, 5)] == prompts
    assert prompt_of(text, 5) is None and prompt_of("no prompts here", 1) is None
    assert "@\u200bdawn" in text  # shown without pinging anyone


async def test_tiny_describer_loads_lazily_from_its_folder_and_samples_four_different_prompts(
    tmp_path: Path,
) -> None:
    describer = Describer(DescribeSettings("tiny", cache_dir=tmp_path))
    try:
        assert not describer.loaded and not (tmp_path / TINY_DESCRIBER_FOLDER).exists()
        prompts = await describer.describe(_png(), lambda p: True)
        assert describer.loaded and (tmp_path / TINY_DESCRIBER_FOLDER / "config.json").is_file()
        assert len(prompts) == PROMPTS and len({p.casefold() for p in prompts}) == PROMPTS
        assert all(p.strip() == p and p for p in prompts)
        refused = await describer.describe(_png(), lambda p: False)
        assert refused == []  # nothing the filter refuses ever comes back
    finally:
        describer.close()


# -- through the bot ------------------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory, tiny_model: Any) -> AsyncIterator[BotWorld]:
    async with BotWorld.open(tmp_path_factory.mktemp("describe"), tiny_model) as w:
        w.extra_settings = {"describe_model": "tiny", "model_cache_dir": tmp_path_factory.mktemp("cache")}
        await w.start_bot()
        yield w


def _describe(
    world: BotWorld, data: bytes, name: str = "mine.png", kind: str = "image/png"
) -> InteractionRecord:
    return world.server.invoke(
        "describe",
        {},
        attachments={"image": Upload(name, data, kind)},
        guild=world.guild,
        channel=world.channel,
        member=world.carol,
    )


async def _answer(world: BotWorld, rec: InteractionRecord) -> Message:
    def answered(r: InteractionRecord) -> bool:
        return any(m.custom_ids and not m.ephemeral and not m.deleted for m in r.messages)

    await rec.wait_final(answered, timeout=T)
    [message] = [m for m in rec.messages if m.custom_ids and not m.ephemeral and not m.deleted]
    return message


def _labels(message: Message) -> list[str]:
    return [c.get("label") for row in message.components for c in row["components"]]


@pytest.mark.asyncio(loop_scope="module")
async def test_describe_posts_four_prompts_whose_buttons_draw_them_for_the_clicker(world: BotWorld) -> None:
    answer = await _answer(world, _describe(world, _png()))
    assert _labels(answer) == ["Imagine 1", "Imagine 2", "Imagine 3", "Imagine 4"]
    prompts = [prompt_of(answer.content, i) for i in range(1, 5)]
    assert all(prompts) and len(set(prompts)) == 4

    click = world.server.click(answer, "imagine:p:2", world.bob)
    result = await world.wait_result(click)
    parameters = read_parameters(result.attachments[0].data) or ""
    assert parameters.startswith(str(prompts[1]))
    job = await world.store.get_job(
        next(c.split(":")[2] for c in result.custom_ids if c.startswith("imagine:r:"))
    )
    assert job is not None and job.owner_id == world.bob.id  # the clicker's job, on the clicker's quota


@pytest.mark.asyncio(loop_scope="module")
async def test_the_describe_menu_works_on_a_result_and_refuses_a_message_without_a_picture(
    world: BotWorld,
) -> None:
    result = await world.wait_result(world.imagine("a green hill --n 1", member=world.alice))
    answer = await _answer(world, world.server.invoke_message_command("Describe", result, world.dave))
    assert len(_labels(answer)) == 4

    text_only = world.server.post_as(world.channel, world.alice, "no picture here")
    rec = world.server.invoke_message_command("Describe", text_only, world.dave)
    message = await world.wait_ephemeral(rec)
    assert "no picture" in message.content.lower()


@pytest.mark.asyncio(loop_scope="module")
async def test_describe_refuses_a_file_that_is_not_a_picture(world: BotWorld) -> None:
    rec = _describe(world, b"just text", name="notes.txt", kind="text/plain")
    message = await world.wait_ephemeral(rec)
    assert "isn't a picture" in message.content
    assert not any(m.custom_ids for m in rec.messages)


@pytest.mark.asyncio(loop_scope="module")
async def test_describe_without_a_model_says_so(world: BotWorld) -> None:
    await world.stop_bot()
    world.extra_settings = {}
    await world.start_bot()
    try:
        message = await world.wait_ephemeral(_describe(world, _png()))
        assert "DESCRIBE_MODEL" in message.content
    finally:
        await world.stop_bot()
        world.extra_settings = {"describe_model": "tiny"}
        await world.start_bot()
