"""`ReferenceAdapter`: style and subject references (`--sref`, `--oref`, `/blend`) on the loaded weights
through an IP-Adapter (diffusers' `load_ip_adapter`), loaded on the first request that has references;
`ReduxReferences`: the same on Flux.1 through Flux Redux; `InputReferences`: subject and blend pictures
as the model's own picture input (Kontext).

The adapter is loaded twice, as two slots sharing one image encoder: slot 0 for the style (scaled on
the family's style layers, `Family.reference_layers`: InstantStyle), slot 1 for the subject or a
blend (every layer). Each picture is encoded once and kept by its hash (`embeds_cached` counts the
hits), so a second job with the same reference skips the encoder; a reference of several pictures is
their embeddings' mean. Once loaded, every call of the model passes both slots' embeddings: a batch
without references (or without one kind) gets zeros at scale 0, which diffusers' IP attention skips,
so its pixels are those of the model without the adapter. Not thread-safe: the engine's thread owns it.
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

from generation.families.adapters import IP_ADAPTER, REDUX, AdapterSpec, ReferenceLayers
from generation.families.base import Family, call_parameters
from generation.media.compose import side_by_side
from generation.pipelines.loading import dtype_kwargs
from generation.prompts.references import SCALE_AT_DEFAULT, Reference, ReferenceKind, adapter_scale
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


class ReferenceAdapter:
    """One model's IP-Adapter: loaded on first use, pictures encoded once, scales and embeddings per call."""

    def __init__(self, pipe: Any, spec: AdapterSpec, layers: ReferenceLayers | None) -> None:
        self.pipe = pipe
        self.spec = spec
        self.layers = layers or ReferenceLayers(style={})
        self.embeddings = PictureEmbeddings(self._encode)
        self._unconditional: torch.Tensor | None = None  # the plus kinds': a blank picture's states

    @property
    def embeds_computed(self) -> int:
        """Pictures run through the image encoder (bench, tests)."""
        return self.embeddings.computed

    @property
    def embeds_cached(self) -> int:
        """Pictures whose embedding came from the cache."""
        return self.embeddings.cached

    @property
    def loaded(self) -> bool:
        """Whether the pipeline's UNet carries an IP-Adapter (this one's, or one loaded by another engine
        over the same pipeline: then every call must hand it embeddings too)."""
        unet = self.pipe.unet
        return getattr(unet.config, "encoder_hid_dim_type", None) == "ip_image_proj"

    def load(self) -> None:
        """`load_ip_adapter` on the pipeline, in two slots (style, subject); idempotent."""
        if self.loaded:
            return
        spec = self.spec
        log.info("loading the reference adapter %s", spec.describe())
        try:
            self.pipe.load_ip_adapter(
                spec.source,
                subfolder=[spec.subfolder, spec.subfolder],
                weight_name=[spec.weight_name, spec.weight_name],
                image_encoder_folder=spec.image_encoder_folder,
            )
        except Exception as exc:
            raise unloadable(spec, exc) from exc

    @contextmanager
    def applied(
        self,
        pipe: Any,
        requests: Sequence[GenerationRequest],
        pictures: Mapping[str, bytes],
        kwargs: dict[str, Any],
    ) -> Iterator[None]:
        """For one call of `pipe` (the text-to-image pipeline or one made from it): the slots' scales
        set and both slots' embeddings, one per image of the batch, handed over; nothing before the
        adapter is loaded (the first request with references loads it). diffusers' pipelines repeat
        given embeddings for every prompt (one reference for a whole call), so for the call the
        pipeline's `prepare_ip_adapter_image_embeds` hands ours over as they are: per image."""
        if any(r.references for r in requests):
            self.load()
        if not self.loaded:
            yield
            return
        slots = self._slots(requests, pictures, kwargs)
        kwargs["ip_adapter_image_embeds"] = slots
        pipe.prepare_ip_adapter_image_embeds = lambda *_args, **_kwargs: slots
        try:
            yield
        finally:
            del pipe.prepare_ip_adapter_image_embeds  # the class's own again

    def _slots(
        self, requests: Sequence[GenerationRequest], pictures: Mapping[str, bytes], kwargs: Mapping[str, Any]
    ) -> list[torch.Tensor]:
        """Set the slots' scales; each slot's embeddings for the batch."""
        first = requests[0].references  # equal kinds and weights across the batch (its batch_key)
        style = next((r for r in first if r.kind is ReferenceKind.STYLE), None)
        subject = next((r for r in first if r.kind is not ReferenceKind.STYLE), None)
        self.pipe.set_ip_adapter_scale(
            [
                self.layers.scale(True, adapter_scale(style.weight)) if style else 0.0,
                _scale_of(subject) if subject else 0.0,
            ]
        )
        guided = self._guided(kwargs)
        slots = []
        for kind_is_style in (True, False):
            per_image = []
            for request in requests:
                reference = next(
                    (r for r in request.references if (r.kind is ReferenceKind.STYLE) == kind_is_style), None
                )
                embed = self.embeddings.of(reference, pictures) if reference else None
                per_image += [embed] * request.count
            slots.append(self._slot(per_image, guided))
        return slots

    # -- embeddings -----------------------------------------------------------------------------------

    def _encode(self, picture: Image.Image) -> torch.Tensor:
        hidden = self._wants_hidden_states()
        embed, unconditional = self.pipe.encode_image(picture, self.pipe.device, 1, hidden)
        if hidden and self._unconditional is None:  # the same for every picture: a blank one's states
            self._unconditional = unconditional[0]
        first: torch.Tensor = embed[0]
        return first

    def _wants_hidden_states(self) -> bool:
        """The adapter's image projection reads the encoder's hidden states (the plus kinds), not its
        pooled embedding (the basic kind's `ImageProjection`)."""
        from diffusers.models.embeddings import ImageProjection

        layers = self.pipe.unet.encoder_hid_proj.image_projection_layers
        return not isinstance(layers[0], ImageProjection)

    def _slot(self, per_image: list[torch.Tensor | None], guided: bool) -> torch.Tensor:
        """One slot's embeddings for the batch, `[2 × images if guided, 1, …]`: the unconditional half
        first, as diffusers' pipelines split them: zeros for the basic kind, and for the kinds that read
        hidden states a blank (all-zero) picture's states, as diffusers' `encode_image` makes them."""
        shape = next((e.shape for e in per_image if e is not None), None)
        if shape is None:
            shape = self._zero_shape()
        sample = next(iter(self.pipe.unet.parameters()))
        rows = [e if e is not None else torch.zeros(shape) for e in per_image]
        positive = torch.stack([r.to(sample.device, sample.dtype) for r in rows])[:, None]
        if not guided:
            return positive
        blank = self._unconditional
        if blank is None or blank.shape != positive.shape[2:]:
            return torch.cat([torch.zeros_like(positive), positive])
        return torch.cat([blank.to(positive)[None, None].expand_as(positive), positive])

    def _zero_shape(self) -> torch.Size:
        encoder = self.pipe.image_encoder
        if self._wants_hidden_states():
            size = encoder.config.image_size // encoder.config.patch_size
            return torch.Size((size * size + 1, encoder.config.hidden_size))
        return torch.Size((encoder.config.projection_dim,))

    def _guided(self, kwargs: Mapping[str, Any]) -> bool:
        """Whether the call runs classifier-free guidance (as the SD pipelines decide it)."""
        cond_proj = getattr(self.pipe.unet.config, "time_cond_proj_dim", None)
        return float(kwargs.get("guidance_scale", 0.0)) > 1.0 and cond_proj is None


def _scale_of(reference: Reference) -> float:
    if reference.kind is ReferenceKind.BLEND:
        return BLEND_SCALE * reference.weight / 100
    return adapter_scale(reference.weight)


class TransformerReferenceAdapter:
    """References on SD 3 through its IP-Adapter (diffusers' `SD3IPAdapterMixin`: a SigLIP encoder's
    penultimate states, a time-aware resampler, an image attention in every block). One slot: a call
    carries one reference kind (the parser refuses a style with a subject), scaled as the IP-Adapter
    (100 = 0.6, a blend 1.0) on every block; several pictures averaged; per-image embeddings in one call
    (handed over as they are, as `ReferenceAdapter` does); the unconditional half zeros, as its
    pipeline makes it. The encoder is loaded by its own `from_pretrained` (`AdapterSpec.encoder`, else the
    adapter's `image_encoder` folder) and registered on the pipeline before `load_ip_adapter`, which
    takes it from there. Weight 0: no embeddings, the plain call."""

    def __init__(self, pipe: Any, spec: AdapterSpec) -> None:
        self.pipe = pipe
        self.spec = spec
        self.embeddings = PictureEmbeddings(self._encode)

    @property
    def embeds_computed(self) -> int:
        """Pictures run through the image encoder (bench, tests)."""
        return self.embeddings.computed

    @property
    def embeds_cached(self) -> int:
        """Pictures whose embedding came from the cache."""
        return self.embeddings.cached

    @property
    def loaded(self) -> bool:
        """Whether the transformer carries the adapter (its image projection)."""
        return getattr(self.pipe.transformer, "image_proj", None) is not None

    def load(self) -> None:
        """The SigLIP encoder and its processor, then `load_ip_adapter`; idempotent."""
        if self.loaded:
            return
        from transformers import SiglipImageProcessor, SiglipVisionModel

        spec = self.spec
        log.info("loading the reference adapter %s", spec.describe())
        where: dict[str, Any] = dict(dtype_kwargs(self.pipe.transformer.dtype))
        encoder = spec.encoder
        if not encoder:
            encoder = spec.source
            where["subfolder"] = str(Path(spec.subfolder, spec.image_encoder_folder))
        try:
            model: Any = SiglipVisionModel.from_pretrained(encoder, **where)
            processor = SiglipImageProcessor.from_pretrained(
                encoder, **{k: v for k, v in where.items() if k == "subfolder"}
            )
            self.pipe.register_modules(image_encoder=model.to(self.pipe.device), feature_extractor=processor)
            self.pipe.load_ip_adapter(
                spec.source,
                subfolder=spec.subfolder or None,
                weight_name=spec.weight_name,
                image_encoder_folder=None,
            )
        except Exception as exc:
            raise unloadable(spec, exc) from exc

    @contextmanager
    def applied(
        self,
        pipe: Any,
        requests: Sequence[GenerationRequest],
        pictures: Mapping[str, bytes],
        kwargs: dict[str, Any],
    ) -> Iterator[None]:
        """`kwargs` with each image's embeddings and the adapter's scale set, where the batch has a
        reference of weight above 0 (all its requests do, or none: `batch_key`)."""
        live = [r for r in requests[0].references if _scale_of(r) > 0]
        if not live:
            yield
            return
        [first] = live  # one kind: the parser refuses a style with a subject on one slot
        self.load()
        if "ip_adapter_image_embeds" not in call_parameters(pipe):
            raise ReferenceAdapterError(f"{type(pipe).__name__} takes no reference pictures")
        pipe.set_ip_adapter_scale(_scale_of(first))
        per_image = []
        for request in requests:
            [reference] = [r for r in request.references if r.kind is first.kind]
            per_image += [self.embeddings.of(reference, pictures)] * request.count
        sample = pipe.transformer.dtype
        positive = torch.stack(per_image).to(pipe.device, sample)
        guided = float(kwargs.get("guidance_scale", 0.0)) > 1.0
        embeds = torch.cat([torch.zeros_like(positive), positive]) if guided else positive
        kwargs["ip_adapter_image_embeds"] = embeds
        # its pipelines repeat given embeddings for every prompt (one reference a call): ours go as they are
        pipe.prepare_ip_adapter_image_embeds = lambda *_args, **_kwargs: embeds
        try:
            yield
        finally:
            del pipe.prepare_ip_adapter_image_embeds  # the class's own again

    def _encode(self, picture: Image.Image) -> torch.Tensor:
        states: torch.Tensor = self.pipe.encode_image(picture, self.pipe.device)[0]
        return states


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


class ReduxReferences:
    """References on Flux.1 through Flux Redux: each picture's SigLIP features projected into T5's width
    (`ReduxImageEncoder`: 729 tokens on the real model) and appended to the prompt's tokens, as
    `FluxPriorReduxPipeline` does, scaled by the reference's weight (100 = Redux's own strength, 0:
    left out). Style and subject each add their own block of tokens (their pictures' tokens averaged);
    the text is encoded by the loaded model's own encoders (or taken from the weighted encoder's
    embeddings). Loaded on the first request with references; each picture's tokens cached by hash."""

    def __init__(self, pipe: Any, spec: AdapterSpec) -> None:
        self.pipe = pipe
        self.spec = spec
        self.redux: Any = None
        self.embeddings = PictureEmbeddings(self._encode)

    @property
    def embeds_computed(self) -> int:
        """Pictures run through Redux's image encoder (bench, tests)."""
        return self.embeddings.computed

    @property
    def embeds_cached(self) -> int:
        """Pictures whose tokens came from the cache."""
        return self.embeddings.cached

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
        first = [r for r in requests[0].references if _scale_of(r) > 0]
        if first:
            self.load()
            text, pooled = self._text(pipe, kwargs)
            blocks = []
            for request in requests:
                live = [r for r in request.references if _scale_of(r) > 0]
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
    return _scale_of(reference) / (BLEND_SCALE if reference.kind is ReferenceKind.BLEND else SCALE_AT_DEFAULT)


def _decode(pictures: Mapping[str, bytes], digest: str) -> Image.Image:
    data = pictures.get(digest)
    if data is None:
        raise ValueError(f"reference picture {digest[:10]} was not handed to the engine")
    with Image.open(io.BytesIO(data)) as opened:
        return opened.convert("RGB")
