# mypy: disable-error-code="no-untyped-call"
"""The small seeded components the tiny models of every family are built from (`tiny_families`).

CLIP and T5 text encoders, factor-8 and factor-1 VAEs, the flow-matching scheduler, the transformer
settings Flux and Qwen-Image share, and `save`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
    UMT5Config,
    UMT5EncoderModel,
)

from generation.pipelines.tiny import TINY_MAX_LENGTH

__all__ = ["PACKED_MMDIT", "clip", "flow_match", "save", "t5", "vae", "vae16"]


def clip(tokenizer: CLIPTokenizer, seed: int, *, projection: bool, hidden: int = 32) -> Any:
    """A two-layer CLIP text encoder (with a projection for SDXL's second and SD3's encoders)."""
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_size=hidden,
        intermediate_size=37,
        projection_dim=hidden,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=TINY_MAX_LENGTH,
        hidden_act="gelu",
    )
    return CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)


def t5(tokenizer: T5Tokenizer, seed: int, *, d_model: int = 32, umt5: bool = False) -> Any:
    """A two-layer T5 v1.1-style encoder (gated GELU), or UMT5 for AuraFlow."""
    torch.manual_seed(seed)
    settings: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "d_model": d_model,
        "d_kv": 8,
        "d_ff": 37,
        "num_layers": 2,
        "num_heads": 4,
        "relative_attention_num_buckets": 8,
        "relative_attention_max_distance": 32,
        "dropout_rate": 0.0,
        "feed_forward_proj": "gated-gelu",
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "is_encoder_decoder": False,
        "use_cache": False,
    }
    if umt5:
        return UMT5EncoderModel(UMT5Config(**settings))
    return T5EncoderModel(T5Config(**settings))


def vae(seed: int, *, latent_channels: int, levels: int, **settings: Any) -> AutoencoderKL:
    """A tiny `AutoencoderKL`: 4 levels give the usual factor 8, 1 level factor 1 (Flux's 128 px)."""
    torch.manual_seed(seed)
    channels = (8, 16, 16, 16)[:levels] if levels > 1 else (16,)
    return AutoencoderKL(
        block_out_channels=channels,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        latent_channels=latent_channels,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=64,
        **settings,
    )


def vae16(seed: int, *, levels: int, **settings: Any) -> AutoencoderKL:
    """SD3's and Flux's kind of VAE: 16 latent channels, no quant convs (`settings`: scale and shift)."""
    quant_convs = {"use_quant_conv": False, "use_post_quant_conv": False}
    return vae(seed, latent_channels=16, levels=levels, **quant_convs, **settings)


def flow_match(**settings: Any) -> FlowMatchEulerDiscreteScheduler:
    """Flow matching's Euler scheduler over 1000 training steps (`settings`: shift, dynamic shifting)."""
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, **settings)


def save(pipeline: Any, folder: Path) -> None:
    """`save_pretrained` in diffusers' format (safetensors weights, configs, tokenizer files)."""
    pipeline.save_pretrained(folder)


PACKED_MMDIT: dict[str, Any] = {
    "in_channels": 64,  # 16 latent channels packed 2×2
    "num_layers": 1,
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "joint_attention_dim": 32,
    "axes_dims_rope": (4, 6, 6),
}
"""The settings Flux's and Qwen-Image's tiny transformers share: one double-stream block of 2 heads of
16 (rotary axes 4 + 6 + 6) over packed latents and 32 text features."""
