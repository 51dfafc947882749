# mypy: disable-error-code="no-untyped-call"
"""A tiny IP-Adapter for tests: seeded random weights in diffusers' `load_ip_adapter` format.

The basic "ip-adapter" kind (its image projection is diffusers' `ImageProjection`: a linear map from the
CLIP image embedding to 4 tokens of the UNet's cross-attention width, then a LayerNorm), shaped to fit
a given UNet config (the `tiny` model's), with a tiny CLIP vision encoder beside it. Loaded with

    pipe.load_ip_adapter(folder, subfolder="", weight_name=TINY_IP_ADAPTER_WEIGHT,
                         image_encoder_folder=TINY_IP_ADAPTER_ENCODER)

diffusers then makes the pipeline's `feature_extractor` itself (a `CLIPImageProcessor` at the encoder's
`image_size`) when the pipeline has none.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from generation.pipelines.tiny import ensure_built

__all__ = [
    "TINY_IP_ADAPTER_CLIP_DIM",
    "TINY_IP_ADAPTER_ENCODER",
    "TINY_IP_ADAPTER_FOLDER",
    "TINY_IP_ADAPTER_TOKENS",
    "TINY_IP_ADAPTER_WEIGHT",
    "build_tiny_ip_adapter",
    "ensure_tiny_ip_adapter",
    "ip_adapter_key_shapes",
]

TINY_IP_ADAPTER_WEIGHT = "ip-adapter.safetensors"  # the adapter's weights, in the folder's root
TINY_IP_ADAPTER_ENCODER = "image_encoder"  # the CLIP vision encoder's subfolder
TINY_IP_ADAPTER_FOLDER = "tiny-ip-adapter-v1"  # bump when build_tiny_ip_adapter changes
TINY_IP_ADAPTER_CLIP_DIM = 32  # the image encoder's projection_dim: ImageProjection's input width
TINY_IP_ADAPTER_TOKENS = 4  # image tokens of the basic IP-Adapter (diffusers fixes 4 for `proj.weight`)

_PROJ_STD = 0.2  # image_proj.proj: about 1/sqrt(32), so the picture, not the bias, sets the tokens
_KV_STD = 0.15  # to_k_ip / to_v_ip: about the UNet's own to_k/to_v, so scale 1 visibly changes pictures


def ip_adapter_key_shapes(unet_config: Mapping[str, Any]) -> dict[int, tuple[int, int]]:
    """The `ip_adapter.{key_id}` numbers the UNet of `unet_config` reads, with each one's `to_k_ip` /
    `to_v_ip` weight shape (its attention's `to_k` shape: out × cross-attention width).

    Numbered as diffusers' `UNet2DConditionLoadersMixin._convert_ip_adapter_attn_to_diffusers` reads them:
    from 1, up by 2 for each cross-attention processor (not `attn1`, not motion modules) in
    `unet.attn_processors` order. The UNet is made on the meta device: no weights, no memory.
    """
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(dict(unet_config))
    shapes: dict[int, tuple[int, int]] = {}
    key_id = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor") or "motion_modules" in name:
            continue
        attention = unet.get_submodule(name.removesuffix(".processor"))
        out_features, in_features = attention.to_k.weight.shape
        shapes[key_id] = (int(out_features), int(in_features))
        key_id += 2
    return shapes


def _image_encoder(seed: int) -> CLIPVisionModelWithProjection:
    """A two-layer CLIP vision encoder on 32 px pictures (8 px patches), projecting to 32 features."""
    torch.manual_seed(seed)
    config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_channels=3,
        image_size=32,
        patch_size=8,
        projection_dim=TINY_IP_ADAPTER_CLIP_DIM,
        layer_norm_eps=1e-05,
        hidden_act="gelu",
    )
    return CLIPVisionModelWithProjection(config)


def build_tiny_ip_adapter(folder: Path, unet_config: Mapping[str, Any], seed: int = 0) -> None:
    """Write a tiny IP-Adapter fitting the UNet of `unet_config` to `folder`: `TINY_IP_ADAPTER_WEIGHT`
    (`image_proj.*` and `ip_adapter.{key_id}.to_{k,v}_ip.weight`, seeded normal weights) and the CLIP
    vision encoder in `TINY_IP_ADAPTER_ENCODER` (`save_pretrained`, safetensors)."""
    cross_attention_dim = unet_config["cross_attention_dim"]
    if not isinstance(cross_attention_dim, int):
        raise ValueError(f"the UNet needs one cross-attention width, not {cross_attention_dim!r}")
    generator = torch.Generator().manual_seed(seed)

    def normal(*shape: int, std: float, mean: float = 0.0) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * std + mean

    tensors = {
        "image_proj.proj.weight": normal(
            TINY_IP_ADAPTER_TOKENS * cross_attention_dim, TINY_IP_ADAPTER_CLIP_DIM, std=_PROJ_STD
        ),
        "image_proj.proj.bias": normal(TINY_IP_ADAPTER_TOKENS * cross_attention_dim, std=0.02),
        "image_proj.norm.weight": normal(cross_attention_dim, std=0.05, mean=1.0),
        "image_proj.norm.bias": normal(cross_attention_dim, std=0.02),
    }
    for key_id, shape in ip_adapter_key_shapes(unet_config).items():
        tensors[f"ip_adapter.{key_id}.to_k_ip.weight"] = normal(*shape, std=_KV_STD)
        tensors[f"ip_adapter.{key_id}.to_v_ip.weight"] = normal(*shape, std=_KV_STD)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / TINY_IP_ADAPTER_WEIGHT))
    _image_encoder(seed + 1).save_pretrained(folder / TINY_IP_ADAPTER_ENCODER)  # safetensors


def ensure_tiny_ip_adapter(cache_dir: Path, unet_config: Mapping[str, Any]) -> Path:
    """The tiny IP-Adapter's folder under `cache_dir` (`TINY_IP_ADAPTER_FOLDER`), built on first use for
    `unet_config` (seed 0); concurrent processes are safe (`tiny.ensure_built`).

    The folder is not keyed by the UNet: a later call with another UNet config gets the first one's
    adapter, so use one cache folder per UNet shape (the `tiny` model's).
    """
    return ensure_built(
        cache_dir / TINY_IP_ADAPTER_FOLDER,
        TINY_IP_ADAPTER_WEIGHT,
        lambda tmp: build_tiny_ip_adapter(tmp, unet_config),
    )
