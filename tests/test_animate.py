"""Animate through the real discord.py client (PRODUCT.md "Animate"), with the tiny image-to-video
model as VIDEO_MODEL: the buttons on one-image results only, a clip posted as an H.264 MP4 that starts
on its picture, on the clicker's quota (the guild's video cost), `Extend`, `/animate`, Cancel in the
middle of a clip with a refund, the buttons after a restart; and without VIDEO_MODEL, no buttons and
`/animate` says it is not set up."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from PIL import Image, ImageOps

from generation.media.compose import read_parameters
from generation.media.video import decode_frames, encode_mp4, probe_mp4
from storage.interface import JobState
from testkit.answers import button_id as button
from testkit.answers import button_labels as labels
from testkit.answers import job_of
from testkit.discord_loopback import Message, Upload
from tests.bot_harness import BotWorld, FaultyEngine, T

pytest_plugins = ["tests.fixtures_generation", "tests.pg_fixtures"]
pytestmark = pytest.mark.asyncio(loop_scope="module")

ANIMATE = ["Animate (Low motion)", "Animate (High motion)"]
COST = 3  # the world's VIDEO_COST
FRAMES, FPS = 9, 16  # tiny-video's clip


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory, tiny_model: Any) -> AsyncIterator[BotWorld]:
    async with BotWorld.open(tmp_path_factory.mktemp("animate"), tiny_model) as w:
        w.extra_settings = {"video_model": "tiny-video", "video_cost": COST}
        w.engine_wrapper = FaultyEngine
        await w.start_bot()
        yield w


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def wide(world: BotWorld) -> Message:
    """A finished one-image 3:2 result of alice's."""
    return await world.wait_result(world.imagine("a windmill in a field --ar 3:2 --seed 3 --n 1"))


def attachment(message: Message) -> tuple[str, bytes]:
    [file] = message.attachments
    return file.filename, file.data


def first_frame_error(mp4: bytes, picture: bytes) -> float:
    """How far the clip's first frame is from the picture fit to the clip's size, beyond what H.264
    alone loses of that picture (mean absolute difference in levels, less the same picture's own
    round trip through `encode_mp4`: tiny's noisy pictures lose ~13 levels to yuv420p at CRF 23)."""
    frames = decode_frames(mp4)
    with Image.open(io.BytesIO(picture)) as source:
        fit = ImageOps.fit(
            source.convert("RGB"), (frames.shape[2], frames.shape[1]), Image.Resampling.LANCZOS
        )
    want = np.asarray(fit, dtype=np.int16)
    alone = decode_frames(encode_mp4(np.stack([np.asarray(fit)] * len(frames)), FPS))[0]
    codec = float(np.abs(alone.astype(np.int16) - want).mean())
    return float(np.abs(frames[0].astype(np.int16) - want).mean()) - codec


async def test_one_image_results_carry_animate_and_grids_do_not(world: BotWorld, wide: Message) -> None:
    assert labels(wide)[-2:] == ANIMATE
    assert len(wide.components) <= 5 and all(len(row["components"]) <= 5 for row in wide.components)
    grid = await world.wait_result(world.imagine("two windmills --n 2 --seed 4"))
    assert not set(ANIMATE) & set(labels(grid))


async def test_animate_posts_a_clip_that_starts_on_the_picture_on_the_clickers_quota(
    world: BotWorld, wide: Message
) -> None:
    before_bob, before_alice = await world.used(world.bob), await world.used(world.alice)
    clip = await world.wait_result(world.server.click(wide, button(wide, "Animate (High motion)"), world.bob))
    name, data = attachment(clip)
    assert name.endswith(".mp4")
    info = probe_mp4(data)
    assert (info.codec, info.pix_fmt, info.frames, info.fps) == ("h264", "yuv420p", FRAMES, FPS)
    assert info.width > info.height  # the picture's 3:2, snapped to the model's sizes
    picture = wide.attachments[0].data
    assert first_frame_error(data, picture) < 3  # the picture itself, through H.264
    assert "Model: tiny-video" in info.comment and "animate (high motion) of job" in info.comment
    assert labels(clip) == ["Extend", "📋", "🗑️"]
    assert "(animate (high motion))" in clip.content
    assert await world.used(world.bob) == before_bob + COST and await world.used(world.alice) == before_alice
    record = await world.store.get_job(job_of(clip) or "")
    assert record is not None and record.images == COST and record.image_paths[0].endswith(".mp4")
    details = world.server.click(clip, button(clip, "📋"), world.bob)
    await world.private(details, "a clip of image 1 of job", "high motion")


async def test_extend_continues_from_the_last_frame(world: BotWorld, wide: Message) -> None:
    clip = await world.wait_result(
        world.server.click(wide, button(wide, "Animate (Low motion)"), world.carol)
    )
    first = decode_frames(attachment(clip)[1])
    longer = await world.wait_result(world.server.click(clip, button(clip, "Extend"), world.carol))
    data = attachment(longer)[1]
    frames = decode_frames(data)
    assert len(frames) == 2 * FRAMES - 1 and frames.shape[1:] == first.shape[1:]
    assert (
        np.abs(frames[:FRAMES].astype(np.int16) - first.astype(np.int16)).mean() < 3
    )  # the clip, re-encoded
    assert "extend (low motion) of job" in probe_mp4(data).comment
    assert "Extend" in labels(longer)


async def test_slash_animate_makes_a_clip_of_the_members_picture(world: BotWorld) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (60, 80), (200, 120, 30)).save(buffer, "PNG")  # portrait
    rec = world.server.invoke(
        "animate",
        {"prompt": "leaves falling", "motion": "high"},
        attachments={"image": Upload("tree.png", buffer.getvalue(), "image/png")},
        guild=world.guild,
        channel=world.channel,
        member=world.dave,
    )
    clip = await world.wait_result(rec)
    info = probe_mp4(attachment(clip)[1])
    assert info.height > info.width and info.frames == FRAMES
    assert info.comment.startswith("leaves falling\n")
    assert first_frame_error(attachment(clip)[1], buffer.getvalue()) < 3
    text = read_parameters(buffer.getvalue())
    assert text is None  # the member's own picture carried no parameters; the clip's are its own


async def test_slash_animate_refuses_a_blocked_word_with_nothing_spent(world: BotWorld) -> None:
    await world.store.add_blocked_word(world.guild.id, "lava")
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (90, 20, 20)).save(buffer, "PNG")
    george = world.server.add_member(world.guild, "george")
    rec = world.server.invoke(
        "animate",
        {"prompt": "Lava flowing"},
        attachments={"image": Upload("v.png", buffer.getvalue(), "image/png")},
        guild=world.guild,
        channel=world.channel,
        member=george,
    )
    await world.private(rec, "a word this server blocks", "lava")
    assert await world.store.ledger(world.guild.id, george.id) == []


async def test_cancel_in_the_middle_of_a_clip_gives_the_images_back(world: BotWorld) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (20, 60, 200)).save(buffer, "PNG")
    erin = world.server.add_member(world.guild, "erin")
    with FaultyEngine.of(world):
        rec = world.server.invoke(
            "animate",
            {"prompt": f"{FaultyEngine.SLOW} waves"},
            attachments={"image": Upload("sea.png", buffer.getvalue(), "image/png")},
            guild=world.guild,
            channel=world.channel,
            member=erin,
        )
        await rec.wait_final(lambda r: r.original is not None and "step" in r.original.content, timeout=T)
        assert rec.original is not None
        [cancel] = [c for c in rec.original.custom_ids if c.startswith("imagine:c:")]
        job_id = cancel.split(":")[2]
        assert await world.used(erin) == COST
        await world.private(world.server.click(rec.original, cancel, erin), "given back")
        await rec.wait_final(
            lambda r: r.original is None or "cancelled" in r.original.content.lower(), timeout=T
        )
    job = await world.store.get_job(job_id)
    assert job is not None and job.state is JobState.CANCELLED and job.refunded
    assert await world.used(erin) == 0


async def test_a_clip_over_the_quota_is_refused_with_nothing_spent(world: BotWorld) -> None:
    frank = world.server.add_member(world.guild, "frank")
    own = await world.wait_result(world.imagine("a barn --n 1 --seed 9", member=frank))  # 1 of 100 an hour
    await world.store.set_prompt_settings(world.guild.id, None, {"video_cost": 100})  # /server-defaults
    try:
        rec = world.server.click(own, button(own, "Animate (Low motion)"), frank)
        await world.private(rec, "request for 100 images")
        assert await world.used(frank) == 1
    finally:
        await world.store.set_prompt_settings(world.guild.id, None, {"video_cost": None})


async def test_the_animate_buttons_work_after_a_restart(world: BotWorld, wide: Message) -> None:
    await world.restart_bot()
    clip = await world.wait_result(
        world.server.click(wide, button(wide, "Animate (Low motion)"), world.alice)
    )
    assert probe_mp4(attachment(clip)[1]).frames == FRAMES


@pytest.mark.asyncio(loop_scope="function")
async def test_without_video_model_no_animate_buttons_and_slash_animate_says_so(
    tmp_path: Path, tiny_model: Any
) -> None:
    async with BotWorld.open(tmp_path, tiny_model) as plain:
        await plain.start_bot()
        one = await plain.wait_result(plain.imagine("a windmill --n 1 --seed 2"))
        assert not set(ANIMATE) & set(labels(one)) and "Vary (Subtle)" in labels(one)
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64)).save(buffer, "PNG")
        rec = plain.server.invoke(
            "animate",
            {},
            attachments={"image": Upload("x.png", buffer.getvalue(), "image/png")},
            guild=plain.guild,
            channel=plain.channel,
            member=plain.alice,
        )
        await plain.private(rec, "isn't set up", "VIDEO_MODEL")
        assert len(await plain.store.ledger(plain.guild.id, plain.alice.id)) == 1  # the picture's job only


@pytest.mark.asyncio(loop_scope="function")
async def test_a_clip_is_a_job_on_the_postgres_claim_path(
    tmp_path: Path, tiny_model: Any, pg_url: str
) -> None:
    async with BotWorld.open(tmp_path, tiny_model) as pg_world:
        pg_world.extra_settings = {"database_url": pg_url, "video_model": "tiny-video", "video_cost": COST}
        await pg_world.start_bot()
        store = pg_world.running.store if pg_world.running else None
        assert store is not None
        one = await pg_world.wait_result(pg_world.imagine("a harbour at dawn --ar 3:2 --seed 6 --n 1"))
        clip = await pg_world.wait_result(
            pg_world.server.click(one, button(one, "Animate (Low motion)"), pg_world.bob)
        )
        record = await store.get_job(job_of(clip) or "")
        assert record is not None and record.state is JobState.DONE and record.images == COST
        assert record.owner_id == pg_world.bob.id and record.parent_job_id == job_of(one)
        assert probe_mp4(attachment(clip)[1]).frames == FRAMES
