"""LoRA adapters from `LORA_DIR`, applied to one pipeline call through diffusers' PEFT integration.

Each adapter file (`NAME.safetensors`) is loaded once, on first use, with `load_lora_weights` and kept;
a call sets the batch's adapters and weights, and afterwards the adapters are disabled, so the base
model's pictures come back exactly (PEFT's disabled layers are bypassed, not scaled to zero)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from generation.pipelines.contract import BatchFailed

log = logging.getLogger(__name__)

SUFFIX = ".safetensors"


def lora_names(folder: Path | None) -> list[str]:
    """The adapters in `folder` (file stems), sorted; none without a folder."""
    if folder is None or not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.iterdir() if p.is_file() and p.suffix == SUFFIX)


class LoraAdapters:
    """The adapters of one pipeline, loaded on first use (one worker thread uses it)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.loaded: set[str] = set()

    @contextlib.contextmanager
    def applied(self, pipe: Any, loras: tuple[tuple[str, float], ...]) -> Iterator[None]:
        """`pipe` with `loras` active for the block; disabled again after it."""
        if not loras:
            yield
            return
        for name, _ in loras:
            self._load(pipe, name)
        names = [name for name, _ in loras]
        pipe.enable_lora()
        try:
            pipe.set_adapters(names, adapter_weights=[weight for _, weight in loras])
        except Exception as exc:  # adapters that don't fit together or this model: this job fails, with why
            pipe.disable_lora()
            raise BatchFailed(
                f"the LoRA adapters could not be applied ({type(exc).__name__}: {exc})"
            ) from exc
        try:
            yield
        finally:
            pipe.disable_lora()

    def _load(self, pipe: Any, name: str) -> None:
        if name in self.loaded:
            return
        if self.folder is None or not (self.folder / f"{name}{SUFFIX}").is_file():
            raise BatchFailed(f"the LoRA {name!r} is not installed on this worker")
        log.info("loading LoRA %s from %s", name, self.folder)
        try:
            pipe.load_lora_weights(str(self.folder), weight_name=f"{name}{SUFFIX}", adapter_name=name)
        except Exception as exc:  # wrong base model, corrupt file: this job fails, the next goes on
            log.exception("loading LoRA %s failed", name)
            raise BatchFailed(f"the LoRA {name!r} could not be loaded ({type(exc).__name__}: {exc})") from exc
        self.loaded.add(name)
        pipe.disable_lora()  # loaded adapters are active until a batch asks for them
