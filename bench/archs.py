"""Architectures for `python -m bench gpu`: full-size SD 1.5, SD-Turbo (SD 2.1-base) and SDXL base, and
tiny stand-ins of the same shape (`--tiny-arch`) that run on a CPU in seconds. The transformer (MMDiT)
architectures, Flux.1-schnell and SD 3.5 medium, are in `bench.archs_dit`.

Plain data (constructor keyword arguments), no torch: `bench.gpu` builds the models with random
weights. Full-size values are those of the public configs (`runwayml/stable-diffusion-v1-5`,
`stabilityai/sd-turbo` = SD 2.1-base, `stabilityai/stable-diffusion-xl-base-1.0`); speed does not
depend on the weights, only on these shapes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

ARCH_NAMES = ("sd15", "sd-turbo", "sdxl")

_CLIP_VOCAB = 49408
_MAX_TOKENS = 77


@dataclass(frozen=True)
class Arch:
    """One architecture: component configs, the pipeline class and the benchmark's settings."""

    name: str
    pipeline_class: str  # "StableDiffusionPipeline" or "StableDiffusionXLPipeline"
    unet: dict[str, Any]
    vae: dict[str, Any]
    text_encoder: dict[str, Any]  # CLIPTextConfig kwargs (CLIPTextModel)
    scheduler: dict[str, Any]  # EulerDiscreteScheduler kwargs
    size: int  # image side in pixels
    steps: int
    guidance: float
    text_encoder_2: dict[str, Any] | None = None  # SDXL: CLIPTextModelWithProjection
    pipeline_config: dict[str, Any] = field(default_factory=dict)

    @property
    def is_xl(self) -> bool:
        """True for SDXL (two text encoders, added time embeddings)."""
        return self.text_encoder_2 is not None

    @property
    def cfg_passes(self) -> int:
        """UNet passes per step: 2 with classifier-free guidance (guidance > 1), else 1."""
        return 2 if self.guidance > 1.0 else 1


def clip_config(
    hidden: int, layers: int, heads: int, inter: int, act: str, projection: int
) -> dict[str, Any]:
    """CLIPTextConfig kwargs: CLIP's vocabulary and 77 positions, these widths and depth."""
    return {
        "vocab_size": _CLIP_VOCAB,
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "max_position_embeddings": _MAX_TOKENS,
        "hidden_act": act,
        "projection_dim": projection,
        "layer_norm_eps": 1e-05,
    }


SD_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}

_SD_UNET: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": (
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "norm_eps": 1e-05,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
}

_EULER: dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "steps_offset": 1,
    "timestep_spacing": "leading",
}

SD15 = Arch(
    name="sd15",
    pipeline_class="StableDiffusionPipeline",
    unet={**_SD_UNET, "attention_head_dim": 8, "cross_attention_dim": 768},
    vae=SD_VAE,
    text_encoder=clip_config(768, 12, 12, 3072, "quick_gelu", 768),
    scheduler=_EULER,
    size=512,
    steps=20,
    guidance=7.0,
)

SD_TURBO = Arch(  # SD 2.1-base architecture (OpenCLIP ViT-H text encoder, penultimate layer: 23 layers)
    name="sd-turbo",
    pipeline_class="StableDiffusionPipeline",
    unet={
        **_SD_UNET,
        "attention_head_dim": (5, 10, 20, 20),
        "cross_attention_dim": 1024,
        "use_linear_projection": True,
    },
    vae=SD_VAE,
    text_encoder=clip_config(1024, 23, 16, 4096, "gelu", 512),
    scheduler={**_EULER, "timestep_spacing": "trailing"},
    size=512,
    steps=1,
    guidance=0.0,
)

SDXL = Arch(
    name="sdxl",
    pipeline_class="StableDiffusionXLPipeline",
    unet={
        "sample_size": 128,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        "block_out_channels": (320, 640, 1280),
        "layers_per_block": 2,
        "attention_head_dim": (5, 10, 20),
        "transformer_layers_per_block": (1, 2, 10),
        "cross_attention_dim": 2048,
        "use_linear_projection": True,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 256,
        "projection_class_embeddings_input_dim": 2816,
        "act_fn": "silu",
        "norm_num_groups": 32,
        "norm_eps": 1e-05,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
    },
    vae={**SD_VAE, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True},
    text_encoder=clip_config(768, 12, 12, 3072, "quick_gelu", 768),
    text_encoder_2=clip_config(1280, 32, 20, 5120, "gelu", 1280),
    scheduler=_EULER,
    size=1024,
    steps=20,
    guidance=5.0,
    pipeline_config={"force_zeros_for_empty_prompt": True},
)

# Tiny stand-ins: the shapes of diffusers' own `get_dummy_components()` (8×8 latents, 64 px images).
TINY_VAE: dict[str, Any] = {
    **SD_VAE,
    "block_out_channels": (8, 16, 16, 16),
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "sample_size": 64,
}
_TINY_UNET: dict[str, Any] = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    "attention_head_dim": (2, 4),
    "norm_num_groups": 32,
    "cross_attention_dim": 32,
}


def tiny_clip_config(projection: int = 32) -> dict[str, Any]:
    """A two-layer, 32-wide CLIP text encoder's CLIPTextConfig kwargs."""
    return {**clip_config(32, 2, 4, 37, "quick_gelu", projection), "vocab_size": 1000}


def _tiny(full: Arch, **components: Any) -> Arch:
    """`full`'s tiny stand-in: its pipeline, scheduler, steps and guidance at 64 px, with tiny components
    (the VAE and text encoder below unless given)."""
    components = {"vae": TINY_VAE, "text_encoder": tiny_clip_config(), **components}
    return replace(full, name=f"{full.name}-tiny", size=64, **components)


TINY = {
    "sd15": _tiny(SD15, unet=_TINY_UNET),
    "sd-turbo": _tiny(SD_TURBO, unet={**_TINY_UNET, "use_linear_projection": True}),
    "sdxl": _tiny(
        SDXL,
        unet={
            **_TINY_UNET,
            "layers_per_block": 2,
            "use_linear_projection": True,
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": 8,
            "transformer_layers_per_block": (1, 2),
            "projection_class_embeddings_input_dim": 80,  # 32 (pooled text) + 6 time ids × 8
            "cross_attention_dim": 64,  # two 32-wide text encoders, concatenated
            "norm_num_groups": 1,
        },
        vae={**TINY_VAE, "force_upcast": True, "scaling_factor": 0.13025},
        text_encoder_2=tiny_clip_config(32),
    ),
}

FULL = {"sd15": SD15, "sd-turbo": SD_TURBO, "sdxl": SDXL}


def get_arch(name: str, *, tiny: bool = False) -> Arch:
    """The architecture called `name` (one of ARCH_NAMES), or its tiny stand-in."""
    if name not in FULL:
        raise ValueError(f"unknown architecture {name!r}; expected one of {', '.join(ARCH_NAMES)}")
    return TINY[name] if tiny else FULL[name]


def safety_vision_config(*, tiny: bool = False) -> dict[str, Any]:
    """CLIPVisionConfig kwargs of the SD safety checker's tower (CLIP ViT-L/14 at 224 px), or a tiny one."""
    if tiny:
        return {
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "patch_size": 16,
            "image_size": 64,
            "projection_dim": 32,
        }
    return {
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "patch_size": 14,
        "image_size": 224,
        "projection_dim": 768,
    }
