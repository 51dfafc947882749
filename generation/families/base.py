"""`Family`: how one model family is recognised and called. The only place that knows a family's
call; the engine, the loader, the parser's checks, the buttons and `/models` ask it.

A family is recognised from the pipeline's class and its components' configs (never the model's name):
`recognise(pipeline_class, configs)` with `configs` mapping a component's name (`unet`,
`transformer`, `scheduler`, …) to its config. Torch-free: a family reads and writes a pipeline call's
arguments and asks the pipeline object (typed `Any`) for what it knows.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from generation.families.adapters import AdapterSpec, ReferenceLayers
from generation.families.features import Features, Guidance
from generation.prompts.request import GenerationRequest

Configs = Mapping[str, Mapping[str, Any]]
"""A pipeline's components' configs by component name (`pipe.components[name].config`)."""

CALLBACK_TENSORS = ("latents",)


def configs_of(pipe: Any) -> dict[str, Mapping[str, Any]]:
    """The configs of a loaded pipeline's components (those that have one)."""
    out: dict[str, Mapping[str, Any]] = {}
    for name, component in getattr(pipe, "components", {}).items():
        config = getattr(component, "config", None)
        if isinstance(config, Mapping):
            out[name] = config
    return out


_PARAMETERS: dict[type, Mapping[str, inspect.Parameter]] = {}


def call_parameters(pipe: Any) -> Mapping[str, inspect.Parameter]:
    """The parameters of the pipeline's `__call__`: what its call takes (read once per class)."""
    kind = type(pipe)
    if kind not in _PARAMETERS:
        _PARAMETERS[kind] = inspect.signature(kind.__call__).parameters
    return _PARAMETERS[kind]


def call_defaults(pipe: Any) -> dict[str, Any]:
    """The defaults of the pipeline's `__call__` parameters (steps, guidance, sequence length, …)."""
    return {
        name: p.default
        for name, p in call_parameters(pipe).items()
        if p.default is not inspect.Parameter.empty
    }


@dataclass(frozen=True)
class Family:
    """One family's declarations (`features`) and how its pipelines are called."""

    features: Features
    denoiser: str = "unet"  # the pipeline attribute that denoises: `unet` or `transformer`
    long_tokenizer: str = "tokenizer"  # the tokenizer of the encoder that reads the most tokens
    default_steps: int | None = None  # None: the pipeline's own default
    default_guidance: float | None = None  # None: the pipeline's own default (`guidance_scale`)
    distilled: bool = False  # few-step by its config (Flux.1 schnell): steps capped at `max_steps`
    turbo_steps: int = 1  # default steps of a distilled U-Net (SD-Turbo, Lightning: `loading.is_turbo`)
    max_steps: int = 100
    schedule: str = "epsilon"  # which sampler table (`generation.pipelines.samplers`): epsilon or flow
    preview: str = "generic"  # the latent → RGB map (`generation.pipelines.preview`)
    packed: bool = False  # latents come packed in 2×2 patches (Flux, Qwen-Image): unpacked for previews
    activation_scale: float = 1.0  # activation memory per pixel against SD 1.x's (batch sizing)
    fp16_vae_overflows: bool = False  # its VAE overflows in fp16 (SDXL's): decode in bf16 or fp32
    prompt_encoder: str | None = None  # weights: "windows" (ours, one CLIP) or compel's "sdxl"/"flux"
    prompt_windows: int = 1  # 75-token windows a weighted prompt may fill (CLIP-only families: more)
    extra: Mapping[str, Any] = field(default_factory=dict)  # fixed call arguments
    reference_adapter: AdapterSpec | None = None  # the default reference adapter (`--sref`, `--oref`)
    reference_layers: ReferenceLayers | None = None  # how a style reference scales it
    input_pictures: int = 1  # pictures its own input takes in one call (more are put side by side)
    one_prompt_per_call: bool = False  # its call takes one prompt (Qwen-Image-Edit-Plus): one request a call

    # -- pictures as its own input -------------------------------------------------------------------

    def reference_input(self, pictures: list[list[Any]]) -> dict[str, Any]:
        """The call arguments that hand each image's input pictures (at most `input_pictures`, strips
        of several where more were given) to a model that takes references as its own picture input
        (`Features.reference_adapter` off); families with an adapter never get here."""
        raise NotImplementedError(f"{self.features.label} takes no picture as its own input")

    # -- what the model is ---------------------------------------------------------------------------

    def native_size(self, pipe: Any) -> int:
        """The side in pixels the model was trained at: the denoiser's `sample_size` in latent pixels,
        else the pipeline's `default_sample_size`, times the VAE's factor."""
        scale = int(getattr(pipe, "vae_scale_factor", 8) or 8)
        default = getattr(pipe, "default_sample_size", None)
        if isinstance(default, int) and default > 0:
            return default * scale
        denoiser = getattr(pipe, self.denoiser, None)
        sample = getattr(getattr(denoiser, "config", None), "sample_size", None)
        if isinstance(sample, int) and sample > 0:
            return sample * scale
        return 64 * scale

    def defaults(self, pipe: Any) -> tuple[int, float]:
        """Default steps and `--cfg` (0 where guidance does nothing)."""
        own = call_defaults(pipe)
        steps = self.default_steps or int(own.get("num_inference_steps") or 30)
        if self.features.guidance is Guidance.NONE:
            return steps, 0.0
        key = "true_cfg_scale" if self.features.guidance is Guidance.TRUE_CFG else "guidance_scale"
        guidance = self.default_guidance if self.default_guidance is not None else own.get(key)
        return steps, float(guidance if guidance is not None else 7.5)

    def token_limit(self, pipe: Any) -> int:
        """Tokens (begin/end included) a prompt may have: the longest encoder's sequence length."""
        own = call_defaults(pipe).get("max_sequence_length")
        if isinstance(own, int) and own > 0:
            return own
        tokenizer = getattr(pipe, self.long_tokenizer, None)
        limit = int(getattr(tokenizer, "model_max_length", 77) or 77)
        return 77 if limit > 4096 else limit  # unset in some configs (a huge sentinel): CLIP's

    def tokenizer(self, pipe: Any) -> Any:
        """The tokenizer prompts are counted with (the longest encoder's)."""
        return getattr(pipe, self.long_tokenizer, None) or pipe.tokenizer

    def denoiser_of(self, pipe: Any) -> Any:
        """The UNet or transformer."""
        return getattr(pipe, self.denoiser)

    def fills(self, pipe: Any) -> bool:
        """Whether the loaded model is itself an inpainting model: its denoiser reads more channels than
        the latents have (SD's 9-channel U-Nets, Flux Fill: the mask and the masked picture come in as
        extra channels). Every batch on such a model runs through its masked call."""
        denoiser = getattr(pipe, self.denoiser, None)
        vae = getattr(pipe, "vae", None)
        inputs = getattr(getattr(denoiser, "config", None), "in_channels", None)
        latent = getattr(getattr(vae, "config", None), "latent_channels", None)
        if not isinstance(inputs, int) or not isinstance(latent, int):
            return False
        return inputs > latent * (4 if self.packed else 1)

    # -- one call -------------------------------------------------------------------------------------

    def call_arguments(self, pipe: Any, first: GenerationRequest, kwargs: dict[str, Any]) -> None:
        """Turn the engine's common arguments (prompt, negative_prompt, guidance_scale, …) into what
        this family's pipeline takes, for a batch whose first request is `first`."""
        kwargs.update(self.extra)
        guidance = self.features.guidance
        if guidance is Guidance.TRUE_CFG:
            kwargs["true_cfg_scale"] = kwargs.pop("guidance_scale")
            # true CFG runs only with a negative prompt: a blank one when the member gave none
            kwargs["negative_prompt"] = [n or " " for n in kwargs["negative_prompt"]]
        elif guidance is Guidance.NONE:
            kwargs.pop("guidance_scale", None)
        if guidance in (Guidance.EMBEDDED, Guidance.NONE):
            if first.true_cfg > 0:
                kwargs["true_cfg_scale"] = first.true_cfg
            else:
                kwargs.pop("negative_prompt", None)
        if not self.features.negative:
            kwargs.pop("negative_prompt", None)
        self._callback(pipe, kwargs)

    def sized(self, pipe: Any, first: GenerationRequest, kwargs: dict[str, Any]) -> None:
        """The request's size for an image-to-image call, where the pipeline takes one (SD 3, Flux and
        Qwen-Image draw their default square otherwise; SD's size follows its source picture)."""
        parameters = call_parameters(pipe)
        if "width" in parameters and "height" in parameters:
            kwargs.update(width=first.width, height=first.height)

    def _callback(self, pipe: Any, kwargs: dict[str, Any]) -> None:
        """Pipelines without `callback_on_step_end` (PixArt) get the legacy per-step `callback`."""
        parameters = call_parameters(pipe)
        if "callback_on_step_end" in parameters:
            kwargs["callback_on_step_end_tensor_inputs"] = list(CALLBACK_TENSORS)
            return
        step_end = kwargs.pop("callback_on_step_end", None)
        if step_end is None or "callback" not in parameters:
            return

        def legacy(step: int, timestep: Any, latents: Any) -> None:
            step_end(pipe, step, timestep, {"latents": latents})

        kwargs["callback"], kwargs["callback_steps"] = legacy, 1

    def unpack(self, pipe: Any, latents: Any, width: int, height: int) -> Any:
        """One batch's latents as (images, channels, h, w), whatever the family's layout."""
        if self.packed:
            latents = pipe._unpack_latents(latents, height, width, pipe.vae_scale_factor)
        while latents.ndim > 4:  # a video VAE's frame axis (Qwen-Image)
            latents = latents[:, :, 0]
        return latents

    def noise_shape(self, pipe: Any, width: int, height: int) -> tuple[int, ...]:
        """The shape of one image's initial noise before `pack` (what the pipeline draws)."""
        scale = int(pipe.vae_scale_factor)
        channels = int(self.denoiser_of(pipe).config.in_channels)
        return (1, channels, height // scale, width // scale)

    def pack(self, pipe: Any, noise: Any) -> Any:
        """Noise drawn in `noise_shape` as the pipeline's `latents` argument takes it."""
        return noise
