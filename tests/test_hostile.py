"""Hostile and odd input through the real bot on the loopback Discord (what test_bot_e2e.py does not
already cover): invisible and right-to-left characters, emoji and mention bait; a 6,000-character
prompt; repeated flags; forged button ids of other shapes; every admin command through a forged
interaction; SQL quotes in blocked words and prompts; the token in no stored byte or message.

(The parser's own property test lives in tests/test_parser.py.)
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from storage.interface import JobState
from testkit.discord_loopback import InteractionRecord, Message
from tests.bot_harness import BotWorld, T, is_result
from tests.world_fixtures import started_world

pytestmark = pytest.mark.asyncio(loop_scope="module")


world = started_world("hostile")


async def refused(world: BotWorld, rec: InteractionRecord, *fragments: str) -> Message:
    """One live ephemeral answer containing the fragments; nothing public left, nothing queued."""
    message = await world.wait_ephemeral(rec)
    for fragment in fragments:
        assert fragment.lower() in message.content.lower(), message.content
    await rec.wait_final(lambda r: all(m.ephemeral or m.deleted for m in r.messages), timeout=T)
    assert not any(is_result(m) for m in rec.messages)
    assert rec.responses_count == 1
    return message


async def stored_prompt(world: BotWorld, message: Message) -> str:
    job_ids = {c.split(":")[2] for c in message.custom_ids}
    (job_id,) = job_ids
    job = await world.store.get_job(job_id)
    assert job is not None
    return str(json.loads(job.request_json)["prompt"])


# -- odd text ------------------------------------------------------------------------------------------


async def test_invisible_rtl_emoji_and_mention_bait(world: BotWorld) -> None:
    prompt = "a 🦊\u200b fox \u202eons eht ni\u202c ❄️ \u200d\u2066@everyone <@&1> <@42>\u2069 --seed 7"
    rec = world.imagine(prompt, member=world.alice)
    result = await world.wait_result(rec)
    text = await stored_prompt(world, result)
    assert text.startswith("a 🦊\u200b fox \u202eons eht ni\u202c ❄️") and "--seed" not in text
    # Shown, but pinging nobody but the owner: no @everyone, no role, no stranger.
    assert "everyone" in result.content
    assert {u.id for u in result.mentions} <= {world.alice.id}


async def test_6000_character_prompt_is_refused_fast(world: BotWorld) -> None:
    rec = world.imagine(("a fox in the snow " * 400)[:6000], member=world.bob)
    await refused(world, rec, "over this model's limit")
    assert rec.ack_latency is not None and rec.ack_latency < 3


async def test_prompt_over_discords_length_forged_is_refused(world: BotWorld) -> None:
    rec = world.server.invoke(
        "imagine",
        {"prompt": "x" * 6001},
        guild=world.guild,
        channel=world.channel,
        member=world.bob,
        validate=False,
    )
    await refused(world, rec)
    assert await world.store.ledger(world.guild.id, world.bob.id) == []


@pytest.mark.parametrize(
    "prompt",
    [
        "a fox --seed 1 --seed 2",
        "a fox --ar 16:9 --ar 1:1",
        "a fox --no cats --no dogs",
        "a fox --n 2 --n 2",
    ],
)
async def test_repeated_flags_refused(world: BotWorld, prompt: str) -> None:
    rec = world.imagine(prompt, member=world.carol)
    await refused(world, rec, "given twice")
    assert await world.store.ledger(world.guild.id, world.carol.id) == []


async def test_bare_dashes_answered_once(world: BotWorld) -> None:
    rec = world.imagine("-- -- --- a fox ---", member=world.carol)
    await rec.wait_final(lambda r: is_result(r.original) or bool(r.ephemeral_messages), timeout=T)
    assert rec.responses_count == 1


# -- forged buttons --------------------------------------------------------------------------------------


async def test_forged_buttons_of_other_shapes_refused(world: BotWorld) -> None:
    failed_rec = world.imagine("a fox for a failed job --seed 3", member=world.dave)
    result = await world.wait_result(failed_rec)
    job_id = result.custom_ids[0].split(":")[2]
    ledger_before = await world.store.ledger(world.guild.id, world.bob.id)

    def forged(custom_id: str) -> Message:
        row = {"type": 1, "components": [{"type": 2, "style": 2, "label": "V1", "custom_id": custom_id}]}
        return replace(result, components=[row])

    # Ids of the wrong shape match no button template: nothing runs, and each gets a private answer.
    bad_clicks = [
        world.server.click(forged(bad), bad, world.bob)
        for bad in (
            f"imagine:v:{job_id}:9",
            "imagine:v:ZZZZZZZZZZZZ:1",
            f"imagine:x:{job_id}:1",
            "imagine:r:",
        )
    ]
    click = world.server.click(forged(f"imagine:v:{job_id}:4"), f"imagine:v:{job_id}:4", world.bob)
    await refused(world, click)
    for bad_click in bad_clicks:
        assert "isn't one I can act on" in (await world.wait_ephemeral(bad_click)).content
        assert not any(is_result(m) for m in bad_click.messages if m.id != result.id)
    assert await world.store.ledger(world.guild.id, world.bob.id) == ledger_before


# -- admin commands through forged interactions ----------------------------------------------------------


@pytest.mark.parametrize(
    ("subcommand", "command", "options"),
    [
        ("show", "limits", {}),
        ("reset", "limits", {}),
        ("set", "limits", {"max_queued": 0}),
        ("add", "blocklist", {"phrase": "fox"}),
        ("remove", "blocklist", {"phrase": "fox"}),
        ("list", "blocklist", {}),
    ],
)
async def test_admin_commands_refused_at_run_time(
    world: BotWorld, command: str, subcommand: str, options: dict[str, Any]
) -> None:
    words_before = await world.store.blocked_words(world.guild.id)
    limits_before = await world.store.show_limits(world.guild.id)
    rec = world.server.invoke(
        command,
        options,
        subcommand=subcommand,
        guild=world.guild,
        channel=world.channel,
        member=world.alice,
        enforce_default_permissions=False,
    )
    await refused(world, rec, "Manage Server")
    assert await world.store.blocked_words(world.guild.id) == words_before
    assert await world.store.show_limits(world.guild.id) == limits_before


async def test_cancel_someone_elses_job_refused(world: BotWorld) -> None:
    mine = world.imagine("a slow fox --steps 2", member=world.dave)
    result = await world.wait_result(mine)
    job_id = result.custom_ids[0].split(":")[2]
    rec = world.server.invoke(
        "cancel", {"job": job_id}, guild=world.guild, channel=world.channel, member=world.bob
    )
    message = await world.wait_ephemeral(rec)
    assert "isn't yours" in message.content or "already ended" in message.content
    job = await world.store.get_job(job_id)
    assert job is not None and job.state is JobState.DONE


# -- SQL in words and prompts ----------------------------------------------------------------------------

SQL_PHRASE = "robert'); drop table jobs; select ('"
SQL_PROMPT = "a \"fox\" ' OR '1'='1'; DROP TABLE jobs; /* */ UNION SELECT * FROM ledger; '"


async def test_sql_quotes_are_data(world: BotWorld) -> None:
    add = world.server.invoke(
        "blocklist",
        {"phrase": SQL_PHRASE},
        subcommand="add",
        guild=world.guild,
        channel=world.channel,
        member=world.boss,
    )
    await world.wait_ephemeral(add)
    assert SQL_PHRASE in await world.store.blocked_words(world.guild.id)
    member = world.server.add_member(world.guild, "o'brien\"; --")
    blocked = world.imagine("little bobby ROBERT'); DROP TABLE jobs; SELECT (' tables", member=member)
    await refused(world, blocked, "blocks")
    ok = world.imagine(SQL_PROMPT, member=member)
    result = await world.wait_result(ok)
    assert await stored_prompt(world, result) == SQL_PROMPT
    (entry,) = await world.store.ledger(world.guild.id, member.id)  # every table still there
    assert entry.images == 1 and not entry.refunded
    listing = world.server.invoke(
        "blocklist", {}, subcommand="list", guild=world.guild, channel=world.channel, member=world.boss
    )
    assert "drop table jobs" in (await world.wait_ephemeral(listing)).content


# -- the token -------------------------------------------------------------------------------------------


async def test_token_in_no_stored_byte_or_message(world: BotWorld) -> None:
    await world.wait_result(world.imagine("a fox --n 2", member=world.alice))
    await refused(world, world.imagine("a fox --bogus", member=world.alice))
    token = world.server.token.encode()
    files = [p for p in world.root.rglob("*") if p.is_file()]
    assert any(p.name.startswith("imagine.db") for p in files)
    for path in files:
        assert token not in path.read_bytes(), path
    for message in world.server.messages.values():
        assert world.server.token not in message.content
    assert world.server.token not in world.logs.text
