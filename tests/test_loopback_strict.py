"""The strict loopback: Discord's spec refuses bad requests (and fails the test that sent one), channel
permissions, deleted channels, archived and locked threads, closed DMs, boost-tier upload limits,
intents, and the edit semantics of attachments, through the real discord.py client."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import discord
import pytest

from testkit.discord_loopback import (
    TIER_UPLOAD_LIMITS,
    Channel,
    DiscordLoopback,
    SpecMissing,
    SpecViolationError,
)
from testkit.discord_loopback.permissions import (
    ADMINISTRATOR,
    ALL_PERMISSIONS,
    ATTACH_FILES,
    SEND_MESSAGES,
    SEND_MESSAGES_IN_THREADS,
    VIEW_CHANNEL,
)
from testkit.discord_loopback.spec import load_spec

T = 10.0


async def _raw_post(server: DiscordLoopback, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    headers = {"Authorization": f"Bot {server.token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{server.api_base}{path}", json=body, headers=headers) as resp,
    ):
        return resp.status, await resp.json()


@pytest.fixture
async def client() -> AsyncIterator[tuple[DiscordLoopback, discord.Client]]:
    """A bare discord.py client (guilds intent only, like the bot's minus reactions) on loopback."""
    async with DiscordLoopback() as server:
        intents = discord.Intents.none()
        intents.guilds = True
        with server.patched_discord():
            bot = discord.Client(intents=intents, guild_ready_timeout=0.05)
            task = asyncio.create_task(bot.start(server.token))
            try:
                await server.wait_ready(timeout=T, commands=False)
                await asyncio.wait_for(bot.wait_until_ready(), T)
                yield server, bot
            finally:
                await bot.close()
                await asyncio.wait_for(task, T)


async def post(bot: discord.Client, channel: Channel, content: str) -> discord.Message:
    """The bare client posts `content` in a loopback channel or thread."""
    return await bot.get_partial_messageable(channel.id).send(content)


async def test_spec_refuses_with_field_paths_and_nothing_is_posted() -> None:
    async with DiscordLoopback() as server:
        guild = server.add_guild()
        channel = server.add_channel(guild)
        row = {"type": 1, "components": [{"type": 2, "style": 1, "label": "x" * 81, "custom_id": "a"}]}
        status, body = await _raw_post(
            server, f"/channels/{channel.id}/messages", {"content": "y" * 2001, "components": [row]}
        )
        assert status == 400 and body["code"] == 50035
        assert body["errors"]["content"]["_errors"][0]["code"] == "BASE_TYPE_MAX_LENGTH"
        assert "_errors" in body["errors"]["components"]["0"]["components"]["0"]["label"]
        assert server.channel_messages(channel) == []
        (violation,) = server.take_spec_violations()
        assert {p.path for p in violation.problems} == {"content", "components.0.components.0.label"}
        status, _ = await _raw_post(server, f"/channels/{channel.id}/messages", {"content": "y" * 2000})
        assert status == 200 and not server.spec_violations  # 2,000 characters is fine


async def test_a_refused_request_fails_the_block_that_sent_it() -> None:
    server = DiscordLoopback()
    with pytest.raises(SpecViolationError, match=r"POST /channels/\d+/messages: nonce"):
        async with server:
            channel = server.add_channel(server.add_guild())
            status, _ = await _raw_post(server, f"/channels/{channel.id}/messages", {"nonce": "n" * 26})
            assert status == 400


def test_a_missing_spec_fails_loudly(tmp_path: Path) -> None:
    with pytest.raises(SpecMissing, match="discord-api-spec"):
        load_spec(tmp_path / "discord-api-spec" / "openapi.json")


async def test_content_over_2000_through_discord_py(client: tuple[DiscordLoopback, discord.Client]) -> None:
    server, bot = client
    channel = server.add_channel(server.add_guild())
    with pytest.raises(discord.HTTPException) as refused:
        await bot.get_partial_messageable(channel.id).send("z" * 2001)
    assert refused.value.status == 400 and refused.value.code == 50035
    assert [v.problems[0].path for v in server.take_spec_violations()] == ["content"]


async def test_channel_permissions_deleted_channels_and_closed_dms(
    client: tuple[DiscordLoopback, discord.Client],
) -> None:
    server, bot = client
    guild = server.add_guild()
    hidden = server.add_channel(guild, bot_permissions=ALL_PERMISSIONS & ~VIEW_CHANNEL & ~ADMINISTRATOR)
    mute = server.add_channel(guild, bot_permissions=VIEW_CHANNEL)
    no_files = server.add_channel(guild, bot_permissions=VIEW_CHANNEL | SEND_MESSAGES)
    gone = server.add_channel(guild)
    server.delete_channel(gone)
    picture = discord.File(io.BytesIO(b"png"), "a.png")

    async def send(channel_id: int, **kw: Any) -> Any:
        return await bot.get_partial_messageable(channel_id).send("hi", **kw)

    for channel_id, kw, status, code in [
        (hidden.id, {}, 403, 50001),
        (mute.id, {}, 403, 50013),
        (no_files.id, {"file": picture}, 403, 50013),
        (gone.id, {}, 404, 10003),
    ]:
        with pytest.raises(discord.HTTPException) as refused:
            await send(channel_id, **kw)
        assert (refused.value.status, refused.value.code) == (status, code), channel_id
    assert (await send(no_files.id)).content == "hi"  # text alone is allowed there

    member = server.add_member(guild, "closed")
    member.user.dms_open = False
    dm = await bot.create_dm(discord.Object(member.id))
    with pytest.raises(discord.Forbidden) as refused_dm:
        await dm.send("hello")
    assert refused_dm.value.code == 50007


async def test_archived_and_locked_threads(client: tuple[DiscordLoopback, discord.Client]) -> None:
    server, bot = client
    guild = server.add_guild()
    thread = server.add_thread(server.add_channel(guild), "t")
    posted = await post(bot, thread, "first")
    server.update_channel(thread, archived=True)
    with pytest.raises(discord.HTTPException) as archived:
        await posted.edit(content="edited")
    assert (archived.value.status, archived.value.code) == (400, 50083)
    await post(bot, thread, "unarchives")  # as on Discord
    assert not thread.archived
    server.update_channel(thread, locked=True)
    with pytest.raises(discord.HTTPException) as locked:
        await post(bot, thread, "locked")
    assert locked.value.code == 160005
    threadless = server.add_thread(server.add_channel(guild, bot_permissions=VIEW_CHANNEL | SEND_MESSAGES))
    with pytest.raises(discord.Forbidden) as no_thread_send:
        await post(bot, threadless, "no")
    assert no_thread_send.value.code == 50013
    server.update_channel(threadless, bot_permissions=VIEW_CHANNEL | SEND_MESSAGES_IN_THREADS | ATTACH_FILES)
    await post(bot, threadless, "yes")


async def test_boost_tiers_set_the_channel_upload_limit(
    client: tuple[DiscordLoopback, discord.Client],
) -> None:
    server, bot = client
    plain, boosted = server.add_guild("plain"), server.add_guild("boosted", premium_tier=2)
    cached = await bot.wait_for("guild_available", check=lambda g: g.id == boosted.id, timeout=T)
    assert cached.filesize_limit == TIER_UPLOAD_LIMITS[2] == 50 * 2**20
    big = b"\0" * (TIER_UPLOAD_LIMITS[0] + 1)
    with pytest.raises(discord.HTTPException) as too_large:
        await bot.get_partial_messageable(server.add_channel(plain).id).send(
            file=discord.File(io.BytesIO(big), "big.bin")
        )
    assert (too_large.value.status, too_large.value.code) == (413, 40005)
    sent = await bot.get_partial_messageable(server.add_channel(boosted).id).send(
        file=discord.File(io.BytesIO(big), "big.bin")
    )
    assert sent.attachments[0].size == len(big)


async def test_intents_are_honoured(client: tuple[DiscordLoopback, discord.Client]) -> None:
    server, bot = client
    guild = server.add_guild()
    channel = server.add_channel(guild)
    member = server.add_member(guild, "reacts")
    message = await post(bot, channel, "react to me")
    stored = server.messages[message.id]
    server.react(stored, "🔄", member)
    server.post_as(channel, member, "hello")
    # guilds only: no reactions, no guild messages, no members
    assert server.dropped_events.count("MESSAGE_REACTION_ADD") == 1
    assert {"MESSAGE_CREATE", "GUILD_MEMBER_ADD"} <= set(server.dropped_events)
    assert "GUILD_CREATE" not in server.dropped_events


async def test_edit_keeps_only_the_attachments_it_lists(
    client: tuple[DiscordLoopback, discord.Client],
) -> None:
    server, bot = client
    channel = server.add_channel(server.add_guild())
    files = [discord.File(io.BytesIO(b"a"), "a.png"), discord.File(io.BytesIO(b"b"), "b.png")]
    message = await bot.get_partial_messageable(channel.id).send("two", files=files)
    assert [a.filename for a in message.attachments] == ["a.png", "b.png"]
    kept = await message.edit(attachments=[message.attachments[1]])
    assert [a.filename for a in kept.attachments] == ["b.png"]
    appended = await kept.add_files(discord.File(io.BytesIO(b"c"), "c.png"))
    assert [a.filename for a in appended.attachments] == ["b.png", "c.png"]
    cleared = await appended.edit(attachments=[])
    assert cleared.attachments == [] and server.messages[message.id].attachments == []
