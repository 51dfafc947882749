"""What the bot-through-Discord tests share: `started_world`, the module-scoped `world` fixture, and
the crowd of members the bot-process tests send at once."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio

from testkit.discord_loopback import Channel, DiscordLoopback, Guild, InteractionRecord, Member
from tests.bot_harness import BotWorld


def started_world(
    folder: str,
    *,
    engine_wrapper: Callable[[Any], Any] | None = None,
    extra_settings: dict[str, Any] | None = None,
    service_options: dict[str, Any] | None = None,
    bot_options: dict[str, Any] | None = None,
) -> Any:
    """A module-scoped `world` fixture: a `BotWorld` in a fresh temporary `folder`, with the given
    fault injection and options (see `BotWorld`'s fields), its bot started. Assign it to `world`."""

    @pytest_asyncio.fixture(scope="module", loop_scope="module")
    async def world(tmp_path_factory: pytest.TempPathFactory, tiny_model: Any) -> AsyncIterator[BotWorld]:
        async with BotWorld.open(tmp_path_factory.mktemp(folder), tiny_model) as w:
            w.engine_wrapper = engine_wrapper
            w.extra_settings = dict(extra_settings or {})
            w.service_options = dict(service_options or {})
            w.bot_options = dict(bot_options or {})
            await w.start_bot()
            yield w

    return world


def crowd(server: DiscordLoopback, name: str, size: int) -> tuple[Guild, Channel, list[Member]]:
    """A guild `name` with an `art` channel and `size` members m0, m1, …"""
    guild = server.add_guild(name)
    return guild, server.add_channel(guild, "art"), [server.add_member(guild, f"m{i}") for i in range(size)]


def imagine_each(
    server: DiscordLoopback, guild: Guild, channel: Channel, members: list[Member], prompts: list[str]
) -> list[InteractionRecord]:
    """Each member asks `/imagine` for its prompt in `channel`, at once."""
    return [
        server.invoke("imagine", {"prompt": prompt}, guild=guild, channel=channel, member=member)
        for member, prompt in zip(members, prompts, strict=True)
    ]
