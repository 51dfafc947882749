"""Qwen-Image: a packed-latent MMDiT with a Qwen2.5-VL text encoder. `--cfg` is true CFG
(`true_cfg_scale`, with a blank negative prompt when none is given, as its model card runs it)."""

from __future__ import annotations

from generation.families.base import Configs, Family
from generation.families.features import Features, Guidance
from generation.families.sd3 import FLOW_PICTURE_SAMPLERS, FLOW_SAMPLERS_WITHOUT_DPM

QWEN_IMAGE = Family(
    Features(
        family="qwen-image",
        label="Qwen-Image",
        guidance=Guidance.TRUE_CFG,
        samplers=FLOW_SAMPLERS_WITHOUT_DPM,
        picture_samplers=FLOW_PICTURE_SAMPLERS,
        weights=False,
        tile=False,
        chaos=False,
        lora="transformer",
        size_step=16,
    ),
    denoiser="transformer",
    schedule="flow",
    packed=True,
)


def recognise(pipeline_class: str, configs: Configs) -> Family | None:
    """Qwen-Image (text-to-image) from its pipeline class."""
    return QWEN_IMAGE if pipeline_class == "QwenImagePipeline" else None
