# mypy: disable-error-code="no-untyped-call"
"""Building the benchmark's models from `bench.archs` configs: seeded random weights (speed does not
depend on the weights), a local byte-level tokenizer, on the device in its dtype."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from bench.archs import Arch, safety_vision_config
from bench.gpu.timing import free


def _cast(module: Any, dtype: torch.dtype) -> Any:
    return module if dtype == torch.float32 else module.to(dtype)


def build_pipeline(arch: Arch, device: str, dtype: torch.dtype, seed: int = 0) -> Any:
    """The architecture's diffusers pipeline with seeded random weights, on `device` in `dtype`."""
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from generation.pipelines.tiny import byte_tokenizer, sd_pipeline

    tokenizer = byte_tokenizer()
    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    with torch.device(device):  # initialise on the device: full-size SDXL takes minutes on a CPU
        torch.manual_seed(seed)
        unet = _cast(UNet2DConditionModel(**arch.unet), dtype)
        torch.manual_seed(seed + 1)
        vae = _cast(AutoencoderKL(**arch.vae), dtype)
        torch.manual_seed(seed + 2)
        text_encoder = _cast(CLIPTextModel(CLIPTextConfig(**arch.text_encoder, **ids)), dtype)
        text_encoder_2 = None
        if arch.text_encoder_2 is not None:
            torch.manual_seed(seed + 3)
            config_2 = CLIPTextConfig(**arch.text_encoder_2, **ids)
            text_encoder_2 = _cast(CLIPTextModelWithProjection(config_2), dtype)
    scheduler = EulerDiscreteScheduler(**arch.scheduler)
    if arch.is_xl:
        pipe = StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
            tokenizer=tokenizer,
            tokenizer_2=byte_tokenizer(),
            unet=unet,
            scheduler=scheduler,
            add_watermarker=False,
            **arch.pipeline_config,
        )
    else:
        pipe = sd_pipeline(vae, text_encoder, tokenizer, unet, scheduler)
    pipe.set_progress_bar_config(disable=True)  # type: ignore[attr-defined]
    return pipe


def save_arch(arch: Arch, folder: Path, device: str, dtype: torch.dtype) -> float:
    """Build and `save_pretrained` into `folder` (skipped if a model is already there); seconds taken."""
    if (folder / "model_index.json").is_file():
        return 0.0
    start = time.perf_counter()
    pipe = build_pipeline(arch, device, dtype)
    pipe.save_pretrained(folder)
    del pipe
    free(device)
    return time.perf_counter() - start


def build_safety_checker(device: str, dtype: torch.dtype, *, tiny: bool) -> tuple[Any, Any]:
    """diffusers' `StableDiffusionSafetyChecker` (CLIP ViT-L/14 vision tower, or a tiny one) with random
    weights, and a local CLIP image processor (224 px crops, as the real checker's)."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    vision = safety_vision_config(tiny=tiny)
    config = CLIPConfig(vision_config=vision, projection_dim=vision["projection_dim"])
    with torch.device(device):
        torch.manual_seed(7)
        checker = _cast(StableDiffusionSafetyChecker(config).eval(), dtype)
    size = vision["image_size"]
    processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return checker, processor
