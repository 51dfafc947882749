"""`LoraCatalog`: the adapters in `LORA_DIR` as the bot sees them (torch-free).

The folder is listed again only when its modification time changes (adding, removing or renaming a
file changes it; a listing made within a second of a change is not trusted, as file times are
coarse), so `/imagine` and its autocomplete never list it on every call. Whether an adapter
fits a model is read from the two files' headers (`lora_check`), once per version of the adapter
file (its size and modification time) and model."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from generation.pipelines.lora import SUFFIX, lora_names
from generation.pipelines.lora_check import ModelLayers, UnreadableLora, incompatibility, read_shapes

log = logging.getLogger(__name__)

ModelFolder = Callable[[str], Path | None]
"""A model's name → the diffusers folder of its files on this machine (None: not here, not checked)."""
AUTOCOMPLETE_LIMIT = 25  # Discord's most autocomplete choices
SETTLED_NS = 1_000_000_000  # a folder changed longer ago than this is listed once for that change


class LoraCatalog:
    """The installed adapters, listed once per change of the folder; safe to share between threads."""

    def __init__(self, folder: Path | None, model_folder: ModelFolder = lambda _name: None) -> None:
        self.folder = folder
        self._model_folder = model_folder
        self._lock = threading.Lock()
        self._listed: tuple[int, list[str]] | None = None  # (settled folder mtime, names)
        self.listings = 0  # how many times the folder was listed (tests, benchmarks)
        self._layers: dict[Path, ModelLayers] = {}
        self._verdicts: dict[tuple[str, int, int, Path], str | None] = {}

    def names(self) -> list[str]:
        """The adapters' names (file stems), sorted."""
        stamp = self._stamp()
        with self._lock:
            if self._listed is not None and self._listed[0] == stamp:
                return list(self._listed[1])
        names = lora_names(self.folder)
        with self._lock:
            settled = stamp is not None and time.time_ns() - stamp > SETTLED_NS
            self._listed = (stamp, names) if settled and stamp is not None else None
            self.listings += 1
        return list(names)

    def matching(self, typed: str) -> list[str]:
        """Names containing what a member has typed so far (case-insensitive), those starting
        with it first, at most Discord's 25."""
        wanted = typed.strip().split(":", 1)[0].casefold()
        names = [n for n in self.names() if wanted in n.casefold()]
        names.sort(key=lambda n: (not n.casefold().startswith(wanted), n))
        return names[:AUTOCOMPLETE_LIMIT]

    def refusal(self, model: str, loras: Sequence[tuple[str, float]]) -> str | None:
        """Why one of `loras` cannot be applied to `model` (a sentence for the member), or None.
        Blocking file reads: call it off the event loop."""
        folder = self._model_folder(model)
        if folder is None or self.folder is None:
            return None
        for name, _weight in loras:
            why = self._verdict(name, folder)
            if why is not None:
                return f"The LoRA `{name}` doesn't fit the model `{model}`: {why}."
        return None

    def _verdict(self, name: str, model_folder: Path) -> str | None:
        assert self.folder is not None
        path = self.folder / f"{name}{SUFFIX}"
        try:
            stat = path.stat()
        except OSError:
            return "its file is gone from the LoRA folder"
        key = (name, stat.st_size, stat.st_mtime_ns, model_folder)
        with self._lock:
            if key in self._verdicts:
                return self._verdicts[key]
        try:
            why = incompatibility(read_shapes(path), self._layers_of(model_folder))
        except UnreadableLora as exc:
            why = str(exc)
        except (OSError, ValueError) as exc:  # the model's own files unreadable: not ours to refuse
            log.warning("cannot check LoRA %s against %s: %s", name, model_folder, exc)
            return None
        with self._lock:
            self._verdicts[key] = why
        return why

    def _layers_of(self, model_folder: Path) -> ModelLayers:
        with self._lock:
            cached = self._layers.get(model_folder)
        if cached is None:
            cached = ModelLayers.of_folder(model_folder)
            with self._lock:
                self._layers[model_folder] = cached
        return cached

    def _stamp(self) -> int | None:
        if self.folder is None:
            return None
        try:
            return self.folder.stat().st_mtime_ns
        except OSError:
            return None
