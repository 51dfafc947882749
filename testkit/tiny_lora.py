"""Tiny LoRA adapters for the built-in `tiny` model, made locally with peft (tests and benchmarks)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def build_tiny_lora(tiny_model: Any, folder: Path, name: str, seed: int) -> Path:
    """A LoRA for the tiny model's UNet (seeded, non-zero weights), saved as diffusers saves them,
    as `folder/NAME.safetensors`. `tiny_model` is a `generation.pipelines.loading.LoadedModel`."""
    import torch
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = copy.deepcopy(tiny_model.text2img.unet)
    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=4, target_modules=TARGETS, init_lora_weights=False)
    unet.add_adapter(config)
    folder.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(
        folder, unet_lora_layers=get_peft_model_state_dict(unet), weight_name=f"{name}.safetensors"
    )
    return folder / f"{name}.safetensors"
