"""`ReduxReferences`: style and subject references on Flux.1 (and Flux Fill) through Flux Redux."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from PIL import Image

from generation.families.adapters import AdapterSpec
from generation.pipelines.loading import dtype_kwargs
from generation.pipelines.references import BLEND_SCALE, EncodedReferences, scale_of, unloadable
from generation.prompts.references import SCALE_AT_DEFAULT, Reference, ReferenceKind
from generation.prompts.request import GenerationRequest

log = logging.getLogger(__name__)


class ReduxReferences(EncodedReferences):
    """References on Flux.1 through Flux Redux: each picture's SigLIP features projected into T5's width
    (`ReduxImageEncoder`: 729 tokens on the real model) and appended to the prompt's tokens, as
    `FluxPriorReduxPipeline` does, scaled by the reference's weight (100 = Redux's own strength, 0:
    left out). Style and subject each add their own block of tokens (their pictures' tokens averaged);
    the text is encoded by the loaded model's own encoders (or taken from the weighted encoder's
    embeddings). Loaded on the first request with references; each picture's tokens cached by hash."""

    def __init__(self, pipe: Any, spec: AdapterSpec) -> None:
        super().__init__(pipe, spec)
        self.redux: Any = None

    @property
    def loaded(self) -> bool:
        """Whether the Redux model is loaded."""
        return self.redux is not None

    def modules(self) -> list[torch.nn.Module]:
        """Redux's modules once loaded (the pool counts them: they are not the pipeline's components)."""
        if self.redux is None:
            return []
        return [m for m in self.redux.components.values() if isinstance(m, torch.nn.Module)]

    def load(self) -> None:
        """`FluxPriorReduxPipeline.from_pretrained` (its image side only), on the model's device and dtype."""
        if self.redux is not None:
            return
        from diffusers import FluxPriorReduxPipeline

        pipeline_class: Any = FluxPriorReduxPipeline
        log.info("loading the reference adapter %s", self.spec.describe())
        dtype = self.pipe.transformer.dtype
        try:
            redux = pipeline_class.from_pretrained(self.spec.source, **dtype_kwargs(dtype))
        except Exception as exc:
            raise unloadable(self.spec, exc) from exc
        self.redux = redux.to(self.pipe.device)

    @contextmanager
    def applied(
        self,
        pipe: Any,
        requests: Sequence[GenerationRequest],
        pictures: Mapping[str, bytes],
        kwargs: dict[str, Any],
    ) -> Iterator[None]:
        """`kwargs` with the prompt's tokens and each image's reference tokens (a batch shares its
        references' kinds and weights: `batch_key`); untouched without a reference of weight above 0."""
        first = [r for r in requests[0].references if scale_of(r) > 0]
        if first:
            self.load()
            text, pooled = self._text(pipe, kwargs)
            blocks = []
            for request in requests:
                live = [r for r in request.references if scale_of(r) > 0]
                tokens = torch.cat([self.embeddings.of(r, pictures) * _redux_strength(r) for r in live])
                blocks += [tokens] * request.count
            image = torch.stack(blocks).to(text.device, text.dtype)
            kwargs["prompt_embeds"] = torch.cat([text, image], dim=1)
            kwargs["pooled_prompt_embeds"] = pooled
        yield

    def _text(self, pipe: Any, kwargs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """The prompts' T5 tokens and pooled CLIP embedding: the weighted encoder's, or encoded now."""
        if "prompt_embeds" in kwargs:
            return kwargs["prompt_embeds"], kwargs["pooled_prompt_embeds"]
        text, pooled, _ids = pipe.encode_prompt(
            prompt=kwargs.pop("prompt"),
            prompt_2=None,
            device=pipe.device,
            num_images_per_prompt=1,
            max_sequence_length=kwargs.get("max_sequence_length", 512),
        )
        return text, pooled

    def _encode(self, picture: Image.Image) -> torch.Tensor:
        features = self.redux.encode_image(picture, self.pipe.device, 1)
        tokens: torch.Tensor = self.redux.image_embedder(features).image_embeds[0]
        return tokens


def _redux_strength(reference: Reference) -> float:
    """A reference's weight as a multiple of Redux's own strength: 100 → 1, 1000 → 2.5 (as the IP-Adapter
    scales), a blend at its weight / 100."""
    return scale_of(reference) / (BLEND_SCALE if reference.kind is ReferenceKind.BLEND else SCALE_AT_DEFAULT)
