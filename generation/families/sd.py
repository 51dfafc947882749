"""Stable Diffusion 1.x/2.x and SDXL: U-Nets with classic CFG, every sampler, `--tile`, `--chaos`,
image-to-image and the edit loop. SDXL is told apart by its UNet's `text_time` added embedding."""

from __future__ import annotations

from generation.families.base import Configs, Family
from generation.families.features import Features

SD = Family(
    Features(), denoiser="unet", default_steps=30, preview="sd", prompt_encoder="windows", prompt_windows=4
)
SDXL = Family(
    Features(family="sdxl", label="Stable Diffusion XL"),
    denoiser="unet",
    default_steps=30,
    default_guidance=6.0,
    turbo_steps=4,
    prompt_encoder="sdxl",
    prompt_windows=4,
    preview="sdxl",
    activation_scale=1.5,
    fp16_vae_overflows=True,
)


def recognise(pipeline_class: str, configs: Configs) -> Family | None:
    """SD 1.x/2.x or SDXL, from a U-Net pipeline's UNet config."""
    unet = configs.get("unet")
    if unet is None or (
        not pipeline_class.startswith(("StableDiffusion", "Kandinsky")) and "XL" not in pipeline_class
    ):
        return None
    if unet.get("addition_embed_type") == "text_time" or "text_encoder_2" in configs:
        return SDXL
    return SD
