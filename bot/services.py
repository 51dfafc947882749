"""`Services`: what the commands, buttons and reactions work with, built once by `ImagineBot`.

Command modules take this instead of the bot, so they never import `bot.client` (which imports them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bot.settings import Settings
from generation.backends.protocol import GenerationBackend
from generation.media.image_store import ImageStore
from generation.pipelines.lora_files import LoraCatalog
from generation.pipelines.source import default_cache_dir, local_folder
from generation.prompts.request import ModelProfile
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
    loras: LoraCatalog

    def profiles(self) -> dict[str, ModelProfile]:
        """Each model's profile by name (a job is parsed against the model it names)."""
        return {name: entry.profile for name, entry in self.backend.catalog.items()}

    def counters(self) -> dict[str, Callable[[str], int]]:
        """Each model's token counter by name (the tokenizer of its longest-reading encoder)."""
        return {name: entry.counter.count_tokens for name, entry in self.backend.catalog.items()}


def lora_catalog(settings: Settings) -> LoraCatalog:
    """LORA_DIR's adapters, checked against the files of MODELS' models where they are on this machine."""
    tiny_cache = settings.model_cache_dir or default_cache_dir()

    def model_folder(name: str) -> Path | None:
        choice = settings.model_set.get(name)
        return None if choice is None else local_folder(choice.source, settings.model_cache_dir, tiny_cache)

    return LoraCatalog(settings.lora_dir, model_folder)
