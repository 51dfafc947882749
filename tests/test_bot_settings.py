"""/settings, /server-defaults, /prefer and the prompt grammar through the real discord.py client
against the loopback Discord, a real SQLite store and the tiny model (tests/bot_harness.py)."""

from __future__ import annotations

from typing import Any

import pytest

from generation.media.compose import read_parameters
from generation.prompts.grammar import MAX_MACROS
from generation.prompts.request import GenerationRequest
from storage.interface import PromptSettings
from testkit.answers import JOB_RE
from testkit.discord_loopback import CommandNotPermitted, InteractionRecord, LoopbackError, Message
from tests.bot_harness import BotWorld, is_result
from tests.world_fixtures import started_world

pytest_plugins = ["tests.fixtures_generation"]
pytestmark = pytest.mark.asyncio(loop_scope="module")


world = started_world("bot-settings")


def invoke(
    world: BotWorld, command: str, member: Any, subcommand: str | None = None, **options: Any
) -> InteractionRecord:
    return world.server.invoke(
        command, options, guild=world.guild, channel=world.channel, member=member, subcommand=subcommand
    )


def control(panel: Message, field: str) -> str:
    """The custom id of the panel's `field` control (it names the scope and who opened the panel)."""
    [custom_id] = [c for c in panel.custom_ids if c.startswith("settings:") and c.endswith(f":{field}")]
    return custom_id


async def request_of(world: BotWorld, message: Message) -> GenerationRequest:
    (job_id,) = {m.group(1) for cid in message.custom_ids if (m := JOB_RE.fullmatch(cid))}
    job = await world.store.get_job(job_id)
    assert job is not None
    return GenerationRequest.from_json(job.request_json)


def parameters(message: Message) -> str:
    (png,) = [a for a in message.attachments if a.filename.endswith(".png")]
    return read_parameters(png.data) or ""


async def test_settings_options_are_private_stored_and_used_by_imagine(world: BotWorld) -> None:
    rec = invoke(world, "settings", world.carol, count=2, aspect="16:9", sampler="ddim", negative="blur",
                 suffix="oil painting", remix=True)  # fmt: skip
    panel = await world.wait_ephemeral(rec)
    assert panel.ephemeral and "Remix: **on**" in panel.content and "`16:9`" in panel.content
    assert control(panel, "reset") in panel.custom_ids and control(panel, "sampler") in panel.custom_ids
    stored = (await world.store.prompt_settings(world.guild.id, world.carol.id)).member
    assert stored == PromptSettings(remix=True, count=2, aspect="16:9", negative="blur", sampler="ddim",
                                    suffix="oil painting")  # fmt: skip

    result = await world.wait_result(world.imagine("a fox --seed 3", member=world.carol))
    request = await request_of(world, result)
    assert (request.count, request.aspect, request.sampler) == (2, "16:9", "ddim")
    assert request.prompt == "a fox, oil painting" and request.negative_prompt == "blur"
    text = parameters(result)
    assert "Sampler: DDIM" in text and "Negative prompt: blur" in text and "oil painting" in text

    # an inline flag and a slash option win over the member's defaults
    result = await world.wait_result(
        world.imagine("a fox --ar 1:1 --sampler euler", member=world.carol, count=1)
    )
    request = await request_of(world, result)
    assert (request.count, request.aspect, request.sampler) == (1, "1:1", "euler")


async def test_the_panel_changes_values_and_resets(world: BotWorld) -> None:
    panel = await world.wait_ephemeral(invoke(world, "settings", world.dave))
    assert "Remix: **off**" in panel.content
    click = world.server.click(panel, control(panel, "count"), world.dave, values=["4"], component_type=3)
    await click.wait_acked()
    assert (await world.store.prompt_settings(world.guild.id, world.dave.id)).member.count == 4
    assert "Images per prompt: `4`" in world.server.messages[panel.id].content
    for value, stored in (("dpmpp_2m_karras", "dpmpp_2m_karras"), ("model", None)):
        await world.server.click(
            panel, control(panel, "sampler"), world.dave, values=[value], component_type=3
        ).wait_acked()
        assert (await world.store.prompt_settings(world.guild.id, world.dave.id)).member.sampler == stored
    await world.server.click(panel, control(panel, "remix"), world.dave).wait_acked()
    assert (await world.store.prompt_settings(world.guild.id, world.dave.id)).member.remix is True
    assert "Remix: **on**" in world.server.messages[panel.id].content

    stranger = world.server.click(panel, control(panel, "reset"), world.bob)
    await stranger.wait_final(lambda r: any("aren't yours" in m.content and m.ephemeral for m in r.messages))
    assert (await world.store.prompt_settings(world.guild.id, world.dave.id)).member.count == 4

    await world.server.click(panel, control(panel, "reset"), world.dave).wait_acked()
    assert (await world.store.prompt_settings(world.guild.id, world.dave.id)).member == PromptSettings()

    await world.restart_bot()  # the panel's controls keep working: their ids say what they change
    await world.server.click(panel, control(panel, "remix"), world.dave).wait_acked()
    assert (await world.store.prompt_settings(world.guild.id, world.dave.id)).member.remix is True
    assert "Remix: **on**" in world.server.messages[panel.id].content


async def test_server_defaults_need_manage_server_and_lose_to_the_members(world: BotWorld) -> None:
    with pytest.raises(CommandNotPermitted):
        invoke(world, "server-defaults", world.alice, count=3)
    forged = world.server.invoke(
        "server-defaults", {"count": 3}, guild=world.guild, channel=world.channel, member=world.alice,
        enforce_default_permissions=False,
    )  # fmt: skip
    assert "Manage Server" in (await world.wait_ephemeral(forged)).content
    assert (await world.store.prompt_settings(world.guild.id, world.alice.id)).guild == PromptSettings()

    panel = await world.wait_ephemeral(invoke(world, "server-defaults", world.boss, count=3, aspect="3:4"))
    assert "This server's defaults" in panel.content and "Remix" not in panel.content
    await world.wait_ephemeral(invoke(world, "settings", world.bob, aspect="4:3"))
    view = await world.store.prompt_settings(world.guild.id, world.bob.id)
    assert view.guild.count == 3
    result = await world.wait_result(world.imagine("a heron", member=world.bob))
    request = await request_of(world, result)
    assert (request.count, request.aspect) == (3, "4:3")  # the guild's count, bob's own aspect
    await world.wait_ephemeral(invoke(world, "server-defaults", world.boss, reset=True))
    assert (await world.store.prompt_settings(world.guild.id, world.bob.id)).guild == PromptSettings()


async def test_server_defaults_video_cost_is_set_shown_refused_out_of_range_and_cleared(
    world: BotWorld,
) -> None:
    async def guild() -> PromptSettings:
        return (await world.store.prompt_settings(world.guild.id, world.boss.id)).guild

    assert world.bot.services.settings.video_cost == 8  # VIDEO_COST unset
    panel = await world.wait_ephemeral(invoke(world, "server-defaults", world.boss, count=2))
    assert "Video cost: 8 images (the bot's default)" in panel.content
    panel = await world.wait_ephemeral(invoke(world, "server-defaults", world.boss, video_cost=12))
    assert "Video cost: 12 images" in panel.content and "(the bot's default)" not in panel.content
    assert await guild() == PromptSettings(count=2, video_cost=12)
    with pytest.raises(CommandNotPermitted):
        invoke(world, "server-defaults", world.alice, video_cost=1)

    for bad in (101, -1):  # Discord's client refuses these; a forged request is refused by the bot
        with pytest.raises(LoopbackError, match="video_cost"):
            invoke(world, "server-defaults", world.boss, video_cost=bad)
        forged = world.server.invoke(
            "server-defaults", {"video_cost": bad, "count": 4}, guild=world.guild, channel=world.channel,
            member=world.boss, validate=False,
        )  # fmt: skip
        refused = await world.wait_ephemeral(forged)
        assert refused.content == (
            "The `video_cost` option must be between 1 and 100 images "
            f"(or 0 for the bot's default), not {bad}."
        )
        assert await guild() == PromptSettings(count=2, video_cost=12)  # nothing stored, count neither

    panel = await world.wait_ephemeral(invoke(world, "server-defaults", world.boss, video_cost=0))
    assert "Video cost: 8 images (the bot's default)" in panel.content
    assert await guild() == PromptSettings(count=2)  # only the cost cleared
    await world.wait_ephemeral(invoke(world, "server-defaults", world.boss, video_cost=5, reset=True))
    assert await guild() == PromptSettings(video_cost=5)
    await world.wait_ephemeral(invoke(world, "server-defaults", world.boss, reset=True))
    assert await guild() == PromptSettings()  # Reset clears the cost with the rest


async def test_prefer_macros(world: BotWorld) -> None:
    done = await world.wait_ephemeral(
        invoke(world, "prefer", world.alice, "option set", name="gold", value="golden hour, 35mm --ar 3:2")
    )
    assert "`--gold` now means" in done.content
    listed = await world.wait_ephemeral(invoke(world, "prefer", world.alice, "option list"))
    assert "`--gold` → golden hour, 35mm --ar 3:2" in listed.content

    result = await world.wait_result(world.imagine("a harbour --gold --seed 8", member=world.alice))
    request = await request_of(world, result)
    assert request.prompt == "a harbour golden hour, 35mm" and request.aspect == "3:2"

    bad = await world.wait_ephemeral(invoke(world, "prefer", world.alice, "option set", name="ar", value="x"))
    assert "is a flag already" in bad.content
    loop = await world.wait_ephemeral(
        invoke(world, "prefer", world.alice, "option set", name="loop", value="--gold again")
    )
    assert "not other macros" in loop.content
    gone = await world.wait_ephemeral(invoke(world, "prefer", world.alice, "option delete", name="--gold"))
    assert "is gone" in gone.content
    assert (await world.store.prompt_settings(world.guild.id, world.alice.id)).macros == {}


def page_button(message: Message, label: str) -> dict[str, Any]:
    """The `Previous` or `Next` button of a paged list."""
    buttons: list[dict[str, Any]] = [
        c for row in message.components for c in row["components"] if c.get("label") == label
    ]
    [button] = buttons
    return button


async def test_a_long_macro_list_pages_with_previous_and_next(world: BotWorld) -> None:
    macros = {f"m{i:02d}": f"{i:02d} " + "golden hour, 35mm film, " * 15 for i in range(MAX_MACROS)}
    for name, value in macros.items():
        await world.wait_ephemeral(invoke(world, "prefer", world.carol, "option set", name=name, value=value))
    listed = await world.wait_ephemeral(invoke(world, "prefer", world.carol, "option list"))
    assert listed.ephemeral and "-# Page 1 of " in listed.content and not listed.content.endswith("…")
    assert page_button(listed, "Previous")["disabled"] and not page_button(listed, "Next").get("disabled")
    count = int(listed.content.rsplit(" of ", 1)[1])
    shown = [listed.content]
    for page in range(2, count + 1):
        await world.server.click(listed, page_button(listed, "Next")["custom_id"], world.carol).wait_acked()
        listed = world.server.messages[listed.id]
        assert listed.content.endswith(f"-# Page {page} of {count}") and len(listed.content) <= 2000
        shown.append(listed.content)
    assert page_button(listed, "Next")["disabled"] and not page_button(listed, "Previous").get("disabled")
    lines = [line for text in shown for line in text.split("\n") if line.startswith("`--")]
    assert [line.split("`")[1] for line in lines] == [f"--{name}" for name in macros]  # each once, in order

    stranger = world.server.click(listed, page_button(listed, "Previous")["custom_id"], world.bob)
    await stranger.wait_final(lambda r: any("isn't yours" in m.content and m.ephemeral for m in r.messages))
    await world.restart_bot()  # the buttons' ids say which list, whose and which page
    await world.server.click(listed, page_button(listed, "Previous")["custom_id"], world.carol).wait_acked()
    assert world.server.messages[listed.id].content == shown[-2]


async def test_a_long_blocklist_pages_after_a_defer(world: BotWorld) -> None:
    words = [f"zzblocked phrase number {i:03d}" for i in range(150)]
    for word in words:
        await world.store.add_blocked_word(world.guild.id, word)
    listed = await world.wait_ephemeral(invoke(world, "blocklist", world.boss, "list"))
    assert listed.content.startswith("Blocked (150):") and "… and" not in listed.content
    count = int(listed.content.rsplit(" of ", 1)[1])
    shown = [listed.content]
    for _ in range(count - 1):
        await world.server.click(listed, page_button(listed, "Next")["custom_id"], world.boss).wait_acked()
        listed = world.server.messages[listed.id]
        shown.append(listed.content)
    assert sum(text.count("“zzblocked") for text in shown) == len(words)
    assert page_button(listed, "Next")["disabled"] and listed.content.endswith(f"Page {count} of {count}")
    for word in words:
        await world.store.remove_blocked_word(world.guild.id, word)


async def test_permutations_make_one_job_each_and_too_many_are_refused(world: BotWorld) -> None:
    before = {m.id for m in world.server.channel_messages(world.channel)}
    rec = world.imagine("a {red, blue} kite --seed 4", member=world.bob, count=1)
    first = await world.wait_result(rec)
    second = await world.wait_channel(lambda m: m.id not in before and m.id != first.id and is_result(m))
    prompts = {(await request_of(world, m)).prompt for m in (first, second)}
    assert prompts == {"a red kite", "a blue kite"}
    assert f"<@{world.bob.id}>" in second.content

    too_many = world.imagine("{a,b} {c,d} {e,f} {g,h} {i,j}", member=world.bob)
    message = await world.wait_ephemeral(too_many)
    assert "32 combinations" in message.content and message.ephemeral


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ("--sampler plms", "`--sampler` must be one of euler"),
        ("--stop 2", "`--stop` must be between 10 and 100"),
    ],
)
async def test_a_wrong_flag_value_is_refused_privately(world: BotWorld, flags: str, expected: str) -> None:
    message = await world.wait_ephemeral(world.imagine(f"a fox {flags}", member=world.bob))
    assert expected in message.content and message.ephemeral


async def test_weighted_long_prompt_on_the_bot(world: BotWorld) -> None:
    prompt = "(a lighthouse:1.3) on a cliff, stormy sea, " * 6  # about 190 tokens on tiny
    result = await world.wait_result(world.imagine(prompt + " --seed 2 --tile", member=world.dave, count=1))
    request = await request_of(world, result)
    assert request.prompt_windows == 3 and request.tile
    assert "Tiling: True" in parameters(result)
