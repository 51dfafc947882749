"""What real Discord does to the bot, through the real discord.py client and the strict loopback:
deliveries refused for good (fail at once, refund, tell the owner privately, never retry), its own
permissions checked before a job is accepted, long lists cut to 2,000 characters, long rate limits,
and command sync only when the commands changed.

Jobs wait at the `FaultyEngine`'s gate (after their one progress edit) while a test changes the world
under them: a revoked permission, a deleted channel, an archived or locked thread, an expired token.
Nothing sleeps: waits are on server state, engine events and the runner's own task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from storage.interface import JobRecord, JobState, LimitsPatch, Scope
from testkit.discord_loopback import Channel, DiscordLoopback, InteractionRecord, Member
from testkit.discord_loopback.permissions import (
    ADD_REACTIONS,
    ATTACH_FILES,
    SEND_MESSAGES,
    VIEW_CHANNEL,
)
from tests.bot_harness import BotWorld, FaultyEngine, T
from tests.world_fixtures import started_world

pytestmark = pytest.mark.asyncio(loop_scope="module")

WEBHOOK_EDIT = "PATCH /webhooks/*/messages/@original"


# One progress edit per job: the first.
world = started_world("discord-faults", engine_wrapper=FaultyEngine, bot_options={"edit_interval_s": 3600.0})


@pytest.fixture
def engine(world: BotWorld) -> Iterator[FaultyEngine]:
    engine = world.running.service._engine if world.running else None
    assert isinstance(engine, FaultyEngine)
    for event in (engine.release, engine.gate, engine.at_gate, engine.hung):
        event.clear()
    yield engine
    engine.gate.set()


@dataclass
class Gated:
    """A job waiting at the engine's gate, and how to find what it did."""

    rec: InteractionRecord
    job: JobRecord
    channel: Channel
    member: Member


async def _gated(world: BotWorld, engine: FaultyEngine, channel: Channel, member: Member) -> Gated:
    rec = world.imagine(f"{FaultyEngine.GATE} a lighthouse --steps 2", member=member, channel=channel)
    assert await asyncio.to_thread(engine.at_gate.wait, T), "the engine never got there"
    await rec.wait_final(lambda r: len(r.original_history) >= 2, timeout=T)  # defer + its one edit
    [job] = [j for j in await world.store.queued_jobs(world.guild.id) if j.owner_id == member.id]
    return Gated(rec, job, channel, member)


async def _settled(world: BotWorld, engine: FaultyEngine, gated: Gated) -> JobRecord:
    """Release the gate; return the job once this process is done with it (no retry keeps it busy)."""
    engine.gate.set()
    await asyncio.wait_for(world.bot.runner.wait(gated.job.job_id), T)
    job = await world.store.get_job(gated.job.job_id)
    assert job is not None
    return job


async def _used(world: BotWorld, member: Member) -> int:
    usage = await world.store.usage(world.guild.id, member.id, (), world.bot.clock())
    return usage.used_last_hour


def _requests(server: DiscordLoopback, method: str, path: str) -> list[int]:
    return [r.status for r in server.requests if r.method == method and r.path == path]


def _original_edits(server: DiscordLoopback) -> list[int]:
    return [r.status for r in server.requests if r.method == "PATCH" and r.path.endswith("/@original")]


def _dms(server: DiscordLoopback, member: Member) -> list[str]:
    dm = server._dm_channel(member.user)
    return [m.content for m in server.channel_messages(dm)]


def _revoke(permissions: int) -> Callable[[DiscordLoopback, Channel], None]:
    return lambda server, channel: server.update_channel(channel, bot_permissions=permissions)


@pytest.mark.parametrize(
    ("change", "status", "reason"),
    [
        (_revoke(VIEW_CHANNEL | SEND_MESSAGES), 403, "missing a permission"),  # 50013: no Attach Files
        (_revoke(0), 403, "can't see that channel"),  # 50001
        (lambda server, channel: server.delete_channel(channel), 404, "no longer exists"),  # 10003
    ],
    ids=["missing-permissions", "missing-access", "unknown-channel"],
)
async def test_channel_post_refused_for_good_after_the_token_expired(
    world: BotWorld,
    engine: FaultyEngine,
    change: Callable[[DiscordLoopback, Channel], None],
    status: int,
    reason: str,
) -> None:
    server = world.server
    channel = server.add_channel(world.guild)
    member = world.bob
    before = await _used(world, member)
    gated = await _gated(world, engine, channel, member)
    assert await _used(world, member) == before + 1
    server.expire_token(gated.rec)  # the result must go to the channel
    change(server, channel)
    job = await _settled(world, engine, gated)
    assert job.state is JobState.FAILED and job.error is not None and reason in job.error
    assert job.result_message_id is None and await _used(world, member) == before  # refunded
    posts = _requests(server, "POST", f"/channels/{channel.id}/messages")
    assert posts == [status]  # refused once, never retried
    [told] = [t for t in _dms(server, member) if job.job_id in t]  # the token is gone: a DM
    assert reason in told and "given back" in told


@pytest.mark.parametrize("where", ["archived-thread", "deleted-original", "too-large"])
async def test_interaction_edit_refused_for_good_tells_the_owner_privately(
    world: BotWorld, engine: FaultyEngine, where: str
) -> None:
    server = world.server
    channel = server.add_thread(world.channel, f"thread-{where}")
    member = world.carol
    before = await _used(world, member)
    gated = await _gated(world, engine, channel, member)
    if where == "archived-thread":
        server.update_channel(channel, archived=True)
    elif where == "deleted-original":
        assert gated.rec.original is not None
        server._delete_message(gated.rec.original)
    else:
        server.fail_next(WEBHOOK_EDIT, 413, code=40005)
    edits_before = len(_original_edits(server))
    job = await _settled(world, engine, gated)
    assert job.state is JobState.FAILED and await _used(world, member) == before
    # the result's edit, refused once; then the tell's best-effort edit before its ephemeral followup
    expected = {"archived-thread": 400, "deleted-original": 404, "too-large": 413}[where]
    assert _original_edits(server)[edits_before:][:1] == [expected]
    assert len(_original_edits(server)[edits_before:]) == 2
    told = await gated.rec.wait_final(
        lambda r: any(m.ephemeral and job.job_id in m.content for m in r.followups), timeout=T
    )
    assert any("given back" in m.content for m in told.followups if m.ephemeral)
    assert _requests(server, "POST", f"/channels/{channel.id}/messages") == []  # no channel retry


async def test_closed_direct_messages_are_logged(world: BotWorld, engine: FaultyEngine) -> None:
    server = world.server
    channel = server.add_channel(world.guild)
    member = server.add_member(world.guild, "private")
    member.user.dms_open = False
    gated = await _gated(world, engine, channel, member)
    server.expire_token(gated.rec)
    server.delete_channel(channel)
    job = await _settled(world, engine, gated)
    assert job.state is JobState.FAILED
    assert f"job {job.job_id}: owner {member.id} not told (direct messages closed)" in world.logs.text
    assert _dms(server, member) == []


async def test_a_refused_job_is_not_taken_up_again_after_a_restart(
    world: BotWorld, engine: FaultyEngine
) -> None:
    server = world.server
    channel = server.add_channel(world.guild)
    gated = await _gated(world, engine, channel, world.dave)
    server.expire_token(gated.rec)
    server.update_channel(channel, bot_permissions=VIEW_CHANNEL)
    job = await _settled(world, engine, gated)
    assert job.state is JobState.FAILED and await world.store.undelivered_jobs() == []
    await world.restart_bot()
    assert not world.bot.runner.is_active(job.job_id)
    again = await world.store.get_job(job.job_id)
    assert again is not None and again.state is JobState.FAILED
    assert _requests(server, "POST", f"/channels/{channel.id}/messages") == [403]  # still the one


@pytest.mark.parametrize(
    ("permissions", "thread", "missing"),
    [
        (VIEW_CHANNEL | SEND_MESSAGES, False, "Attach Files"),
        (VIEW_CHANNEL | SEND_MESSAGES | ATTACH_FILES, True, "Send Messages in Threads"),
        (ADD_REACTIONS, False, "View Channel"),
    ],
)
async def test_imagine_refused_where_the_bot_cannot_post(
    world: BotWorld, permissions: int, thread: bool, missing: str
) -> None:
    server = world.server
    channel = server.add_channel(world.guild, bot_permissions=permissions)
    if thread:
        channel = server.add_thread(channel)
    before = await _used(world, world.dave)
    rec = world.imagine("a fox", member=world.dave, channel=channel)
    await rec.wait_final(timeout=T)
    assert rec.callback_type == 4 and rec.original is not None and rec.original.ephemeral
    assert missing in rec.original.content and "Nothing was spent" in rec.original.content
    assert await _used(world, world.dave) == before
    assert not [j for j in await world.store.queued_jobs(world.guild.id) if j.owner_id == world.dave.id]


async def test_limits_show_with_many_role_overrides_fits_one_message(world: BotWorld) -> None:
    for i in range(150):
        await world.store.set_limits(world.guild.id, Scope.ROLE, 10_000 + i, LimitsPatch(images_per_hour=i))
    rec = world.server.invoke(
        "limits", {}, subcommand="show", guild=world.guild, channel=world.channel, member=world.boss
    )
    message = await world.wait_ephemeral(rec)
    assert len(message.content) <= 2000
    shown = message.content.count("\n• ")
    assert 0 < shown < 150 and f"… and {150 - shown} more" in message.content
    assert "**Role overrides (150):**" in message.content and "**Effective default:**" in message.content
    assert not world.server.spec_violations


async def test_a_long_rate_limit_raises_instead_of_sleeping_and_is_retried(
    world: BotWorld, engine: FaultyEngine
) -> None:
    channel = world.server.add_channel(world.guild)
    gated = await _gated(world, engine, channel, world.alice)
    world.server.expire_token(gated.rec)  # a channel post: discord.py's HTTP client and its limit
    path = f"/channels/{channel.id}/messages"
    fault = world.server.fail_next(f"POST {path}", 429, retry_after=45.0, is_global=True)
    job = await _settled(world, engine, gated)  # within T (20 s): discord.py did not sleep 45 s
    assert job.state is JobState.DONE and job.result_message_id is not None
    assert fault.hits == [f"POST {path}"] and _requests(world.server, "POST", path) == [429, 200]
    assert "too long, erroring instead" in world.logs.text


async def test_commands_sync_only_when_they_changed(world: BotWorld) -> None:
    server = world.server
    syncs = len(server.command_syncs)
    await world.restart_bot()
    assert len(server.command_syncs) == syncs  # same tree: fetched, compared, not synced
    server.commands[None] = [c for c in server.commands[None] if c["name"] != "help"]  # Discord lost one
    world.extra_settings = {"shard_count": 2, "shard_ids": (1,)}
    try:
        await world.restart_bot()
        assert len(server.command_syncs) == syncs  # not the shard-0 process: leaves it to that one
    finally:
        world.extra_settings = {}
    await world.restart_bot()
    assert len(server.command_syncs) == syncs + 1
    assert {c["name"] for c in server.commands[None]} >= {"help", "imagine"}
