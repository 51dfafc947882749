"""End to end: the real discord.py client of `ImagineBot` against the loopback Discord, a real SQLite
store and the real diffusers pipeline on the `tiny` model (tests/bot_harness.py builds it all).

One bot serves the module's tests (its event loop is the module's); tests that restart the bot open
their own world. Nothing sleeps: every wait is on server state with a timeout.
"""

from __future__ import annotations

import io
import random
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import discord
import numpy as np
import pytest
import pytest_asyncio
from PIL import Image

from bot.formatting import HELP_TEXT
from generation.media.compose import read_parameters
from storage.interface import JobState
from testkit.answers import JOB_RE, live_ephemeral
from testkit.discord_loopback import CommandNotPermitted, InteractionRecord, Message, Upload
from tests.bot_harness import BotWorld, T, is_result
from tests.world_fixtures import started_world

pytest_plugins = ["tests.fixtures_generation"]
pytestmark = pytest.mark.asyncio(loop_scope="module")

NATIVE = 64  # the tiny model draws 64×64


# Tiny jobs end before a 0.5 s preview throttle allows one.
world = started_world("bot-e2e", service_options={"preview_interval_s": 0.0})


# -- helpers ------------------------------------------------------------------------------------------


def png_of(message: Message) -> bytes:
    pngs = [a for a in message.attachments if a.filename.endswith(".png")]
    assert len(pngs) == 1, [a.filename for a in message.attachments]
    return pngs[0].data


def size_of(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def pixels(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB").tobytes()


def job_of(message: Message) -> str:
    ids = {m.group(1) for cid in message.custom_ids if (m := JOB_RE.fullmatch(cid))}
    assert len(ids) == 1, message.custom_ids
    return ids.pop()


def params(message: Message) -> str:
    text = read_parameters(png_of(message))
    assert text is not None, "the PNG has no parameters chunk"
    return text


def nothing_queued_for(world: BotWorld, rec: InteractionRecord) -> None:
    """The interaction queued no job: nothing the runner follows, no public result."""
    assert not any(is_result(m) for m in rec.messages)
    assert not any(not m.ephemeral and not m.deleted and m.attachments for m in rec.messages)


async def refused(world: BotWorld, rec: InteractionRecord, *fragments: str) -> Message:
    """The interaction ends in one live ephemeral message containing every fragment, and nothing
    public remains (the deferred 'thinking' message, if any, is gone)."""
    message = await world.wait_ephemeral(rec)
    for fragment in fragments:
        assert fragment.lower() in message.content.lower(), message.content
    await rec.wait_final(lambda r: all(m.ephemeral or m.deleted for m in r.messages), timeout=T)
    nothing_queued_for(world, rec)
    return message


async def jobs_of(world: BotWorld, owner_id: int) -> list[str]:
    rows = world.store  # the SQLite store; read through its public API
    jobs = await rows.queued_jobs(world.guild.id)
    return [j.job_id for j in jobs if j.owner_id == owner_id]


# -- scenarios ----------------------------------------------------------------------------------------


async def test_login_and_command_sync(world: BotWorld) -> None:
    server = world.server
    intents = discord.Intents._from_value(server.identifies[-1]["intents"])
    assert intents.guilds and intents.guild_reactions
    assert not (intents.members or intents.presences or intents.message_content)

    imagine = server.command("imagine")
    opts = {o["name"]: o for o in imagine["options"]}
    assert opts["prompt"]["type"] == 3 and opts["prompt"]["required"]
    assert {c["value"] for c in opts["aspect"]["choices"]} >= {"1:1", "4:3", "3:4", "16:9", "9:16"}
    assert (opts["count"]["min_value"], opts["count"]["max_value"]) == (1, 4)
    profile = world.bot.backend.profile
    assert (opts["steps"]["min_value"], opts["steps"]["max_value"]) == (profile.min_steps, profile.max_steps)
    assert (opts["guidance"]["min_value"], opts["guidance"]["max_value"]) == (0, 30)
    assert opts["image"]["type"] == 11
    assert (opts["strength"]["min_value"], opts["strength"]["max_value"]) == (0, 1)
    limits = server.command("limits")
    assert limits["default_member_permissions"] == str(discord.Permissions(manage_guild=True).value)
    assert {o["name"] for o in limits["options"]} == {"show", "set", "reset"}
    assert server.command("blocklist")["default_member_permissions"] == "32"
    for name in ("usage", "queue", "cancel", "help", "models"):
        assert server.command(name).get("default_member_permissions") is None
    names = sorted((c["name"], c.get("type", 1)) for c in server.commands[None])
    slash = [
        "animate",
        "blend",
        "blocklist",
        "cancel",
        "describe",
        "edit",
        "help",
        "imagine",
        "limits",
        "loras",
        "models",
        "prefer",
        "queue",
    ]
    slash += ["server-defaults", "settings", "show", "usage"]
    assert names == sorted([*((n, 1) for n in slash), ("Describe", 3)])
    for command in server.commands[None]:  # guild install, guild channels: nothing offered in DMs
        assert (command["contexts"], command["integration_types"]) == ([0], [0]), command["name"]


async def test_imagine_with_inline_flags(world: BotWorld) -> None:
    rec = world.imagine("a red fox --ar 16:9 --seed 42 --n 4")
    result = await world.wait_result(rec)
    assert rec.callback_type == 5 and rec.ack_latency is not None and rec.ack_latency < 3
    assert rec.responses_count == 1 and not rec.rejected_callbacks
    contents = [h.content for h in rec.original_history]
    assert any(c.startswith("Queued") for c in contents), contents
    assert any(re.search(r"step \d+ of 4", c) for c in contents), contents
    progress = [h for h in rec.original_history if "step" in h.content]
    assert any(h.attachments == ["preview.png"] for h in progress), progress  # a preview so far
    assert not result.ephemeral
    # 16:9 at the tiny native size is 88×48; four images make a 2×2 grid.
    assert size_of(png_of(result)) == (2 * 88, 2 * 48)
    text = params(result)
    assert text.startswith("a red fox") and "Seed: 42" in text and "Size: 88x48" in text
    assert "42, 43, 44, 45" in text
    assert "a red fox" in result.content and "42" in result.content
    assert len(result.custom_ids) == 11
    labels = [
        c.get("label") or c.get("emoji", {}).get("name")
        for row in result.components
        for c in row["components"]
    ]
    assert sorted(labels) == sorted(["U1", "U2", "U3", "U4", "🔄", "V1", "V2", "V3", "V4", "📋", "🗑️"])
    job = await world.store.get_job(job_of(result))
    assert job is not None and job.state is JobState.DONE and job.seeds == (42, 43, 44, 45)


async def test_slash_options_win_over_inline_flags(world: BotWorld) -> None:
    rec = world.imagine("a blue owl --seed 1 --ar 16:9 --n 4", seed=7, aspect="3:4", count=1, steps=2)
    result = await world.wait_result(rec)
    assert size_of(png_of(result)) == (56, 72)
    text = params(result)
    assert "Seed: 7" in text and "Steps: 2" in text
    assert len(result.custom_ids) == 5 + 13  # U1, 🔄, V1, 📋, 🗑️ and the 13 edit buttons


async def test_same_seed_same_pixels(world: BotWorld) -> None:
    # One after the other, so each runs alone: bit-identical. (Run in one batch, images agree up to
    # one level of rounding; the service's tests check that.)
    a = png_of(await world.wait_result(world.imagine("a quiet lake --seed 1234", member=world.bob)))
    b = png_of(await world.wait_result(world.imagine("a quiet lake --seed 1234", member=world.bob)))
    c = png_of(await world.wait_result(world.imagine("a quiet lake --seed 1235", member=world.bob)))
    assert pixels(a) == pixels(b)
    assert pixels(a) != pixels(c)


async def test_weighted_and_long_prompts_never_come_out_blank(world: BotWorld) -> None:
    """50 random weighted prompts in a row and a 4-window prompt, each a picture with contrast (a
    NaN from the weights' rescale came out as one solid black picture)."""
    member = world.server.add_member(world.guild, "weights")
    rng = random.Random(23)
    words = ["fox", "snow", "lake", "tower", "night", "red", "forest", "moon"]
    prompts = [" ".join(["fox"] * 95) + " --n 1"]  # four 75-token windows on tiny's byte tokenizer
    for _ in range(50):
        a, b, c = rng.sample(words, 3)
        prompts.append(f"({a}:{rng.uniform(0.5, 1.5):.2f}) [{b}] \\( {c} (fox) --n 1 --steps 2")
    for prompt in prompts:
        png = png_of(await world.wait_result(world.imagine(prompt, member=member)))
        with Image.open(io.BytesIO(png)) as image:
            contrast = float(np.asarray(image.convert("L"), dtype=np.float32).std())
        assert contrast > 5, prompt


async def test_result_fits_the_interactions_upload_limit(world: BotWorld) -> None:
    limit = 12_000  # the tiny model's 2×2 grid of noise is a larger PNG than this
    rec = world.server.invoke(
        "imagine",
        {"prompt": "static noise --n 4 --seed 11"},
        guild=world.guild,
        channel=world.channel,
        member=world.dave,
        attachment_size_limit=limit,
    )
    result = await world.wait_result(rec)
    (attachment,) = result.attachments
    assert attachment.size <= limit
    assert attachment.filename.endswith(".jpg") and "re-encoded" in result.content
    assert "Seed: 11" in (read_parameters(attachment.data) or "")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fox(world: BotWorld) -> Message:
    """A finished 2-image result to click and react on."""
    rec = world.imagine("a fox in the snow --seed 99 --n 2", member=world.alice)
    return await world.wait_result(rec)


async def test_v1_click_makes_a_variation(world: BotWorld, fox: Message) -> None:
    parent = job_of(fox)
    click = world.server.click(fox, f"imagine:v:{parent}:1", world.bob)
    result = await world.wait_result(click)
    assert click.ack_latency is not None and click.ack_latency < 3
    assert result.id != fox.id
    assert "(variation)" in result.content
    child = await world.store.get_job(job_of(result))
    assert child is not None and child.parent_job_id == parent and child.parent_index == 0
    assert child.owner_id == world.bob.id  # the clicker spends their own quota
    assert size_of(png_of(result)) == (2 * NATIVE, NATIVE)  # two variations side by side


async def test_u1_click_makes_one_larger_image(world: BotWorld, fox: Message) -> None:
    click = world.server.click(fox, f"imagine:u:{job_of(fox)}:1", world.alice)
    result = await world.wait_result(click)
    assert "(upscale)" in result.content
    assert size_of(png_of(result)) == (2 * NATIVE, 2 * NATIVE)
    assert len(result.custom_ids) == 5 + 12  # U1, 🔄, V1, 📋, 🗑️ and the edits but Make Square


async def test_reaction_reroll_posts_to_channel_mentioning_reactor(world: BotWorld, fox: Message) -> None:
    before = {m.id for m in world.server.channel_messages(world.channel)}
    world.server.react(fox, "🔄", world.carol)
    posted = await world.wait_channel(lambda m: m.id not in before and is_result(m))
    assert f"<@{world.carol.id}>" in posted.content
    assert world.carol.id in {u.id for u in posted.mentions}
    job = await world.store.get_job(job_of(posted))
    assert job is not None and job.parent_job_id == job_of(fox) and job.owner_id == world.carol.id
    assert job.seeds is not None and 99 not in job.seeds  # new seeds


@pytest.mark.parametrize("keycap", ["2\ufe0f\u20e3", "2\u20e3"])  # with and without U+FE0F
async def test_reaction_number_makes_variation(world: BotWorld, fox: Message, keycap: str) -> None:
    before = {m.id for m in world.server.channel_messages(world.channel)}
    world.server.react(fox, keycap, world.dave)
    posted = await world.wait_channel(lambda m: m.id not in before and is_result(m))
    assert "(variation)" in posted.content and f"<@{world.dave.id}>" in posted.content
    job = await world.store.get_job(job_of(posted))
    assert job is not None and job.parent_index == 1


async def test_admin_sets_hourly_limit_member_hits_it(world: BotWorld) -> None:
    member = world.server.add_member(world.guild, "erin")
    rec = world.server.invoke(
        "limits",
        {"user": member, "images_per_hour": 2},
        subcommand="set",
        guild=world.guild,
        channel=world.channel,
        member=world.boss,
    )
    answer = await world.wait_ephemeral(rec)
    assert "images/hour 2" in answer.content
    first = world.imagine("a cat", member=member)
    second = world.imagine("a dog", member=member)
    await world.wait_result(first)
    await world.wait_result(second)
    third = world.imagine("a cow", member=member)
    message = await refused(world, third, "per hour", "2 images per hour")
    assert "<t:" in message.content  # when it frees up


async def test_non_admin_limits_set_refused(world: BotWorld) -> None:
    def limits_set_by_alice(*, enforce_default_permissions: bool) -> Any:
        return world.server.invoke(
            "limits",
            {"images_per_hour": 0},
            subcommand="set",
            guild=world.guild,
            channel=world.channel,
            member=world.alice,
            enforce_default_permissions=enforce_default_permissions,
        )

    with pytest.raises(CommandNotPermitted):
        limits_set_by_alice(enforce_default_permissions=True)
    forged = limits_set_by_alice(enforce_default_permissions=False)
    await refused(world, forged, "Manage Server")
    limits = await world.store.effective_limits(world.guild.id, world.alice.id, ())
    assert limits.images_per_hour == world.limits.images_per_hour


@pytest.mark.parametrize(
    ("prompt", "options", "fragment"),
    [
        ("   ", {}, "empty"),
        ("--seed 3", {}, "empty"),
        ("a fox --foo 3", {}, "--foo"),
        ("a fox --steps 999", {}, "steps"),
        ("a fox --n 9", {}, "--n"),
        ("a fox --repeat 0", {}, "`--repeat` must be between 1 and 8"),
        ("a fox --repeat 9", {}, "`--repeat` must be between 1 and 8"),
        ("fox " * 200, {}, "over this model's limit"),
    ],
)
async def test_bad_input_is_refused_ephemerally(
    world: BotWorld, prompt: str, options: dict[str, Any], fragment: str
) -> None:
    before = len(await jobs_of(world, world.bob.id))
    ledger_before = await world.store.ledger(world.guild.id, world.bob.id)
    rec = world.imagine(prompt, member=world.bob, **options)
    await refused(world, rec, fragment)
    assert len(await jobs_of(world, world.bob.id)) == before
    assert await world.store.ledger(world.guild.id, world.bob.id) == ledger_before


async def test_out_of_range_option_forged_is_refused(world: BotWorld) -> None:
    rec = world.server.invoke(
        "imagine",
        {"prompt": "a fox", "steps": 999},
        guild=world.guild,
        channel=world.channel,
        member=world.bob,
        validate=False,
    )
    await refused(world, rec)


@pytest.mark.parametrize(
    ("upload", "fragment"),
    [
        (Upload("notes.txt", b"hello, not a picture", "text/plain"), "isn't a picture"),
        (Upload("fake.png", b"\x89PNG but not really", "image/png"), ""),
    ],
)
async def test_non_image_attachment_refused(world: BotWorld, upload: Upload, fragment: str) -> None:
    ledger_before = await world.store.ledger(world.guild.id, world.bob.id)
    rec = world.server.invoke(
        "imagine",
        {"prompt": "a fox"},
        attachments={"image": upload},
        guild=world.guild,
        channel=world.channel,
        member=world.bob,
    )
    await refused(world, rec, fragment)
    assert await world.store.ledger(world.guild.id, world.bob.id) == ledger_before


async def test_image_attachment_starts_img2img(world: BotWorld) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 200, 30)).save(buf, "PNG")
    rec = world.server.invoke(
        "imagine",
        {"prompt": "a green field --ar 4:3", "strength": 0.5},
        attachments={"image": Upload("field.png", buf.getvalue(), "image/png")},
        guild=world.guild,
        channel=world.channel,
        member=world.alice,
    )
    result = await world.wait_result(rec)
    assert "(from your picture)" in result.content
    assert "Denoising strength: 0.5" in params(result)


async def test_an_image_prompt_without_ar_keeps_its_pictures_shape(world: BotWorld) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (160, 90), (10, 200, 30)).save(buf, "PNG")  # 16:9
    rec = world.server.invoke(
        "imagine",
        {"prompt": "a green field --n 1"},
        attachments={"image": Upload("wide.png", buf.getvalue(), "image/png")},
        guild=world.guild,
        channel=world.channel,
        member=world.alice,
    )
    result = await world.wait_result(rec)
    width, height = size_of(png_of(result))
    assert width > height and abs(width / height - 16 / 9) < 0.2, (width, height)  # not 1:1


async def test_blocked_word_refused(world: BotWorld) -> None:
    add = world.server.invoke(
        "blocklist",
        {"phrase": "Gore"},
        subcommand="add",
        guild=world.guild,
        channel=world.channel,
        member=world.boss,
    )
    assert "gore" in (await world.wait_ephemeral(add)).content.lower()
    rec = world.imagine("a GORE scene", member=world.bob)
    await refused(world, rec, "blocks")
    ok = world.imagine("gorey? no: a gorgeous sunset --steps 1", member=world.bob)
    await world.wait_result(ok)


@pytest.mark.parametrize(
    ("command", "fragment"),
    [("usage", "last hour"), ("queue", "job(s)"), ("help", "/imagine"), ("models", "**tiny** (default)")],
)
async def test_member_commands_answer(world: BotWorld, command: str, fragment: str) -> None:
    rec = world.server.invoke(command, {}, guild=world.guild, channel=world.channel, member=world.alice)
    message = await world.wait_ephemeral(rec)
    assert fragment.lower() in message.content.lower()
    assert all(m.ephemeral or m.deleted for m in rec.messages)


async def test_help_comes_whole_in_private_messages_that_each_fit(world: BotWorld) -> None:
    rec = world.server.invoke("help", {}, guild=world.guild, channel=world.channel, member=world.alice)
    await rec.wait_final(lambda r: len(live_ephemeral(r)) >= 2, timeout=T)  # HELP_TEXT passed 2,000
    texts = [m.content for m in live_ephemeral(rec)]
    assert all(len(text) <= 2000 for text in texts) and "Page 1 of" in texts[0]
    whole = "\n".join(texts)
    for line in HELP_TEXT.splitlines():
        assert line in whole  # every line on a page, none cut


async def test_cancel_answers(world: BotWorld) -> None:
    rec = world.server.invoke("cancel", {}, guild=world.guild, channel=world.channel, member=world.dave)
    message = await world.wait_ephemeral(rec)
    assert "no job" in message.content.lower()


async def test_expired_token_result_goes_to_channel(world: BotWorld) -> None:
    # Hold the first progress edit so the token can be expired before the result is posted.
    stall = world.server.stall_next("PATCH /webhooks/*/messages/@original")
    rec = world.imagine("a lighthouse --steps 3", member=world.carol)
    await world.server.wait_for(lambda: stall.stalled.is_set(), T)
    world.server.expire_token(rec)
    stall.release()
    before = {m.id for m in world.server.channel_messages(world.channel)}
    posted = await world.wait_channel(
        lambda m: m.id not in before and is_result(m) and "lighthouse" in m.content
    )
    assert f"<@{world.carol.id}>" in posted.content
    assert posted.interaction_id is None


async def test_forged_custom_ids_refused(world: BotWorld, fox: Message) -> None:
    theirs = world.imagine(
        "a boat", guild=world.other_guild, channel=world.other_channel, member=world.mallory
    )
    their_result = await world.wait_result(theirs)
    for forged_id in (
        f"imagine:v:{job_of(their_result)}:1",
        "imagine:u:0123456789ab:1",
        "imagine:r:0123456789ab",
    ):
        forged = replace(
            fox,
            components=[
                {"type": 1, "components": [{"type": 2, "style": 2, "label": "V1", "custom_id": forged_id}]}
            ],
        )
        click = world.server.click(forged, forged_id, world.bob)
        await refused(world, click, "can't find that result")


async def test_token_never_logged(world: BotWorld, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    rec = world.imagine("a fox --n 2 --seed 5")
    await world.wait_result(rec)
    bad = world.imagine("a fox --bogus")
    await refused(world, bad)
    assert world.server.token not in caplog.text
    assert world.server.token not in world.logs.text
    assert world.logs.lines  # the collector did see the bot at work
    assert world.server.token not in repr(world.bot.settings)


# -- restarts: their own world ------------------------------------------------------------------------


async def test_button_on_result_made_before_restart(tmp_path: Path, tiny_model: Any) -> None:
    async with BotWorld.open(tmp_path, tiny_model) as w:
        await w.start_bot()
        result = await w.wait_result(w.imagine("a castle --seed 3 --n 2"))
        await w.restart_bot()
        assert w.starts == 2
        click = w.server.click(result, f"imagine:v:{job_of(result)}:1", w.bob)
        variation = await w.wait_result(click)
        assert "(variation)" in variation.content
        react_before = {m.id for m in w.server.channel_messages(w.channel)}
        w.server.react(result, "🔄", w.carol)
        rerolled = await w.wait_channel(lambda m: m.id not in react_before and is_result(m))
        assert f"<@{w.carol.id}>" in rerolled.content


async def test_job_unfinished_at_stop_is_finished_after_restart(tmp_path: Path, tiny_model: Any) -> None:
    async with BotWorld.open(tmp_path, tiny_model) as w:
        await w.start_bot()
        # Hold the job's first progress edit, so the bot is stopped while it still follows the job.
        stall = w.server.stall_next("PATCH /webhooks/*/messages/@original")
        rec = w.imagine("a windmill --seed 8 --n 2", member=w.bob)
        await w.server.wait_for(lambda: stall.stalled.is_set(), T)
        job_id = (await jobs_of(w, w.bob.id))[0]
        await w.stop_bot()
        stall.release()
        await w.start_bot()  # resumes the stored job under the same id
        result = await w.wait_result(rec)
        assert job_of(result) == job_id and "windmill" in result.content
        assert [r for r in w.server.channel_messages(w.channel) if is_result(r)] == [result]
        ledger = await w.store.ledger(w.guild.id, w.bob.id)
        assert [(e.job_id, e.images, e.refunded) for e in ledger] == [(job_id, 2, False)]  # spent once
