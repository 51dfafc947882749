"""A guild's models: its admins choose the default model and which of MODELS it offers
(`/server-defaults model: models:`), through the real discord.py client on `MODELS=first=tiny,second=tiny`."""

from __future__ import annotations

from typing import Any

import pytest

from generation.model_set import GuildModels, ModelSet
from testkit.discord_loopback import InteractionRecord, Member
from tests.bot_harness import BotWorld
from tests.test_bot_settings import parameters

pytest_plugins = ["tests.fixtures_generation"]

MODELS = ModelSet.parse("first=tiny,second=tiny,third=tiny")


def test_a_guilds_models_come_from_its_stored_settings_and_stale_names_drop_out() -> None:
    assert MODELS.for_guild(None, None) == GuildModels("first", ("first", "second", "third"))
    assert MODELS.for_guild("third", "THIRD, second") == GuildModels("third", ("second", "third"))
    assert MODELS.for_guild(None, "third,second") == GuildModels("second", ("second", "third"))
    assert MODELS.for_guild("gone", "gone") == GuildModels("first", MODELS.names)  # models since removed
    assert MODELS.names_in("third first") == ("first", "third")
    with pytest.raises(ValueError, match="no model called fourth"):
        MODELS.names_in("first, fourth")


async def test_admins_choose_the_default_model_and_the_models_offered(tmp_path: Any, tiny_model: Any) -> None:
    async with BotWorld.open(tmp_path, tiny_model) as world:
        world.extra_settings = {"models": "first=tiny,second=tiny"}
        await world.start_bot()

        def defaults(member: Member, **options: Any) -> InteractionRecord:
            return world.server.invoke(
                "server-defaults", options, guild=world.guild, channel=world.channel, member=member
            )

        panel = await world.wait_ephemeral(defaults(world.boss, model="second"))
        assert (
            "Default model: `second`" in panel.content
            and "Models offered: `first`, `second`" in panel.content
        )
        result = await world.wait_result(world.imagine("a heron --seed 1"))
        assert "Model: second" in parameters(result)  # the guild's default, with no --model
        elsewhere: dict[str, Any] = {
            "guild": world.other_guild,
            "channel": world.other_channel,
            "member": world.mallory,
        }
        other = await world.wait_result(world.imagine("a heron --seed 1", **elsewhere))
        assert "Model: first" in parameters(other)  # another guild keeps the bot's default

        refused = await world.wait_ephemeral(defaults(world.boss, models="first"))
        assert "The default model `second` must be one this server offers (first)" in refused.content
        assert (await world.store.prompt_settings(world.guild.id, world.boss.id)).guild.models is None
        refused = await world.wait_ephemeral(defaults(world.boss, models="first, third"))
        assert "no model called third (there are first, second)" in refused.content

        panel = await world.wait_ephemeral(defaults(world.boss, model="first", models="first"))
        assert "Models offered: `first`" in panel.content
        for rec in (world.imagine("a heron --model second"), world.imagine("a heron", model="second")):
            answer = await world.wait_ephemeral(rec)
            assert answer.content == "This server doesn't offer the model `second`; it offers first."
        usage = await world.store.usage(world.guild.id, world.alice.id, (), world.bot.services.clock())
        assert usage.used_last_hour == 1  # only the first picture was spent

        await world.wait_ephemeral(defaults(world.boss, models="-", model="-"))
        result = await world.wait_result(world.imagine("a heron --model second --seed 1"))
        assert "Model: second" in parameters(result)
