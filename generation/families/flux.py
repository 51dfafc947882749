"""Flux.1 (dev, schnell) and Flux Kontext: a packed-latent transformer on flow matching.

`--cfg` is the embedded guidance where the transformer has `guidance_embeds` (dev, Kontext); without
it the model is distilled to few steps (schnell) and `--cfg` is refused. `--no` runs true CFG
(`true_cfg_scale`, a second pass per step). Kontext generates here; its editing use is the edit loop's.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from generation.families.base import Configs, Family
from generation.families.features import Features, Guidance
from generation.families.sd3 import FLOW_SAMPLERS, FLOW_SAMPLERS_WITHOUT_DPM
from generation.prompts.request import GenerationRequest


class FluxFamily(Family):
    """Flux's latents are drawn at twice the packed size's resolution and packed 2×2."""

    def noise_shape(self, pipe: Any, width: int, height: int) -> tuple[int, ...]:
        scale = int(pipe.vae_scale_factor) * 2
        channels = int(pipe.transformer.config.in_channels) // 4
        return (1, channels, 2 * (height // scale), 2 * (width // scale))

    def pack(self, pipe: Any, noise: Any) -> Any:
        batch, channels, height, width = noise.shape
        return pipe._pack_latents(noise, batch, channels, height, width)


class KontextFamily(FluxFamily):
    """Kontext rescales its output to `max_area` (a megapixel by default): the requested size's area,
    so it draws what was asked and the PNG says the truth. From a picture it is conditioned on the
    picture (fit to the request's size, not resized to its own preferred resolutions); its call takes
    no strength (`Features.strength` is off: the engine passes none)."""

    def call_arguments(self, pipe: Any, first: GenerationRequest, kwargs: dict[str, Any]) -> None:
        super().call_arguments(pipe, first, kwargs)
        kwargs["max_area"] = first.width * first.height
        if "image" in kwargs:
            kwargs["_auto_resize"] = False


def _features(family: str, label: str, guidance: Guidance, samplers: tuple[str, ...]) -> Features:
    return Features(
        family=family,
        label=label,
        guidance=guidance,
        samplers=samplers,
        tile=False,
        edits=family == "flux",
        strength=family == "flux",
        lora="transformer",
        size_step=16,
    )


def _family(features: Features, distilled: bool, kind: type[FluxFamily] = FluxFamily) -> FluxFamily:
    return kind(
        features,
        denoiser="transformer",
        long_tokenizer="tokenizer_2",
        default_steps=4 if distilled else None,
        distilled=distilled,
        max_steps=8 if distilled else 100,
        schedule="flow",
        packed=True,
        prompt_encoder="flux",  # T5 reads the whole prompt (its limit): one window
    )


FLUX_DEV = _family(_features("flux", "Flux.1", Guidance.EMBEDDED, FLOW_SAMPLERS), distilled=False)
FLUX_SCHNELL = _family(_features("flux", "Flux.1, distilled", Guidance.NONE, FLOW_SAMPLERS), distilled=True)
KONTEXT = _family(
    _features("flux-kontext", "Flux Kontext", Guidance.EMBEDDED, FLOW_SAMPLERS_WITHOUT_DPM),
    False,
    KontextFamily,
)


def recognise(pipeline_class: str, configs: Configs) -> Family | None:
    """Flux.1 or Kontext; distilled when the transformer has no guidance embedding."""
    if pipeline_class not in ("FluxPipeline", "FluxKontextPipeline"):
        return None
    if pipeline_class == "FluxKontextPipeline":
        return KONTEXT
    family = FLUX_DEV if configs.get("transformer", {}).get("guidance_embeds") else FLUX_SCHNELL
    if configs.get("scheduler", {}).get("use_dynamic_shifting"):
        return family
    return replace(family, features=replace(family.features, samplers=FLOW_SAMPLERS_WITHOUT_DPM))
