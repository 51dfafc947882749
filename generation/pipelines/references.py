"""Style and subject references (`--sref`, `--oref`, `/blend`): what every model's references share.

`References` is what the engine asks of them; `PictureEmbeddings` encodes each picture once and keeps it
by its hash (`embeds_cached` counts the hits), so a second job with the same reference skips the
encoder, a reference of several pictures being their embeddings' mean; `InputReferences` hands subject
and blend pictures to a model as its own picture input (Kontext, Qwen-Image-Edit). The adapters on the
loaded weights live beside it: `ip_adapters` (SD 1.x/SDXL's two-slot IP-Adapter, SD 3's one-slot one)
and `redux` (Flux Redux). `tiny_adapter_spec` builds a built-in tiny model's tiny adapter. Not
thread-safe: the engine's thread owns them.
"""

from __future__ import annotations

import io
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

import torch
from PIL import Image

from generation.families.adapters import IP_ADAPTER, REDUX, AdapterSpec
from generation.families.base import Family
from generation.media.compose import side_by_side
from generation.prompts.references import Reference, ReferenceKind, adapter_scale
from generation.prompts.request import GenerationRequest

log = logging.getLogger(__name__)

CACHED_EMBEDDINGS = 64  # pictures whose embeddings are kept (a few MB at most)
STYLE_SLOT, SUBJECT_SLOT = 0, 1
BLEND_SCALE = 1.0  # /blend's pictures are the whole prompt: the adapter's full scale at weight 100


def unloadable(spec: AdapterSpec, exc: Exception) -> ReferenceAdapterError:
    """The error a reference adapter that failed to load fails its jobs with."""
    why = f"{type(exc).__name__}: {exc}"
    return ReferenceAdapterError(f"the reference adapter {spec.describe()} could not be loaded ({why})")


class References(Protocol):
    """What the engine asks of a model's references: arguments for one call of a pipeline."""

    def applied(
        self,
        pipe: Any,
        requests: Sequence[GenerationRequest],
        pictures: Mapping[str, bytes],
        kwargs: dict[str, Any],
    ) -> AbstractContextManager[None]:
        """A block around the call in which `kwargs` carry the batch's references."""
        ...


class ReferenceAdapterError(RuntimeError):
    """The reference adapter could not be loaded (its jobs fail with this text)."""


def tiny_adapter_spec(pipe: Any, kind: str) -> AdapterSpec:
    """The tiny reference adapter of a built-in tiny model, built beside its folder: an IP-Adapter for
    `tiny` (`tiny_ip_adapter`), a Redux model for the tiny Flux.1 models (`tiny_redux`)."""
    cache = Path(pipe.name_or_path).parent
    if kind == IP_ADAPTER and takes_transformer_ip_adapter(pipe):
        from generation.pipelines.tiny_ip_adapter import (
            TINY_IP_ADAPTER_ENCODER,
            TINY_SD3_IP_ADAPTER_WEIGHT,
            ensure_tiny_sd3_ip_adapter,
        )

        folder = ensure_tiny_sd3_ip_adapter(cache, dict(pipe.transformer.config))
        return AdapterSpec(
            str(folder), "", TINY_SD3_IP_ADAPTER_WEIGHT, encoder=str(folder / TINY_IP_ADAPTER_ENCODER)
        )
    if kind == REDUX:
        from generation.pipelines.tiny_redux import ensure_tiny_redux

        width = int(pipe.transformer.config.joint_attention_dim)
        return AdapterSpec(str(ensure_tiny_redux(cache, width)), kind=REDUX)
    from generation.pipelines.tiny_ip_adapter import (
        TINY_IP_ADAPTER_ENCODER,
        TINY_IP_ADAPTER_WEIGHT,
        ensure_tiny_ip_adapter,
    )

    folder = ensure_tiny_ip_adapter(cache, dict(pipe.unet.config))
    return AdapterSpec(str(folder), "", TINY_IP_ADAPTER_WEIGHT, TINY_IP_ADAPTER_ENCODER)


def takes_transformer_ip_adapter(pipe: Any) -> bool:
    """Whether the pipeline loads SD 3's kind of IP-Adapter (diffusers' `SD3IPAdapterMixin`)."""
    from diffusers.loaders.ip_adapter import SD3IPAdapterMixin

    return isinstance(pipe, SD3IPAdapterMixin)


class PictureEmbeddings:
    """Each reference picture's embedding, computed once by `encode` and kept by the picture's hash (the
    last CACHED_EMBEDDINGS); a reference's embedding is the mean of its pictures'."""

    def __init__(self, encode: Callable[[Image.Image], torch.Tensor]) -> None:
        self._encode = encode
        self._kept: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.computed = 0  # pictures run through the encoder (bench, tests)
        self.cached = 0  # pictures whose embedding came from the cache

    def of(self, reference: Reference, pictures: Mapping[str, bytes]) -> torch.Tensor:
        """The mean embedding of `reference`'s pictures (`pictures`: their bytes by hash)."""
        mean: torch.Tensor = torch.stack([self._one(d, pictures) for d in reference.images]).mean(dim=0)
        return mean

    def _one(self, digest: str, pictures: Mapping[str, bytes]) -> torch.Tensor:
        kept = self._kept.get(digest)
        if kept is not None:
            self._kept.move_to_end(digest)
            self.cached += 1
            return kept
        embedding = self._encode(_decode(pictures, digest)).detach()
        self._kept[digest] = embedding
        self.computed += 1
        while len(self._kept) > CACHED_EMBEDDINGS:
            self._kept.popitem(last=False)
        return embedding


class EncodedReferences:
    """What the adapters on the loaded weights share (`ip_adapters`, `redux`): the pipeline, the adapter's
    spec, and each picture encoded once by the subclass's `_encode` (`PictureEmbeddings`)."""

    def __init__(self, pipe: Any, spec: AdapterSpec) -> None:
        self.pipe = pipe
        self.spec = spec
        self.embeddings = PictureEmbeddings(self._encode)

    @property
    def embeds_computed(self) -> int:
        """Pictures run through the adapter's image encoder (bench, tests)."""
        return self.embeddings.computed

    @property
    def embeds_cached(self) -> int:
        """Pictures whose embedding came from the cache."""
        return self.embeddings.cached

    def _encode(self, picture: Image.Image) -> torch.Tensor:
        raise NotImplementedError


def scale_of(reference: Reference) -> float:
    """A reference's adapter scale: its weight's (`adapter_scale`), a blend's at `BLEND_SCALE` per 100."""
    if reference.kind is ReferenceKind.BLEND:
        return BLEND_SCALE * reference.weight / 100
    return adapter_scale(reference.weight)


class InputReferences:
    """References as the model's own picture input (Kontext, Qwen-Image-Edit: `Features.reference_adapter`
    off): each image's subject or blend pictures, as many as the model's input takes
    (`Family.input_pictures`; beyond that, side by side in strips of about the request's pixel count),
    handed over as the family says (`Family.reference_input`)."""

    def __init__(self, family: Family) -> None:
        self.family = family

    @contextmanager
    def applied(
        self,
        pipe: Any,
        requests: Sequence[GenerationRequest],
        pictures: Mapping[str, bytes],
        kwargs: dict[str, Any],
    ) -> Iterator[None]:
        """`kwargs` with the strips (one per image) where the batch has references (all its requests
        do, or none: `batch_key`)."""
        if any(r.references for r in requests):
            inputs = []
            for request in requests:
                [reference] = request.references  # one subject or blend: the parser refuses the rest
                images = [_decode(pictures, digest) for digest in reference.images]
                inputs += [self._input(images, request)] * request.count
            kwargs.update(self.family.reference_input(inputs))
        yield

    def _input(self, images: Sequence[Image.Image], request: GenerationRequest) -> list[Image.Image]:
        """`images` as at most `input_pictures` pictures: alone where they fit, else dealt in turn into
        that many strips, each of about the request's pixel count."""
        slots = max(1, self.family.input_pictures)
        if len(images) <= slots and slots > 1:
            return list(images)
        groups = [images[i::slots] for i in range(min(slots, len(images)))]
        area, step = request.width * request.height, self.family.features.size_step
        return [side_by_side(group, area, step) for group in groups]


def _decode(pictures: Mapping[str, bytes], digest: str) -> Image.Image:
    data = pictures.get(digest)
    if data is None:
        raise ValueError(f"reference picture {digest[:10]} was not handed to the engine")
    with Image.open(io.BytesIO(data)) as opened:
        return opened.convert("RGB")
