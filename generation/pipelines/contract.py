"""The contract between the scheduler (`generation.backends.local`) and the module that drives diffusers.

Only `generation.pipelines.engine` and `generation.pipelines.loading` import torch; the scheduler sees
this Protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from generation.backends.protocol import GeneratedImage, ModelEntry, TokenCounter, TokenizerCounter
from generation.prompts.request import GenerationRequest, ModelProfile

PreviewFn = Callable[[int], bytes]
"""preview(i) renders a small PNG of request i's first image so far, cheaply from the latents."""

StepCallback = Callable[[int, int, PreviewFn], bool]
"""on_step(step, total, preview) after each denoising step; return False to stop the batch."""


class OutOfMemory(Exception):
    """The device ran out of memory for this batch (the scheduler may split it and retry)."""


class BatchFailed(Exception):
    """A batch failed for a reason its members may be told: the text is their jobs' message."""


class NonFiniteOutput(Exception):
    """Some requests of a batch came out non-finite (NaN or infinite pixels: black pictures).
    `results` holds every request's images, empty for the requests in `failed` (batch indices)."""

    def __init__(self, failed: frozenset[int], results: list[list[GeneratedImage]]) -> None:
        super().__init__(f"{len(failed)} of {len(results)} requests came out non-finite")
        self.failed = failed
        self.results = results


class NoPreview(Exception):
    """preview(i) of a request that has nothing to show yet (its call has not started)."""


class BatchInterrupted(Exception):
    """The step callback asked the batch to stop."""


class Engine(Protocol):
    """Runs batches of compatible requests on one loaded model. Not thread-safe: one thread owns it."""

    profile: ModelProfile

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` with begin/end tokens, as the model's tokenizer counts them."""
        ...

    def run_batch(
        self,
        requests: Sequence[GenerationRequest],
        sources: Sequence[bytes | None],
        on_step: StepCallback,
        pictures: Mapping[str, bytes] | None = None,
    ) -> list[list[GeneratedImage]]:
        """Run requests with equal `batch_key()` as one pipeline call, one generator per image, so
        every image equals what it would be alone. `sources[i]` is request i's source image bytes
        (img2img / variation / upscale) or None; `pictures` the bytes of the batch's reference pictures
        by hash (`GenerationRequest.references`). Returns, per request, its images in seed order.
        Raises OutOfMemory, BatchInterrupted, NonFiniteOutput (the finite requests' images kept), or
        any other exception for a failed batch."""
        ...

    def max_batch_images(self, request: GenerationRequest) -> int:
        """The most images of this shape that fit in one batch (from free device memory)."""
        ...


def token_counter_of(engine: Engine) -> TokenCounter:
    """A picklable counter for an engine's (default) model: its own (`token_counter()`), its
    tokenizer, or the engine itself."""
    own: Callable[[], TokenCounter] | None = getattr(engine, "token_counter", None)
    if own is not None:
        return own()
    tokenizer = getattr(getattr(engine, "model", None), "tokenizer", None)
    return TokenizerCounter(tokenizer) if tokenizer is not None else engine


def catalog_of(engine: Engine) -> dict[str, ModelEntry]:
    """Every model `engine` runs by name: an `EnginePool`'s `catalog()`, else its one model."""
    catalog: Callable[[], Mapping[str, ModelEntry]] | None = getattr(engine, "catalog", None)
    if catalog is not None:
        return dict(catalog())
    return {engine.profile.name: ModelEntry(engine.profile, token_counter_of(engine))}
