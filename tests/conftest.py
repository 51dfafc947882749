"""Shared fixtures: the tiny model (built once per session), its engine, one local Ray cluster, and
the `FaultyEngine` of a module's started world."""

from collections.abc import Iterator

import pytest

from tests.bot_harness import BotWorld, FaultyEngine

pytest_plugins = ["tests.fixtures_generation", "tests.ray_fixtures"]


@pytest.fixture
def engine(world: BotWorld) -> Iterator[FaultyEngine]:
    """The module's started world's `FaultyEngine` (a world started with engine_wrapper=FaultyEngine)."""
    with FaultyEngine.of(world) as faulty:
        yield faulty
