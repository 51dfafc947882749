"""`Services`: what the commands, buttons and reactions work with, built once by `ImagineBot`.

Command modules take this instead of the bot, so they never import `bot.client` (which imports them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bot.settings import Settings
from generation.backends.protocol import GenerationBackend
from generation.media.image_store import ImageStore
from jobs.runner import JobRunner
from storage.interface import Store


@dataclass(frozen=True)
class Services:
    """The bot's dependencies, shared by every command and handler."""

    settings: Settings
    store: Store
    backend: GenerationBackend
    image_store: ImageStore
    runner: JobRunner
    clock: Callable[[], float]
