"""`started_world`: the module-scoped `world` fixture the bot-through-Discord tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio

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
