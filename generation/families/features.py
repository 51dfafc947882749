"""What a model family carries, as plain data: the parser, the buttons and `/models` read it from the
loaded model's `ModelProfile` without torch. `generation.families` fills it in per family."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from generation.prompts.samplers import SAMPLER_NAMES

TRUE_CFG_WITH_NEGATIVE = 2.0
"""The true-CFG scale `--no` runs at on a model whose `--cfg` is embedded guidance (Flux.1 dev) or that
has none (Flux.1 schnell): the negative prompt takes a second pass per step, so about twice the time."""


class Guidance(Enum):
    """How `--cfg` reaches the model."""

    CLASSIC = "cfg"  # classifier-free guidance: a second, negative pass each step (`guidance_scale`)
    EMBEDDED = "embedded"  # guidance distilled into the model, one pass (Flux.1 dev's `guidance_scale`)
    TRUE_CFG = "true cfg"  # classic CFG on a model without it built in (`true_cfg_scale`: two passes)
    NONE = "none"  # distilled to few steps without guidance (Flux.1 schnell): `--cfg` does nothing


@dataclass(frozen=True)
class Features:
    """One family's abilities (PRODUCT.md "Every model family"); the defaults are SD 1.x/2.x's."""

    family: str = "sd"  # the family's id: sd, sdxl, sd3, flux, flux-kontext, qwen-image, pixart, generic
    label: str = "Stable Diffusion 1.x/2.x"
    guidance: Guidance = Guidance.CLASSIC
    negative: bool = True  # `--no` acts (a negative prompt, or true CFG's negative pass)
    weights: bool = True  # prompt weights and long prompts (`generation.pipelines.prompt_encoding`)
    samplers: tuple[str, ...] = SAMPLER_NAMES  # the `--sampler` names this model takes
    # those its calls from a picture take (a flow model's image-to-image and inpainting calls noise
    # the picture with `scale_noise`, which only the flow-matching Euler schedulers have); None: all
    picture_samplers: tuple[str, ...] | None = None
    tile: bool = True  # `--tile`: circular padding on the denoiser's and the VAE's convolutions
    stop: bool = True  # `--stop`: the call can end early (`callback_on_step_end`)
    chaos: bool = True  # `--chaos`: mixed initial noise
    from_text: bool = True  # draws from words alone (an edit model draws only from its picture input)
    image: bool = True  # image-to-image (`image`, V1–V4, U1–U4)
    strength: bool = True  # `--strength` acts on it (Kontext's image input takes none: it edits)
    instruct: bool = False  # edits its image input as the prompt's words say (EDIT_MODEL can be it)
    references: bool = False  # subject pictures and blends (`--oref`, `/blend`): an adapter or its own input
    reference_adapter: bool = True  # with `references`: through an adapter, which also takes `--sref` and
    # weights; False: the model's own picture input (Kontext), one picture strip with no weight
    reference_kinds: int = 2  # reference kinds (style, subject) one call carries: SD 3's adapter has one slot
    edits: bool = True  # the edit loop's inpainting buttons (Vary, Zoom, Pan, Region, …)
    lora: str | None = "unet"  # the component a LoRA adapts (None: no LoRA)
    size_step: int = 8  # width and height are multiples of this (the VAE's factor × the patch size)

    def samplers_from(self, picture: bool) -> tuple[str, ...]:
        """The `--sampler` names a call takes, from a picture (`picture`) or from noise."""
        if picture and self.picture_samplers is not None:
            return tuple(name for name in self.samplers if name in self.picture_samplers)
        return self.samplers

    def true_cfg_for(self, pushed_away: bool) -> float:
        """The true-CFG scale a request runs at: a negative prompt (`--no`, or a `::` part with a
        negative weight) on a model whose guidance is embedded or distilled away needs true CFG's
        second pass (`TRUE_CFG_WITH_NEGATIVE`); else 0 (none)."""
        takes = self.guidance in (Guidance.EMBEDDED, Guidance.NONE)
        return TRUE_CFG_WITH_NEGATIVE if takes and self.negative and pushed_away else 0.0

    def refusal(self, what: str, model: str) -> str:
        """A clear refusal of `what` on `model`, one of this family's models."""
        return f"{what} doesn't work on `{model}` ({self.label})."

    def supported(self) -> dict[str, bool]:
        """What `/models` and the README's table show, in their order."""
        return {
            "--no": self.negative,
            "weights": self.weights,
            "--cfg": self.guidance is not Guidance.NONE,
            "--sampler": len(self.samplers) > 1,
            "--tile": self.tile,
            "--stop": self.stop,
            "--chaos": self.chaos,
            "image": self.image,
            "edits": self.edits,
            "LoRA": self.lora is not None,
            "--sref": self.references and self.reference_adapter,
            "--oref": self.references,
        }
