"""IP-Adapters on the loaded weights: `ReferenceAdapter` (SD 1.x and SDXL, diffusers' `load_ip_adapter`)
and `TransformerReferenceAdapter` (SD 3's, `SD3IPAdapterMixin`), each loaded on the first request that
has references.

`ReferenceAdapter` is loaded twice, as two slots sharing one image encoder: slot 0 for the style (scaled
on the family's style layers, `Family.reference_layers`: InstantStyle), slot 1 for the subject or a
blend (every layer). Once loaded, every call of the model passes both slots' embeddings: a batch without
references (or without one kind) gets zeros at scale 0, which diffusers' IP attention skips, so its
pixels are those of the model without the adapter.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from generation.families.adapters import AdapterSpec, ReferenceLayers
from generation.families.base import call_parameters
from generation.pipelines.loading import dtype_kwargs
from generation.pipelines.references import (
    EncodedReferences,
    ReferenceAdapterError,
    scale_of,
    unloadable,
)
from generation.prompts.references import ReferenceKind, adapter_scale
from generation.prompts.request import GenerationRequest

log = logging.getLogger(__name__)


class ReferenceAdapter(EncodedReferences):
    """One model's IP-Adapter: loaded on first use, pictures encoded once, scales and embeddings per call."""

    def __init__(self, pipe: Any, spec: AdapterSpec, layers: ReferenceLayers | None) -> None:
        super().__init__(pipe, spec)
        self.layers = layers or ReferenceLayers(style={})
        self._unconditional: torch.Tensor | None = None  # the plus kinds': a blank picture's states

    @property
    def loaded(self) -> bool:
        """Whether the pipeline's UNet carries an IP-Adapter (this one's, or one loaded by another engine
        over the same pipeline: then every call must hand it embeddings too)."""
        unet = self.pipe.unet
        return getattr(unet.config, "encoder_hid_dim_type", None) == "ip_image_proj"

    def load(self) -> None:
        """`load_ip_adapter` on the pipeline, in two slots (style, subject); idempotent. An encoder named
        apart (`AdapterSpec.encoder`: SDXL's plus ViT-H kinds read a ViT-H, not the bigG beside them) is
        loaded first by its own `from_pretrained`, and diffusers then keeps it."""
        if self.loaded:
            return
        spec = self.spec
        log.info("loading the reference adapter %s", spec.describe())
        try:
            if spec.encoder:
                from transformers import CLIPVisionModelWithProjection

                dtype: dict[str, Any] = dict(dtype_kwargs(self.pipe.unet.dtype))
                encoder: Any = CLIPVisionModelWithProjection.from_pretrained(spec.encoder, **dtype)
                self.pipe.register_modules(image_encoder=encoder.to(self.pipe.device))
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
        set and both slots' embeddings, one per image of the batch, handed over as they are
        (`_handed_over`); nothing before the adapter is loaded (the first request with references loads
        it)."""
        if any(r.references for r in requests):
            self.load()
        if not self.loaded:
            yield
            return
        with _handed_over(pipe, kwargs, self._slots(requests, pictures, kwargs)):
            yield

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
                scale_of(subject) if subject else 0.0,
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


class TransformerReferenceAdapter(EncodedReferences):
    """References on SD 3 through its IP-Adapter (diffusers' `SD3IPAdapterMixin`: a SigLIP encoder's
    penultimate states, a time-aware resampler, an image attention in every block). One slot: a call
    carries one reference kind (the parser refuses a style with a subject), scaled as the IP-Adapter
    (100 = 0.6, a blend 1.0) on every block; several pictures averaged; per-image embeddings in one call
    (handed over as they are, as `ReferenceAdapter` does); the unconditional half zeros, as its
    pipeline makes it. The encoder is loaded by its own `from_pretrained` (`AdapterSpec.encoder`, else the
    adapter's `image_encoder` folder) and registered on the pipeline before `load_ip_adapter`, which
    takes it from there. Weight 0: no embeddings, the plain call."""

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
        live = [r for r in requests[0].references if scale_of(r) > 0]
        if not live:
            yield
            return
        [first] = live  # one kind: the parser refuses a style with a subject on one slot
        self.load()
        if "ip_adapter_image_embeds" not in call_parameters(pipe):
            raise ReferenceAdapterError(f"{type(pipe).__name__} takes no reference pictures")
        pipe.set_ip_adapter_scale(scale_of(first))
        per_image = []
        for request in requests:
            [reference] = [r for r in request.references if r.kind is first.kind]
            per_image += [self.embeddings.of(reference, pictures)] * request.count
        sample = pipe.transformer.dtype
        positive = torch.stack(per_image).to(pipe.device, sample)
        guided = float(kwargs.get("guidance_scale", 0.0)) > 1.0
        embeds = torch.cat([torch.zeros_like(positive), positive]) if guided else positive
        with _handed_over(pipe, kwargs, embeds):
            yield

    def _encode(self, picture: Image.Image) -> torch.Tensor:
        states: torch.Tensor = self.pipe.encode_image(picture, self.pipe.device)[0]
        return states


@contextmanager
def _handed_over(pipe: Any, kwargs: dict[str, Any], embeds: Any) -> Iterator[None]:
    """`embeds` (one per image of the call) handed to `pipe` as they are: diffusers' pipelines repeat
    given embeddings for every prompt (one reference for a whole call), so for the call the pipeline's
    `prepare_ip_adapter_image_embeds` returns ours."""
    kwargs["ip_adapter_image_embeds"] = embeds
    pipe.prepare_ip_adapter_image_embeds = lambda *_args, **_kwargs: embeds
    try:
        yield
    finally:
        del pipe.prepare_ip_adapter_image_embeds  # the class's own again
