"""The loopback Discord server against the real discord.py client (a tiny bot, no bot/ code)."""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import discord
import pytest
from discord import app_commands
from PIL import Image

from testkit.discord_loopback import (
    EPHEMERAL,
    Channel,
    CommandNotPermitted,
    DiscordLoopback,
    Guild,
    InteractionRecord,
    LoopbackError,
    Member,
)

T = 10.0  # generous timeout for every wait; nothing here sleeps


class JobButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"tiny:job:(?P<id>\d+)"):
    def __init__(self, job_id: int) -> None:
        super().__init__(discord.ui.Button(label="job", custom_id=f"tiny:job:{job_id}"))
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> JobButton:
        return cls(int(match["id"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await interaction.response.send_message(f"job {self.job_id}", ephemeral=True)


class AgainView(discord.ui.View):
    def __init__(self) -> None:
        super().__init__(timeout=None)
        self.add_item(JobButton(7))

    @discord.ui.button(label="again", custom_id="tiny:again")
    async def again(self, interaction: discord.Interaction[Any], button: discord.ui.Button[Any]) -> None:
        await interaction.response.edit_message(content="again!")


class AskModal(discord.ui.Modal, title="Ask"):
    answer: discord.ui.TextInput[AskModal] = discord.ui.TextInput(label="answer", custom_id="ask:answer")

    async def on_submit(self, interaction: discord.Interaction[Any]) -> None:
        await interaction.response.send_message(f"got {self.answer.value}", ephemeral=True)


class TinyBot(discord.Client):
    """A bare discord.py client with a few app commands and recorders for the tests."""

    def __init__(self, guild_id: int) -> None:
        super().__init__(intents=discord.Intents.default(), guild_ready_timeout=0.05)
        self.tree = app_commands.CommandTree(self)
        self.guild_id = guild_id
        self.events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.release = asyncio.Event()
        self._add_commands()

    async def setup_hook(self) -> None:
        self.add_view(AgainView())
        self.add_dynamic_items(JobButton)
        await self.tree.sync()
        await self.tree.sync(guild=discord.Object(self.guild_id))

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        self.events.put_nowait(("raw_reaction", payload))

    async def on_reaction_add(self, reaction: discord.Reaction, user: discord.abc.User) -> None:
        self.events.put_nowait(("reaction", (reaction, user)))

    async def next_event(self, name: str) -> Any:
        while True:
            got, value = await asyncio.wait_for(self.events.get(), T)
            if got == name:
                return value

    def _add_commands(self) -> None:
        tree = self.tree

        @tree.command(description="draw a picture")
        @app_commands.describe(prompt="what to draw")
        async def draw(
            interaction: discord.Interaction[Any],
            prompt: str,
            image: discord.Attachment | None = None,
            count: app_commands.Range[int, 1, 4] = 1,
        ) -> None:
            await interaction.response.defer(thinking=True)
            data = await image.read() if image else f"{prompt}x{count}".encode()
            try:
                await interaction.edit_original_response(
                    content=f"drew {prompt}",
                    attachments=[discord.File(io.BytesIO(data), "out.png")],
                    view=AgainView(),
                )
            except discord.HTTPException as e:
                await interaction.followup.send(f"error {e.code}", ephemeral=True)
                return
            await interaction.followup.send("only you see this", ephemeral=True)

        @tree.command(description="admins only")
        @app_commands.default_permissions(manage_guild=True)
        async def admin(interaction: discord.Interaction[Any]) -> None:
            allowed = interaction.permissions.manage_guild
            await interaction.response.send_message(f"manage_guild={allowed}", ephemeral=True)

        @tree.command(description="answers only when released")
        async def slow(interaction: discord.Interaction[Any]) -> None:
            self.events.put_nowait(("slow_started", interaction.id))
            await self.release.wait()
            try:
                await interaction.response.defer()
            except discord.NotFound as e:
                self.events.put_nowait(("slow_error", e.code))

        @tree.command(description="asks with a modal")
        async def ask(interaction: discord.Interaction[Any]) -> None:
            await interaction.response.send_modal(AskModal())

        @tree.command(description="guild only", guild=discord.Object(self.guild_id))
        async def ping(interaction: discord.Interaction[Any]) -> None:
            await interaction.response.send_message("pong")


@dataclass
class World:
    server: DiscordLoopback
    bot: TinyBot
    guild: Guild
    channel: Channel
    nsfw: Channel
    alice: Member
    boss: Member


@pytest.fixture
async def world() -> AsyncIterator[World]:
    async with DiscordLoopback() as server:
        guild = server.add_guild("tiny guild")
        channel = server.add_channel(guild, "general")
        nsfw = server.add_channel(guild, "after-dark", nsfw=True)
        alice = server.add_member(guild, "alice")
        boss = server.add_member(guild, "boss", admin=True)
        with server.patched_discord():
            bot = TinyBot(guild.id)
            task = asyncio.create_task(bot.start(server.token))
            try:
                await server.wait_ready(timeout=T)
                yield World(server, bot, guild, channel, nsfw, alice, boss)
            finally:
                await bot.close()
                await asyncio.wait_for(task, T)


def png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), "red").save(buf, "PNG")
    return buf.getvalue()


def draw(
    w: World, prompt: str = "fox", options: dict[str, Any] | None = None, **kw: Any
) -> InteractionRecord:
    opts = {"prompt": prompt, **(options or {})}
    return w.server.invoke("draw", opts, guild=w.guild, channel=w.channel, member=w.alice, **kw)


def done(rec: InteractionRecord) -> bool:
    return bool(rec.followups) or bool(rec.original and not rec.original.loading and rec.original.attachments)


async def test_connects_identifies_and_syncs_commands(world: World) -> None:
    server, bot = world.server, world.bot
    await asyncio.wait_for(bot.wait_until_ready(), T)
    assert bot.user is not None and bot.user.id == server.bot_user.id
    assert server.identifies[0]["intents"] == discord.Intents.default().value
    assert server.gateway_queries[0]["compress"] == "zlib-stream"
    assert server.heartbeats >= 1
    drawn = server.command("draw")
    opts = {o["name"]: o for o in drawn["options"]}
    assert opts["prompt"]["type"] == 3 and opts["prompt"]["required"]
    assert opts["image"]["type"] == 11
    assert (opts["count"]["min_value"], opts["count"]["max_value"]) == (1, 4)
    assert server.command("admin")["default_member_permissions"] == "32"
    assert server.command("ping", world.guild)["guild_id"] == str(world.guild.id)
    with pytest.raises(LoopbackError):
        server.command("ping")  # a guild command is not global
    g = bot.get_guild(world.guild.id)
    assert g is not None and g.me is not None
    nsfw = g.get_channel(world.nsfw.id)
    assert isinstance(nsfw, discord.TextChannel) and nsfw.is_nsfw()
    assert g.member_count == 4  # bot, owner, alice, boss (the member list itself needs the members intent)


async def test_defer_edit_with_file_and_ephemeral_followup(world: World) -> None:
    server = world.server
    picture = png_bytes()
    rec = draw(
        world, attachments={"image": server.upload("in.png", picture, "image/png")}, options={"count": 2}
    )
    await rec.wait_final(lambda r: bool(r.followups), timeout=T)
    assert rec.callback_type == 5 and rec.responses_count == 1
    assert rec.ack_latency is not None and 0 <= rec.ack_latency < 3
    orig = rec.original
    assert orig is not None and not orig.ephemeral and not orig.loading
    assert orig.content == "drew fox"
    assert [(a.filename, a.data, a.size) for a in orig.attachments] == [("out.png", picture, len(picture))]
    assert orig.custom_ids == ["tiny:again", "tiny:job:7"]
    assert [h.kind for h in rec.original_history] == ["create", "edit"]
    assert rec.original_history[0].flags & 128  # loading, then the edit cleared it
    (followup,) = rec.followups
    assert followup.ephemeral and followup.content == "only you see this"
    assert rec.ephemeral_messages == [followup]
    assert server.channel_messages(world.channel) == [orig]  # ephemeral followups are not in the channel


async def test_upload_over_limit_gets_413_and_first_followup_replaces_the_deferral(world: World) -> None:
    rec = draw(world, prompt="a very long prompt", attachment_size_limit=8)
    await rec.wait_final(timeout=T)
    orig = rec.original
    assert orig is not None and orig.content == "error 40005" and not orig.attachments
    assert rec.followups == [] and not orig.ephemeral  # the ephemeral flag of that followup is ignored
    assert any(r.status == 413 for r in world.server.requests)


async def test_persistent_button_and_dynamic_item(world: World) -> None:
    server = world.server
    rec = draw(world)
    await rec.wait_final(done, timeout=T)
    result = rec.original
    assert result is not None
    again = server.click(result, "tiny:again", world.boss)
    await again.wait_final(lambda r: r.acknowledged, timeout=T)
    assert again.callback_type == 7 and result.content == "again!"
    job = server.click(result, "tiny:job:7", world.boss)
    await job.wait_final(timeout=T)
    assert job.callback_type == 4 and job.original is not None
    assert job.original.content == "job 7" and job.original.flags & EPHEMERAL
    with pytest.raises(LoopbackError):
        server.click(result, "tiny:nope", world.boss)


async def test_reaction_reaches_raw_and_cached_handlers(world: World) -> None:
    rec = draw(world)
    await rec.wait_final(done, timeout=T)
    assert rec.original is not None
    world.server.react(rec.original, "🔄", world.alice)
    raw = await world.bot.next_event("raw_reaction")
    assert (raw.message_id, raw.user_id, str(raw.emoji)) == (rec.original.id, world.alice.id, "🔄")
    reaction, user = await world.bot.next_event("reaction")  # the bot had the message cached (MESSAGE_CREATE)
    assert reaction.message.id == rec.original.id and user.id == world.alice.id


async def test_three_second_rule_and_double_ack(world: World) -> None:
    server, bot = world.server, world.bot
    rec = server.invoke("slow", {}, guild=world.guild, channel=world.channel, member=world.alice)
    assert await bot.next_event("slow_started") == rec.id
    server.advance_clock(3.5)  # "late" without waiting
    bot.release.set()
    assert await bot.next_event("slow_error") == 10062
    assert not rec.acknowledged and rec.rejected_callbacks[0].code == 10062

    first = draw(world)
    await first.wait_final(done, timeout=T)
    url = f"{server.api_base}/interactions/{first.id}/{first.token}/callback"
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, json={"type": 4, "data": {"content": "x"}}) as r,
    ):
        assert r.status == 400 and (await r.json())["code"] == 40060
        assert r.headers["Content-Type"] == "application/json"
    original = f"{server.api_base}/webhooks/{server.application_id}/{first.token}/messages/@original"
    async with aiohttp.ClientSession() as http:
        async with http.get(original) as r:
            assert r.status == 200 and (await r.json())["content"] == "drew fox"
        async with http.delete(original) as r:
            assert r.status == 204
    assert first.original is not None and first.original.deleted
    server.expire_token(first)
    hook = f"{server.api_base}/webhooks/{server.application_id}/{first.token}?wait=1"
    async with aiohttp.ClientSession() as http, http.post(hook, json={"content": "late"}) as r:
        assert r.status == 401 and (await r.json())["code"] == 50027


async def test_default_member_permissions(world: World) -> None:
    server = world.server
    kw: dict[str, Any] = {"guild": world.guild, "channel": world.channel}
    with pytest.raises(CommandNotPermitted):
        server.invoke("admin", {}, member=world.alice, **kw)
    ok = server.invoke("admin", {}, member=world.boss, **kw)
    forged = server.invoke("admin", {}, member=world.alice, enforce_default_permissions=False, **kw)
    for rec, expected in ((ok, "manage_guild=True"), (forged, "manage_guild=False")):
        await rec.wait_final(timeout=T)
        assert rec.original is not None and rec.original.content == expected
    with pytest.raises(LoopbackError):
        draw(world, options={"count": 9})  # Discord's client refuses out-of-range values


async def test_gateway_drop_resumes_and_replays_missed_interaction(world: World) -> None:
    server = world.server
    await server.drop_gateway()
    rec = draw(world)  # dispatched while the socket is down: replayed on RESUME
    await server.wait_for_resume(1, timeout=T)
    await rec.wait_final(done, timeout=T)
    assert len(server.identifies) == 1 and len(server.resumes) == 1
    assert server.gateway_connects == 2
    ping = server.invoke("ping", {}, guild=world.guild, channel=world.channel, member=world.alice)
    await ping.wait_final(timeout=T)
    assert ping.original is not None and ping.original.content == "pong"


async def test_rate_limited_followup_is_retried(world: World) -> None:
    fault = world.server.fail_next("POST /webhooks/*", 429, retry_after=0.05)
    rec = draw(world)
    await rec.wait_final(lambda r: bool(r.followups), timeout=T)
    assert len(fault.hits) == 1
    assert [m.content for m in rec.followups] == ["only you see this"]
    statuses = [
        r.status for r in world.server.requests if r.method == "POST" and r.path.startswith("/webhooks/")
    ]
    assert statuses == [429, 200]


async def test_stalled_channel_post_waits_until_released(world: World) -> None:
    server, bot = world.server, world.bot
    stall = server.stall_next("POST /channels/*/messages")
    channel = bot.get_channel(world.channel.id)
    assert isinstance(channel, discord.TextChannel)
    send = asyncio.create_task(channel.send("hello", file=discord.File(io.BytesIO(b"abc"), "a.txt")))
    await asyncio.wait_for(stall.stalled.wait(), T)
    assert not send.done() and server.channel_messages(world.channel) == []
    stall.release()
    sent = await asyncio.wait_for(send, T)
    stored = await server.wait_for_message(world.channel, lambda m: m.content == "hello", timeout=T)
    assert stored.id == sent.id and stored.attachments[0].data == b"abc"
    assert sent.attachments[0].size == 3


async def test_modal_round_trip(world: World) -> None:
    server = world.server
    rec = server.invoke("ask", {}, guild=world.guild, channel=world.channel, member=world.alice)
    await rec.wait_final(lambda r: r.acknowledged, timeout=T)
    assert rec.callback_type == 9 and rec.modal is not None and rec.modal["custom_id"]
    submit = server.submit_modal(rec, {"ask:answer": "blue"}, world.alice)
    await submit.wait_final(timeout=T)
    assert submit.original is not None and submit.original.content == "got blue" and submit.original.ephemeral


async def test_channel_message_edit_delete_and_server_error_retry(world: World) -> None:
    server, bot = world.server, world.bot
    fault = server.fail_next("POST /channels/*/messages", 502)
    channel = bot.get_channel(world.channel.id)
    assert isinstance(channel, discord.TextChannel)
    sent = await asyncio.wait_for(channel.send("v1"), T)  # discord.py retries a 502 after ~1 s
    assert len(fault.hits) == 1
    fetched = await channel.fetch_message(sent.id)
    assert fetched.content == "v1" and fetched.author.id == server.bot_user.id
    await sent.edit(content="v2")
    await sent.add_reaction("✅")
    stored = server.messages[sent.id]
    assert stored.content == "v2" and stored.reactions["✅"] == {server.bot_user.id}
    assert [h.kind for h in stored.history] == ["create", "edit"]
    await sent.delete()
    assert server.channel_messages(world.channel) == []
    with pytest.raises(discord.NotFound):
        await channel.fetch_message(sent.id)
