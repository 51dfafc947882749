"""Stable Diffusion 1.x/2.x and SDXL: U-Nets with classic CFG, every sampler, `--tile`, `--chaos`,
image-to-image and the edit loop. SDXL is told apart by its UNet's `text_time` added embedding."""

from __future__ import annotations

from generation.families.adapters import AdapterSpec, ReferenceLayers
from generation.families.base import Configs, Family
from generation.families.features import Features

SD = Family(
    Features(references=True),
    denoiser="unet",
    default_steps=30,
    preview="sd",
    prompt_encoder="windows",
    prompt_windows=4,
    # h94's IP-Adapter for SD 1.5 (CLIP ViT-H image encoder); a style reference acts on the up blocks'
    # attention only (SD 1.x's decoder carries style; its down blocks and middle carry layout)
    reference_adapter=AdapterSpec("h94/IP-Adapter", "models", "ip-adapter_sd15.safetensors"),
    reference_layers=ReferenceLayers(style={"down": 0.0, "mid": 0.0, "up": 1.0}),
)
SDXL = Family(
    Features(family="sdxl", label="Stable Diffusion XL", references=True),
    denoiser="unet",
    default_steps=30,
    default_guidance=6.0,
    turbo_steps=4,
    prompt_encoder="sdxl",
    prompt_windows=4,
    preview="sdxl",
    activation_scale=1.5,
    fp16_vae_overflows=True,
    # h94's IP-Adapter for SDXL (CLIP ViT-bigG); a style reference: InstantStyle's one style block
    reference_adapter=AdapterSpec("h94/IP-Adapter", "sdxl_models", "ip-adapter_sdxl.safetensors"),
    reference_layers=ReferenceLayers(style={"up": {"block_0": [0.0, 1.0, 0.0]}}),
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
