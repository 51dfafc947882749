"""Flux.1 (dev, schnell) and Flux Kontext: a packed-latent transformer on flow matching.

`--cfg` is the embedded guidance where the transformer has `guidance_embeds` (dev, Kontext); without
it the model is distilled to few steps (schnell) and `--cfg` is refused. `--no` runs true CFG
(`true_cfg_scale`, a second pass per step). Kontext generates here; its editing use is the edit loop's.
Flux Fill is an inpainting model (its transformer also reads the mask and the masked picture): every
batch runs through its masked call, as on SD's 9-channel models; its call takes no negative prompt.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from generation.families.adapters import REDUX, AdapterSpec
from generation.families.base import Configs, Family
from generation.families.features import Features, Guidance
from generation.families.sd3 import FLOW_PICTURE_SAMPLERS, FLOW_SAMPLERS, FLOW_SAMPLERS_WITHOUT_DPM
from generation.prompts.request import GenerationRequest


class FluxFamily(Family):
    """Flux's latents are drawn at twice the packed size's resolution and packed 2×2."""

    def noise_shape(self, pipe: Any, width: int, height: int) -> tuple[int, ...]:
        scale = int(pipe.vae_scale_factor) * 2
        channels = int(pipe.vae.config.latent_channels)  # Fill's transformer reads more than these
        return (1, channels, 2 * (height // scale), 2 * (width // scale))

    def pack(self, pipe: Any, noise: Any) -> Any:
        batch, channels, height, width = noise.shape
        return pipe._pack_latents(noise, batch, channels, height, width)


class KontextFamily(FluxFamily):
    """Kontext rescales its output to `max_area` (a megapixel by default): the requested size's area,
    so it draws what was asked and the PNG says the truth. From a picture it is conditioned on the
    picture (fit to the request's size, not resized to its own preferred resolutions); its call takes
    no strength (`Features.strength` is off: the engine passes none)."""

    def reference_input(self, pictures: list[list[Any]]) -> dict[str, Any]:
        """Kontext's own picture input (one per image) at its size, not resized to its preferred ones."""
        return {"image": [one for [one] in pictures], "_auto_resize": False}

    def call_arguments(self, pipe: Any, first: GenerationRequest, kwargs: dict[str, Any]) -> None:
        super().call_arguments(pipe, first, kwargs)
        kwargs["max_area"] = first.width * first.height
        if "image" in kwargs:
            kwargs["_auto_resize"] = False


FLUX_REDUX = AdapterSpec("black-forest-labs/FLUX.1-Redux-dev", kind=REDUX)
"""Flux.1's reference adapter: Redux (a SigLIP image encoder and a projection into T5's space: the
picture becomes tokens appended to the prompt's), loaded beside the model's own text encoders."""


def _features(family: str, label: str, guidance: Guidance, samplers: tuple[str, ...]) -> Features:
    redraws = family in ("flux", "flux-fill")  # Kontext's image input takes no strength and has no mask
    return Features(
        family=family,
        label=label,
        guidance=guidance,
        negative=family != "flux-fill",  # FluxFillPipeline takes no negative prompt, no true CFG
        samplers=samplers,
        picture_samplers=FLOW_PICTURE_SAMPLERS if redraws else None,  # Kontext conditions, no noising
        tile=False,
        # Fill encodes each picture's canvas with its own seed: `--chaos 0` could not give one picture
        chaos=family != "flux-fill",
        edits=redraws,
        strength=redraws,
        instruct=family == "flux-kontext",  # its image input is changed as the prompt's words say
        # Flux.1 and Fill: `--sref`, `--oref`, `/blend` through Flux Redux (BFL pair Fill with Redux);
        # Kontext: a picture strip as its input
        references=True,
        reference_adapter=family != "flux-kontext",
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
        reference_adapter=FLUX_REDUX if features.reference_adapter else None,
    )


FLUX_DEV = _family(_features("flux", "Flux.1", Guidance.EMBEDDED, FLOW_SAMPLERS), distilled=False)
FLUX_SCHNELL = _family(_features("flux", "Flux.1, distilled", Guidance.NONE, FLOW_SAMPLERS), distilled=True)
KONTEXT = _family(
    _features("flux-kontext", "Flux Kontext", Guidance.EMBEDDED, FLOW_SAMPLERS_WITHOUT_DPM),
    False,
    KontextFamily,
)
# Every Fill call starts from a picture (a blank one for `/imagine`): the picture samplers only
FLUX_FILL = _family(
    _features("flux-fill", "Flux Fill", Guidance.EMBEDDED, FLOW_PICTURE_SAMPLERS), distilled=False
)


def recognise(pipeline_class: str, configs: Configs) -> Family | None:
    """Flux.1, Kontext or Fill; distilled when the transformer has no guidance embedding."""
    if pipeline_class not in ("FluxPipeline", "FluxKontextPipeline", "FluxFillPipeline"):
        return None
    if pipeline_class == "FluxKontextPipeline":
        return KONTEXT
    if pipeline_class == "FluxFillPipeline":
        return FLUX_FILL
    family = FLUX_DEV if configs.get("transformer", {}).get("guidance_embeds") else FLUX_SCHNELL
    if configs.get("scheduler", {}).get("use_dynamic_shifting"):
        return family
    return replace(family, features=replace(family.features, samplers=FLOW_SAMPLERS_WITHOUT_DPM))
