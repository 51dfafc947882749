"""Transformer (MMDiT) architectures for `python -m bench gpu`: full-size Flux.1-schnell and SD 3.5
medium, and tiny stand-ins of the same kinds (`tiny=True`) that build and run on a CPU in well under a
second at 64 px.

Plain data (constructor keyword arguments), no torch, as `bench.archs`: `bench.gpu.build_dit` builds
them with random weights. Full-size values are those of the public configs: the `transformer/`,
`vae/`, `text_encoder*/` and `scheduler/` configs of `black-forest-labs/FLUX.1-schnell` and of
`stabilityai/stable-diffusion-3.5-medium` (both use `google/t5-v1_1-xxl`'s encoder as their T5).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from bench.archs import SD_VAE, TINY_VAE, clip_config, tiny_clip_config

DIT_ARCH_NAMES = ("flux-schnell", "sd35-medium")


@dataclass(frozen=True)
class DiTArch:
    """One transformer architecture: component configs, the pipeline class and the benchmark's settings."""

    name: str
    pipeline_class: str  # "FluxPipeline" or "StableDiffusion3Pipeline"
    transformer: dict[str, Any]  # FluxTransformer2DModel or SD3Transformer2DModel kwargs
    vae: dict[str, Any]  # AutoencoderKL kwargs (16 latent channels, no quant convs)
    clips: tuple[
        dict[str, Any], ...
    ]  # CLIPTextConfig kwargs: Flux's CLIPTextModel, SD3's two with projection
    t5: dict[str, Any]  # T5Config kwargs (T5EncoderModel)
    scheduler: dict[str, Any]  # FlowMatchEulerDiscreteScheduler kwargs
    size: int  # image side in pixels
    steps: int
    guidance: float
    max_sequence_length: int  # T5 tokens per prompt: the pipeline's default, as the project calls it
    source: str  # the public repository whose configs these copy
    shortcuts: tuple[str, ...] = ()  # where the benchmark departs from the model's own use

    @property
    def cfg_passes(self) -> int:
        """Transformer rows per image and step: 2 with classifier-free guidance (guidance > 1), else 1."""
        return 2 if self.guidance > 1.0 else 1


_VAE16: dict[str, Any] = {  # SD3's and Flux's VAE: SD's shape, 16 latent channels, no quant convs
    **SD_VAE,
    "latent_channels": 16,
    "sample_size": 1024,
    "force_upcast": True,
    "mid_block_add_attention": True,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
}

# google/t5-v1_1-xxl's encoder, as in FLUX.1-schnell's text_encoder_2 and SD 3.5 medium's text_encoder_3
_T5_XXL: dict[str, Any] = {
    "vocab_size": 32128,
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "num_heads": 64,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "dropout_rate": 0.1,  # inactive: the built models are put in eval mode
    "layer_norm_epsilon": 1e-06,
    "feed_forward_proj": "gated-gelu",
    "tie_word_embeddings": False,
    "is_encoder_decoder": False,
    "use_cache": False,
}

_CLIP_L = clip_config(768, 12, 12, 3072, "quick_gelu", 768)  # openai/clip-vit-large-patch14's text tower
_CLIP_BIG_G = clip_config(1280, 32, 20, 5120, "gelu", 1280)  # OpenCLIP ViT-bigG/14's (as SDXL's second)

FLUX_SCHNELL = DiTArch(  # black-forest-labs/FLUX.1-schnell
    name="flux-schnell",
    pipeline_class="FluxPipeline",
    transformer={
        "patch_size": 1,
        "in_channels": 64,  # 16 latent channels packed 2×2
        "num_layers": 19,  # double-stream blocks
        "num_single_layers": 38,
        "attention_head_dim": 128,
        "num_attention_heads": 24,
        "joint_attention_dim": 4096,
        "pooled_projection_dim": 768,
        "guidance_embeds": False,
        "axes_dims_rope": (16, 56, 56),
    },
    vae={**_VAE16, "scaling_factor": 0.3611, "shift_factor": 0.1159},
    clips=(_CLIP_L,),  # CLIPTextModel (its pooled output)
    t5=_T5_XXL,
    scheduler={"num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": False},
    size=1024,
    steps=4,
    guidance=0.0,
    max_sequence_length=512,  # FluxPipeline's default (the model card passes 256)
    source="black-forest-labs/FLUX.1-schnell",
)

SD35_MEDIUM = DiTArch(  # stabilityai/stable-diffusion-3.5-medium
    name="sd35-medium",
    pipeline_class="StableDiffusion3Pipeline",
    transformer={  # MMDiT-X: dual attention in the first 13 layers, RMS-normed queries and keys
        "sample_size": 128,
        "patch_size": 2,
        "in_channels": 16,
        "num_layers": 24,
        "attention_head_dim": 64,
        "num_attention_heads": 24,
        "joint_attention_dim": 4096,
        "caption_projection_dim": 1536,
        "pooled_projection_dim": 2048,
        "out_channels": 16,
        "pos_embed_max_size": 384,
        "dual_attention_layers": tuple(range(13)),
        "qk_norm": "rms_norm",
    },
    vae={**_VAE16, "scaling_factor": 1.5305, "shift_factor": 0.0609},
    clips=(_CLIP_L, _CLIP_BIG_G),  # both CLIPTextModelWithProjection
    t5=_T5_XXL,
    scheduler={"num_train_timesteps": 1000, "shift": 3.0},
    size=1024,
    steps=20,
    guidance=4.5,
    max_sequence_length=256,  # StableDiffusion3Pipeline's default
    source="stabilityai/stable-diffusion-3.5-medium",
    shortcuts=(
        "20 steps, not the pipeline's default 28 (the model card uses 40), to fit the run's time budget: "
        "each step costs the same, so the steps' share of a call scales by 28/20",
    ),
)

# Tiny stand-ins: the same component kinds at 64 px (8×8×16 latents, VAE factor 8).
_TINY_VAE16: dict[str, Any] = {
    **TINY_VAE,
    "latent_channels": 16,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
}


def _tiny_t5(d_model: int) -> dict[str, Any]:
    return {
        **_T5_XXL,
        "vocab_size": 1000,  # the local T5 tokenizer's ids are below 1000
        "d_model": d_model,
        "d_kv": 8,
        "d_ff": 37,
        "num_layers": 2,
        "num_heads": 4,
        "relative_attention_num_buckets": 8,
        "relative_attention_max_distance": 32,
    }


TINY_DIT = {
    "flux-schnell": replace(
        FLUX_SCHNELL,
        name="flux-schnell-tiny",
        size=64,
        transformer={
            **FLUX_SCHNELL.transformer,
            "num_layers": 1,
            "num_single_layers": 1,
            "attention_head_dim": 16,
            "num_attention_heads": 2,
            "joint_attention_dim": 32,  # the tiny T5's width
            "pooled_projection_dim": 32,  # the tiny CLIP's
            "axes_dims_rope": (4, 6, 6),
        },
        vae={**_TINY_VAE16, "scaling_factor": 0.3611, "shift_factor": 0.1159},
        clips=(tiny_clip_config(),),
        t5=_tiny_t5(32),
    ),
    "sd35-medium": replace(
        SD35_MEDIUM,
        name="sd35-medium-tiny",
        size=64,
        transformer={
            **SD35_MEDIUM.transformer,
            "sample_size": 8,
            "num_layers": 2,
            "attention_head_dim": 8,
            "num_attention_heads": 4,
            "joint_attention_dim": 64,  # the tiny T5's width (the two CLIPs' 32 + 32 padded to it)
            "caption_projection_dim": 32,
            "pooled_projection_dim": 64,  # the two CLIPs' pooled 32 + 32
            "pos_embed_max_size": 32,
            "dual_attention_layers": (0,),
        },
        vae={**_TINY_VAE16, "scaling_factor": 1.5305, "shift_factor": 0.0609},
        clips=(tiny_clip_config(), tiny_clip_config()),
        t5=_tiny_t5(64),
    ),
}

FULL_DIT = {"flux-schnell": FLUX_SCHNELL, "sd35-medium": SD35_MEDIUM}


def get_dit_arch(name: str, *, tiny: bool = False) -> DiTArch:
    """The transformer architecture called `name` (one of DIT_ARCH_NAMES), or its tiny stand-in."""
    if name not in FULL_DIT:
        raise ValueError(f"unknown architecture {name!r}; expected one of {', '.join(DIT_ARCH_NAMES)}")
    return TINY_DIT[name] if tiny else FULL_DIT[name]
