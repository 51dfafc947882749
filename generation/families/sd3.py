"""Stable Diffusion 3 and 3.5: an MMDiT transformer on flow matching, classic CFG, three encoders
(T5 reads the longest prompts). No `--tile` (a transformer has no convolutions to wrap).

References (`--sref`, `--oref`, `/blend`) through SD 3's IP-Adapter (diffusers' `SD3IPAdapterMixin`: a
SigLIP image encoder, a time-aware resampler, an image attention in every block): one slot, so one
reference kind a call, on every block. The well-known one, InstantX's, fits SD 3.5 Large only: it is the
default there (recognised by its 38-block transformer); another SD 3 model takes one named in MODELS.
"""

from __future__ import annotations

from dataclasses import replace

from generation.families.adapters import AdapterSpec
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
        references=True,
        reference_kinds=1,
        lora="transformer",
        size_step=16,
    ),
    denoiser="transformer",
    long_tokenizer="tokenizer_3",
    schedule="flow",
)

SD35_LARGE_IP_ADAPTER = AdapterSpec(
    "guiyrt/InstantX-SD3.5-Large-IP-Adapter-diffusers",
    weight_name="ip-adapter.safetensors",
    encoder="google/siglip-so400m-patch14-384",
)
"""InstantX's IP-Adapter for SD 3.5 Large in diffusers' format, with the SigLIP encoder it was trained on."""
SD35_LARGE_BLOCKS = 38  # SD 3.5 Large's transformer: the blocks InstantX's adapter has layers for


def recognise(pipeline_class: str, configs: Configs) -> Family | None:
    """SD 3/3.5 from its pipeline class; SD 3.5 Large (by its transformer) with its default adapter."""
    if not pipeline_class.startswith("StableDiffusion3"):
        return None
    if configs.get("transformer", {}).get("num_layers") == SD35_LARGE_BLOCKS:
        return replace(SD3, reference_adapter=SD35_LARGE_IP_ADAPTER)
    return SD3
