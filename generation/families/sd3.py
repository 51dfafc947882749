"""Stable Diffusion 3 and 3.5: an MMDiT transformer on flow matching, classic CFG, three encoders
(T5 reads the longest prompts). No `--tile` (a transformer has no convolutions to wrap)."""

from __future__ import annotations

from generation.families.base import Configs, Family
from generation.families.features import Features

FLOW_SAMPLERS = ("euler", "euler_a", "dpmpp_2m", "unipc")
# DPM-Solver takes neither custom sigmas nor `mu` without dynamic shifting: a pipeline that always
# passes its own sigmas (Kontext, Qwen-Image) or a fixed-shift schedule (Flux.1 schnell) goes without.
FLOW_SAMPLERS_WITHOUT_DPM = ("euler", "euler_a", "unipc")
# From a picture a flow model's call noises it with `scale_noise`: only the flow Euler schedulers have it.
FLOW_PICTURE_SAMPLERS = ("euler", "euler_a")

SD3 = Family(
    Features(
        family="sd3",
        label="Stable Diffusion 3/3.5",
        samplers=FLOW_SAMPLERS,
        picture_samplers=FLOW_PICTURE_SAMPLERS,
        weights=False,
        tile=False,
        lora="transformer",
        size_step=16,
    ),
    denoiser="transformer",
    long_tokenizer="tokenizer_3",
    schedule="flow",
)


def recognise(pipeline_class: str, configs: Configs) -> Family | None:
    """SD 3/3.5 from its pipeline class."""
    return SD3 if pipeline_class.startswith("StableDiffusion3") else None
