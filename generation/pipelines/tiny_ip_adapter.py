# mypy: disable-error-code="no-untyped-call"
"""A tiny IP-Adapter for tests: seeded random weights in diffusers' `load_ip_adapter` format.

Two kinds in one folder, shaped to fit a given UNet config (the `tiny` model's), with a tiny CLIP vision
encoder beside them: the basic "ip-adapter" (`TINY_IP_ADAPTER_WEIGHT`: its image projection is
diffusers' `ImageProjection`, a linear map from the CLIP image embedding to 4 tokens of the UNet's
cross-attention width, then a LayerNorm) and the "plus" kind (`TINY_IP_ADAPTER_PLUS_WEIGHT`: a
four-layer perceiver resampler from the encoder's penultimate hidden states to 4 tokens, the original
ip-adapter-plus file's names and layout, which diffusers reads as `IPAdapterPlusImageProjection`).
Loaded with

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
    "TINY_IP_ADAPTER_PLUS_WEIGHT",
    "TINY_IP_ADAPTER_TOKENS",
    "TINY_IP_ADAPTER_WEIGHT",
    "TINY_SD3_IP_ADAPTER_FOLDER",
    "TINY_SD3_IP_ADAPTER_WEIGHT",
    "build_tiny_ip_adapter",
    "build_tiny_sd3_ip_adapter",
    "ensure_tiny_ip_adapter",
    "ensure_tiny_sd3_ip_adapter",
    "ip_adapter_key_shapes",
]

TINY_IP_ADAPTER_WEIGHT = "ip-adapter.safetensors"  # the adapter's weights, in the folder's root
TINY_IP_ADAPTER_PLUS_WEIGHT = "ip-adapter-plus.safetensors"  # the plus kind's, beside them
TINY_IP_ADAPTER_ENCODER = "image_encoder"  # the CLIP vision encoder's subfolder
TINY_IP_ADAPTER_FOLDER = "tiny-ip-adapter-v2"  # bump when build_tiny_ip_adapter changes
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
    (`image_proj.*` and `ip_adapter.{key_id}.to_{k,v}_ip.weight`, seeded normal weights), the plus
    kind's `TINY_IP_ADAPTER_PLUS_WEIGHT` (its resampler, the same attention weights) and the CLIP
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
    attention: dict[str, torch.Tensor] = {}
    for key_id, shape in ip_adapter_key_shapes(unet_config).items():
        attention[f"ip_adapter.{key_id}.to_k_ip.weight"] = normal(*shape, std=_KV_STD)
        attention[f"ip_adapter.{key_id}.to_v_ip.weight"] = normal(*shape, std=_KV_STD)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({**tensors, **attention}, str(folder / TINY_IP_ADAPTER_WEIGHT))
    plus = {f"image_proj.{k}": v for k, v in _plus_projection(cross_attention_dim, seed + 2).items()}
    save_file({**plus, **attention}, str(folder / TINY_IP_ADAPTER_PLUS_WEIGHT))
    _image_encoder(seed + 1).save_pretrained(folder / TINY_IP_ADAPTER_ENCODER)  # safetensors


def _plus_projection(cross_attention_dim: int, seed: int) -> dict[str, torch.Tensor]:
    """The plus kind's image projection in the original file's names: diffusers' own
    `IPAdapterPlusImageProjection` (seeded; 64 wide, one head of 64, as its loader reads the heads) with
    its names mapped back (`ln0` → `0.norm1`, `attn.to_k` + `to_v` → `0.to_kv`, `ff.1.net.0.proj` →
    `1.1`, …), which `load_ip_adapter` maps forward again."""
    from diffusers.models.embeddings import IPAdapterPlusImageProjection

    torch.manual_seed(seed)
    module = IPAdapterPlusImageProjection(
        embed_dims=32,  # the tiny CLIP vision encoder's hidden size
        output_dims=cross_attention_dim,
        hidden_dims=64,
        heads=1,
        num_queries=TINY_IP_ADAPTER_TOKENS,
    )
    state = module.state_dict()
    out: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        if not name.startswith("layers."):
            out[name] = value.clone()
            continue
        _, index, rest = name.split(".", 2)
        original = {
            "ln0.weight": "0.norm1.weight",
            "ln0.bias": "0.norm1.bias",
            "ln1.weight": "0.norm2.weight",
            "ln1.bias": "0.norm2.bias",
            "attn.to_q.weight": "0.to_q.weight",
            "attn.to_out.0.weight": "0.to_out.weight",
            "ff.0.weight": "1.0.weight",
            "ff.0.bias": "1.0.bias",
            "ff.1.net.0.proj.weight": "1.1.weight",
            "ff.1.net.2.weight": "1.3.weight",
        }.get(rest)
        if original is not None:
            out[f"layers.{index}.{original}"] = value.clone()
        elif rest == "attn.to_k.weight":
            to_v = state[f"layers.{index}.attn.to_v.weight"]
            out[f"layers.{index}.0.to_kv.weight"] = torch.cat([value, to_v]).clone()
        elif rest != "attn.to_v.weight":
            raise ValueError(f"no original name for {name}")
    return out


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


# -- SD 3's IP-Adapter ------------------------------------------------------------------------------------

TINY_SD3_IP_ADAPTER_FOLDER = "tiny-sd3-ip-adapter-v1"  # bump when build_tiny_sd3_ip_adapter changes
TINY_SD3_IP_ADAPTER_WEIGHT = "ip-adapter.safetensors"  # diffusers' format, as the SD 3.5 Large one's repo
TINY_SD3_IP_ADAPTER_HIDDEN = 64  # the resampler's width (its loader reads one head per 64)


def _siglip_encoder(folder: Path, seed: int) -> None:
    """A two-layer SigLIP vision encoder on 32 px pictures (8 px patches, 16 tokens of 32) with its image
    processor, saved to `folder` (SD 3's `load_ip_adapter` loads both from there)."""
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(seed)
    config = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
    )
    SiglipVisionModel(config).save_pretrained(folder)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)


def build_tiny_sd3_ip_adapter(folder: Path, transformer_config: Mapping[str, Any], seed: int = 0) -> None:
    """Write a tiny SD 3 IP-Adapter fitting the transformer of `transformer_config` to `folder`: in
    `TINY_SD3_IP_ADAPTER_WEIGHT`, diffusers' own `IPAdapterTimeImageProjection` (a four-layer time-aware
    resampler from SigLIP's states to 4 tokens of the transformer's width) under the original names
    (`layers.i.0.norm1`, `0.to_kv`, `1.1`, `2.1`, …, which its loader maps forward) as `image_proj.*`, and
    one `SD3IPAdapterJointAttnProcessor2_0` per block as `ip_adapter.{block}.*`; the SigLIP encoder and
    its processor in `image_encoder/`."""
    from diffusers import SD3Transformer2DModel
    from diffusers.models.attention_processor import SD3IPAdapterJointAttnProcessor2_0
    from diffusers.models.embeddings import IPAdapterTimeImageProjection

    with torch.device("meta"):
        blocks = len(SD3Transformer2DModel.from_config(dict(transformer_config)).attn_processors)
    head_dim = int(transformer_config["attention_head_dim"])
    width = head_dim * int(transformer_config["num_attention_heads"])
    torch.manual_seed(seed)
    projection = IPAdapterTimeImageProjection(
        embed_dim=32,  # the tiny SigLIP's hidden size
        output_dim=width,
        hidden_dim=TINY_SD3_IP_ADAPTER_HIDDEN,
        heads=1,
        num_queries=TINY_IP_ADAPTER_TOKENS,
        timestep_in_dim=32,
    )
    renames = {
        "ln0": "0.norm1",
        "ln1": "0.norm2",
        "attn.to_q": "0.to_q",
        "attn.to_kv": "0.to_kv",
        "attn.to_out.0": "0.to_out",
        "adaln_norm": "1.0",
        "ff.net.0.proj": "1.1",
        "ff.net.2": "1.3",
        "adaln_proj": "2.1",
    }
    tensors: dict[str, torch.Tensor] = {}
    for name, value in projection.state_dict().items():
        if name.startswith("layers."):
            _, index, rest = name.split(".", 2)
            part, _, leaf = rest.rpartition(".")
            name = f"layers.{index}.{renames[part]}.{leaf}"
        tensors[f"image_proj.{name}"] = value.clone()
    for block in range(blocks):
        processor = SD3IPAdapterJointAttnProcessor2_0(
            hidden_size=width,
            ip_hidden_states_dim=width,
            head_dim=head_dim,
            timesteps_emb_dim=TINY_SD3_IP_ADAPTER_HIDDEN,
        )
        for name, value in processor.state_dict().items():
            tensors[f"ip_adapter.{block}.{name}"] = value.clone()
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / TINY_SD3_IP_ADAPTER_WEIGHT))
    _siglip_encoder(folder / TINY_IP_ADAPTER_ENCODER, seed + 1)


def ensure_tiny_sd3_ip_adapter(cache_dir: Path, transformer_config: Mapping[str, Any]) -> Path:
    """The tiny SD 3 IP-Adapter's folder under `cache_dir`, built on first use (seed 0), as
    `ensure_tiny_ip_adapter` (one cache folder per transformer shape: the `tiny-sd3` model's)."""
    return ensure_built(
        cache_dir / TINY_SD3_IP_ADAPTER_FOLDER,
        TINY_SD3_IP_ADAPTER_WEIGHT,
        lambda tmp: build_tiny_sd3_ip_adapter(tmp, transformer_config),
    )
