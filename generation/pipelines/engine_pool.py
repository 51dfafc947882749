"""`EnginePool`: the `Engine` contract over several models (`MODELS`), for one worker thread.

A batch runs on the engine of its requests' model (`GenerationRequest.model` is the model's name in
the `ModelSet`). At start every model is loaded once, in order, to learn its profile and token
counter (`catalog`: the parser checks a job against its own model's family, size and token limit);
after that an engine is loaded again when a batch needs it, on the worker thread, and kept.
Before a load, and after it, the least recently used engines are evicted while memory is short:
on CUDA "short" is measured (the device's free memory against the model's measured size, or the
largest one seen when it has never been loaded), elsewhere it is a byte budget (`MODEL_MEMORY_GB`;
none: keep everything). The default model is loaded at start and evicted like any other. A model
that fails to load (at start: it stays out of the catalog) fails its batch with `ModelUnavailable`
(its jobs' message) and the pool goes on.
"""

from __future__ import annotations

import gc
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import torch

from generation.backends.protocol import GeneratedImage, ModelEntry
from generation.families.adapters import parse_adapter
from generation.model_set import ModelChoice, ModelSet
from generation.pipelines.contract import BatchFailed, Engine, StepCallback, token_counter_of
from generation.pipelines.options import OptimiseOptions
from generation.pipelines.safety_options import SafetyOptions
from generation.prompts.request import GenerationRequest, ModelProfile

log = logging.getLogger(__name__)

EngineLoader = Callable[[ModelChoice], Engine]
"""Loads one model's engine (on the calling thread)."""
HEADROOM = 1.2  # free memory wanted for a load, as a multiple of the model's size


class ModelUnavailable(BatchFailed):
    """A batch's model is unknown or could not be loaded; the text is what its members are told."""


def engine_bytes(engine: Engine) -> int:
    """Bytes of the tensors an engine holds (parameters and buffers of its modules: `held_modules()`
    where it has it, else its pipeline's components; each storage counted once: pipelines made with
    `from_pipe` share theirs)."""
    held = getattr(engine, "held_modules", None)
    if callable(held):
        modules = list(held())
    else:
        pipe = getattr(engine, "pipeline", None) or getattr(getattr(engine, "model", None), "text2img", None)
        modules = [m for m in getattr(pipe, "components", {}).values() if isinstance(m, torch.nn.Module)]
    seen: set[tuple[str, int]] = set()
    total = 0
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            key = (str(tensor.device), tensor.untyped_storage().data_ptr())
            if key not in seen:
                seen.add(key)
                total += tensor.untyped_storage().nbytes()
    return total


def cuda_free_bytes(device: str) -> Callable[[], int | None]:
    """A probe of free memory on `device` (None off CUDA: the pool then uses its budget)."""

    def probe() -> int | None:
        if not device.startswith("cuda") or not torch.cuda.is_available():
            return None
        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free)

    return probe


class EnginePool:
    """Several models' engines behind one `Engine`; use from one thread (the worker's)."""

    def __init__(
        self,
        models: ModelSet,
        loader: EngineLoader,
        *,
        budget_bytes: int | None = None,
        free_bytes: Callable[[], int | None] = lambda: None,
        size_of: Callable[[Engine], int] = engine_bytes,
        on_demand: Sequence[tuple[ModelChoice, EngineLoader]] = (),
    ) -> None:
        """Loads the default model now (a failure raises: the bot cannot start without it). `on_demand`:
        the second models (VIDEO_MODEL, EDIT_MODEL), each with its own loader, loaded on first use only
        (their jobs ask for them, never `--model`) and evicted like the rest."""
        self.models = models
        self._loader = loader
        self.on_demand = {choice.name: (choice, own) for choice, own in on_demand}
        self._budget = budget_bytes
        self._free = free_bytes
        self._size_of = size_of
        self._engines: OrderedDict[str, Engine] = OrderedDict()  # least recently used first
        self.sizes: dict[str, int] = {}  # measured bytes of each model loaded so far
        self.loads: list[str] = []  # names in the order they were loaded (tests, benchmarks)
        self.evictions: list[str] = []
        self._catalog: dict[str, ModelEntry] = {}
        default = self._load(models.default)
        self.profile: ModelProfile = default.profile
        for choice in models.choices:
            if choice.name not in self._catalog:
                try:
                    self._load(choice)
                except ModelUnavailable as exc:  # logged; its jobs fail with the reason
                    log.warning("%s", exc)
        self.engine_for(models.default.name)  # the default warm again (reloaded if a probe evicted it)

    # -- the Engine contract ------------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` as the default model's tokenizer counts them."""
        return self._any().count_tokens(text)

    def max_batch_images(self, request: GenerationRequest) -> int:
        """The cap of the request's model if loaded, else the default's (called from the loop while
        the worker is idle: never loads)."""
        engine = self._engines.get(request.model) or self._any()
        return engine.max_batch_images(request)

    def run_batch(
        self,
        requests: Sequence[GenerationRequest],
        sources: Sequence[bytes | None],
        on_step: StepCallback,
        pictures: Mapping[str, bytes] | None = None,
    ) -> list[list[GeneratedImage]]:
        """Run the batch on its model's engine (loading it first if need be)."""
        if not requests:
            raise ValueError("run_batch needs at least one request")
        name = requests[0].model
        engine = self.engine_for(name)
        try:
            return engine.run_batch(requests, sources, on_step, pictures)
        finally:
            if requests[0].references:  # a reference adapter loads on the first: the model grew
                self._remeasure(name, engine)

    def _remeasure(self, name: str, engine: Engine) -> None:
        """Measure a loaded model again (what it holds may have grown since it loaded), making room if
        it did."""
        size = self._size_of(engine)
        if self._engines.get(name) is engine and size != self.sizes.get(name):
            log.info("model %s now holds %.2f GiB", name, size / 2**30)
            self.sizes[name] = size
            self._make_room(0, keep=name)

    def close(self) -> None:
        """Close every engine."""
        for name in list(self._engines):
            self._evict(name, reason="closing")

    # -- models -------------------------------------------------------------------------------------

    @property
    def loaded(self) -> tuple[str, ...]:
        """Names of the loaded models, least recently used first."""
        return tuple(self._engines)

    def profile_of(self, name: str) -> ModelProfile | None:
        """The profile of a loaded model (None when it is not loaded)."""
        engine = self._engines.get(name)
        return None if engine is None else engine.profile

    def catalog(self) -> dict[str, ModelEntry]:
        """Every model that loaded at start, by name, with its profile and token counter."""
        return dict(self._catalog)

    def engine_for(self, name: str) -> Engine:
        """The engine of model `name`, loaded (and room made for it) if need be."""
        engine = self._engines.get(name)
        if engine is not None:
            self._engines.move_to_end(name)
            return engine
        if name in self.on_demand:
            return self._load(*self.on_demand[name])
        choice = self.models.get(name)
        if choice is None:
            offered = ", ".join(self.models.names)
            raise ModelUnavailable(f"this bot has no model called {name!r} (it has {offered})")
        return self._load(choice)

    def _load(self, choice: ModelChoice, loader: EngineLoader | None = None) -> Engine:
        wanted = self.sizes.get(choice.name) or max(self.sizes.values(), default=0)
        self._make_room(wanted, keep=None)
        log.info("loading model %s (%s)", choice.name, choice.source)
        try:
            engine = (loader or self._loader)(choice)
        except Exception as exc:
            log.exception("loading model %s (%s) failed", choice.name, choice.source)
            why = f"{type(exc).__name__}: {exc}"
            raise ModelUnavailable(f"the model {choice.name!r} could not be loaded ({why})") from exc
        engine.profile = replace(engine.profile, name=choice.name)  # requests name the model this way
        if loader is None:  # an on-demand model is asked for by its jobs, never by `--model`
            self._catalog[choice.name] = ModelEntry(engine.profile, token_counter_of(engine))
        self._engines[choice.name] = engine
        self.sizes[choice.name] = self._size_of(engine)
        self.loads.append(choice.name)
        log.info("model %s loaded: %.2f GiB", choice.name, self.sizes[choice.name] / 2**30)
        self._make_room(0, keep=choice.name)
        return engine

    def _short_of_memory(self, wanted: int) -> bool:
        if self._budget is not None:
            return sum(self.sizes[n] for n in self._engines) + wanted > self._budget
        free = self._free()
        return free is not None and free < wanted * HEADROOM

    def _make_room(self, wanted: int, *, keep: str | None) -> None:
        """Evict the least recently used engines (never `keep`) while memory is short."""
        while self._short_of_memory(wanted):
            victim = next((n for n in self._engines if n != keep), None)
            if victim is None:
                return  # nothing left to give back: try anyway (an OOM splits or fails the batch)
            self._evict(victim, reason="memory")

    def _evict(self, name: str, *, reason: str) -> None:
        engine = self._engines.pop(name)
        self.evictions.append(name)
        log.info("unloading model %s (%s)", name, reason)
        close = getattr(engine, "close", None)
        if callable(close):
            close()
        del engine
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _any(self) -> Engine:
        engine = self._engines.get(self.models.default.name)
        if engine is None:
            engine = next(reversed(self._engines.values()), None)
        if engine is None:
            engine = self.engine_for(self.models.default.name)
        return engine


def load_engines(
    models: ModelSet,
    device: str,
    *,
    cache_dir: Path | None,
    options: OptimiseOptions | None,
    safety: SafetyOptions | None = None,
    memory_budget_gb: float | None = None,
    lora_dir: Path | None = None,
    video_model: str | None = None,
    edit_model: str | None = None,
) -> Engine:
    """The worker's engine for `models` (call it on the worker thread): one model's `DiffusersEngine`
    as before, or an `EnginePool` of several, kept within `memory_budget_gb` (else free CUDA memory).
    With `video_model` (VIDEO_MODEL) or `edit_model` (EDIT_MODEL) always a pool: each is loaded there on
    first use, by that name (what Animate's and Edit's requests name)."""
    from generation.pipelines.engine import DiffusersEngine

    def load(choice: ModelChoice) -> Engine:
        return DiffusersEngine.load(
            choice.source,
            device,
            cache_dir=cache_dir,
            options=options,
            safety=safety,
            lora_dir=lora_dir,
            reference_adapter=parse_adapter(choice.reference) if choice.reference else None,
        )

    def load_video(choice: ModelChoice) -> Engine:
        from generation.pipelines.video_engine import VideoEngine

        require = safety is not None and safety.mode == "require"  # no checker screens a clip
        return VideoEngine.load(
            choice.name, choice.source, device, cache_dir=cache_dir, flag_unscreened=require
        )

    def load_edit(choice: ModelChoice) -> Engine:
        return instruction_editor(load(choice))

    on_demand = [
        (ModelChoice(name, name), loader)
        for name, loader in ((video_model, load_video), (edit_model, load_edit))
        if name is not None
    ]
    if not on_demand and len(models.choices) == 1 and models.default.name == models.default.source:
        return load(models.default)  # MODEL_ID alone: the model is named by its id, as always
    budget = None if memory_budget_gb is None else int(memory_budget_gb * 2**30)
    return EnginePool(
        models, load, budget_bytes=budget, free_bytes=cuda_free_bytes(device), on_demand=on_demand
    )


def instruction_editor(engine: Engine) -> Engine:
    """`engine` if its model edits a picture from words (EDIT_MODEL's kind), else a ValueError that
    says what EDIT_MODEL takes (its jobs fail with it: `ModelUnavailable`)."""
    features = engine.profile.features
    if not features.instruct:
        raise ValueError(
            f"{features.label} doesn't edit a picture from words; EDIT_MODEL takes an instruction-editing "
            "model (Flux Kontext or Qwen-Image-Edit, e.g. black-forest-labs/FLUX.1-Kontext-dev or "
            "Qwen/Qwen-Image-Edit-2509)"
        )
    return engine
