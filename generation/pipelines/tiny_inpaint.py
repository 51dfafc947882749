# mypy: disable-error-code="no-untyped-call"
"""A tiny inpainting model for tests: the `tiny` model's VAE, text encoder, tokenizer and scheduler
with a 9-channel UNet (4 latent + 1 mask + 4 masked-picture channels) of seeded random weights,
saved once as a `StableDiffusionInpaintPipeline` folder, loaded back through `from_pretrained`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline, UNet2DConditionModel

from generation.pipelines.tiny import ensure_built, ensure_tiny_model

INPAINTING_UNET_CHANNELS = 9  # 4 latent + 1 mask + 4 masked-picture latent channels

TINY_INPAINT_FOLDER = "tiny-inpaint-v1"  # bump when build_tiny_inpaint_model changes


def build_tiny_inpaint_model(folder: Path, base: Path, seed: int = 0) -> None:
    """Write the tiny inpainting pipeline to `folder`, from the `tiny` model saved at `base`."""
    parts = StableDiffusionPipeline.from_pretrained(base).components
    torch.manual_seed(seed + 3)
    config = {**parts["unet"].config, "in_channels": INPAINTING_UNET_CHANNELS}
    unet = UNet2DConditionModel.from_config(config)
    pipeline: Any = StableDiffusionInpaintPipeline(
        vae=parts["vae"],
        text_encoder=parts["text_encoder"],
        tokenizer=parts["tokenizer"],
        unet=unet,
        scheduler=parts["scheduler"],
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(folder)


def ensure_tiny_inpaint_model(cache_dir: Path, seed: int = 0) -> Path:
    """The folder of the tiny inpainting model under `cache_dir` (a local diffusers folder to load as
    a `MODEL_ID`), built on first use."""
    base = ensure_tiny_model(cache_dir, seed)
    return ensure_built(
        cache_dir / TINY_INPAINT_FOLDER,
        "model_index.json",
        lambda tmp: build_tiny_inpaint_model(tmp, base, seed),
    )
