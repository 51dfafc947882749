"""Job controls through the real discord.py client: `Cancel` on the progress message, 📋 and 🗑️ on a
result, and `/show job:` (tests/bot_harness.py builds the bot on the loopback Discord and `tiny`)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bot.views.custom_ids import SECOND_MODEL_BUTTONS
from bot.views.edit_buttons import EDIT_BUTTON_LOOKS
from storage.interface import JobState
from testkit.answers import job_of
from testkit.discord_loopback import InteractionRecord, Member, Message
from tests.bot_harness import BotWorld, FaultyEngine, T
from tests.world_fixtures import started_world

pytest_plugins = ["tests.fixtures_generation", "tests.pg_fixtures"]
pytestmark = pytest.mark.asyncio(loop_scope="module")

MANAGE_MESSAGES = 1 << 13


world = started_world("job-controls", engine_wrapper=FaultyEngine)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def owl(world: BotWorld) -> Message:
    """A finished one-image result of alice's."""
    return await world.wait_result(world.imagine("an owl at dusk --seed 5 --n 1", member=world.alice))


def _id(message: Message, action: str) -> str:
    ids = [cid for cid in message.custom_ids if cid.startswith(f"imagine:{action}:")]
    assert len(ids) == 1, message.custom_ids
    return ids[0]


async def _private(world: BotWorld, rec: InteractionRecord, *fragments: str) -> str:
    text = (await world.wait_ephemeral(rec)).content
    for fragment in fragments:
        assert fragment.lower() in text.lower(), text
    return text


def _labels(message: Message) -> list[str]:
    return [
        c.get("label") or c.get("emoji", {}).get("name")
        for row in message.components
        for c in row["components"]
    ]


# -- Cancel ---------------------------------------------------------------------------------------------


async def cancel_by_button(world: BotWorld, engine: FaultyEngine, member: Member, stranger: Member) -> None:
    """A held job of `member`'s: the stranger's click on `Cancel` is refused, the owner's cancels and
    refunds it."""
    store = world.running.store if world.running else None
    assert store is not None
    rec = world.imagine(f"{FaultyEngine.GATE} a slow lighthouse --steps 2", member=member)
    assert await asyncio.to_thread(engine.at_gate.wait, T), "the job never started"
    await rec.wait_final(lambda r: r.original is not None and "Cancel" in _labels(r.original), timeout=T)
    progress = rec.original
    assert progress is not None and not progress.deleted
    cancel_id = _id(progress, "c")
    job_id = cancel_id.split(":")[2]

    await _private(world, world.server.click(progress, cancel_id, stranger), "only the member who started")
    job = await store.get_job(job_id)
    assert job is not None and job.state in (JobState.QUEUED, JobState.RUNNING) and not job.refunded

    await _private(
        world, world.server.click(progress, cancel_id, member), f"cancelling `{job_id}`", "given back"
    )
    engine.gate.set()
    await rec.wait_final(lambda r: r.original is None or "cancelled" in r.original.content.lower(), timeout=T)
    job = await store.get_job(job_id)
    assert job is not None and job.state is JobState.CANCELLED and job.refunded
    [entry] = [e for e in await store.ledger(world.guild.id, member.id) if e.job_id == job_id]
    assert entry.refunded


async def test_cancel_on_the_progress_message_is_the_owners_and_refunds(
    world: BotWorld, engine: FaultyEngine
) -> None:
    await cancel_by_button(world, engine, world.carol, world.dave)


@pytest.mark.asyncio(loop_scope="function")
async def test_cancel_by_button_refunds_on_postgres(tmp_path: Path, tiny_model: Any, pg_url: str) -> None:
    async with BotWorld.open(tmp_path, tiny_model) as pg_world:
        pg_world.engine_wrapper = FaultyEngine
        pg_world.extra_settings = {"database_url": pg_url}
        await pg_world.start_bot()
        engine = pg_world.running.service._engine if pg_world.running else None
        assert isinstance(engine, FaultyEngine)
        try:
            await cancel_by_button(pg_world, engine, pg_world.alice, pg_world.bob)
        finally:
            engine.gate.set()


# -- 📋 ---------------------------------------------------------------------------------------------------


async def test_result_buttons_include_info_and_delete(owl: Message) -> None:
    edits = [
        str(label or emoji)
        for button, (label, emoji, _row) in EDIT_BUTTON_LOOKS.items()
        if label != "Make Square" and button not in SECOND_MODEL_BUTTONS  # no VIDEO_MODEL, EDIT_MODEL here
    ]
    assert sorted(_labels(owl)) == sorted(["U1", "🔄", "V1", "📋", "🗑️", *edits])  # a square picture


async def test_info_shows_the_jobs_parameters_privately(world: BotWorld, owl: Message) -> None:
    parent = job_of(owl)
    text = await _private(
        world, world.server.click(owl, _id(owl, "i"), world.bob), "an owl at dusk", "seeds:** 5", "tiny"
    )
    assert f"`{parent}`" in text and "made from:** the prompt alone" in text.lower()
    assert "64×64" in text and "sampler:** the model's own" in text.lower()

    tiled = await world.wait_result(
        world.imagine("a tiled wall --n 1 --sampler euler_a --tile", member=world.bob)
    )
    text = await _private(world, world.server.click(tiled, _id(tiled, "i"), world.bob))
    assert "sampler:** euler a" in text.lower() and "also:** tiled" in text.lower()

    variation = await world.wait_result(world.server.click(owl, f"imagine:v:{parent}:1", world.bob))
    text = await _private(world, world.server.click(variation, _id(variation, "i"), world.alice))
    assert f"a variation of image 1 of job `{parent}`" in text.lower()
    assert "strength" in text.lower()


# -- 🗑️ ---------------------------------------------------------------------------------------------------


async def test_delete_is_for_the_owner_or_a_moderator(world: BotWorld) -> None:
    mine = await world.wait_result(world.imagine("a red kite --n 1", member=world.alice))
    member = world.guild.permissions_of(world.bob) & ~MANAGE_MESSAGES
    refused = world.server.click(mine, _id(mine, "d"), world.bob, permissions=member)
    await _private(world, refused, "only the member who made this picture")
    assert not world.server.messages[mine.id].deleted

    await _private(world, world.server.click(mine, _id(mine, "d"), world.alice), "deleted")
    assert world.server.messages[mine.id].deleted

    theirs = await world.wait_result(world.imagine("a blue kite --n 1", member=world.alice))
    rec = world.server.click(theirs, _id(theirs, "d"), world.bob, permissions=member | MANAGE_MESSAGES)
    await _private(world, rec, "deleted")
    assert world.server.messages[theirs.id].deleted
    job = await world.store.get_job(job_of(theirs) or "")
    assert job is not None and job.state is JobState.DONE  # the job and its pictures stay: /show works


# -- /show --------------------------------------------------------------------------------------------------


def _show(world: BotWorld, job: str, member: Member) -> InteractionRecord:
    return world.server.invoke("show", {"job": job}, guild=world.guild, channel=world.channel, member=member)


async def test_show_reposts_a_finished_result_with_working_buttons(world: BotWorld, owl: Message) -> None:
    parent = job_of(owl)
    assert parent is not None
    again = await world.wait_result(_show(world, parent, world.carol))
    assert again.id != owl.id and job_of(again) == parent
    assert [a.data for a in again.attachments] == [a.data for a in owl.attachments]
    assert sorted(_labels(again)) == sorted(_labels(owl))
    upscale = await world.wait_result(world.server.click(again, f"imagine:u:{parent}:1", world.carol))
    child = await world.store.get_job(job_of(upscale) or "")
    assert child is not None and child.parent_job_id == parent and child.owner_id == world.carol.id


async def test_show_refuses_unknown_jobs_and_lost_pictures(world: BotWorld) -> None:
    await _private(world, _show(world, "0123456789ab", world.bob), "no job with that id")
    await _private(world, _show(world, "not a job", world.bob), "no job with that id")
    gone = await world.wait_result(world.imagine("a fading photo --n 1", member=world.bob))
    record = await world.store.get_job(job_of(gone) or "")
    assert record is not None
    for path in record.image_paths:
        await asyncio.to_thread(Path(path).unlink)
    await _private(world, _show(world, record.job_id, world.bob), "no longer kept")
