"""Image-to-video architectures for `python -m bench gpu`: full-size Wan 2.1 image-to-video 14B 480P and a
tiny stand-in of the same kinds (`tiny=True`) that builds and runs on a CPU in about a second.

Plain data (constructor keyword arguments), no torch, as `bench.archs_dit`: `bench.gpu.build_video`
builds them with random weights. Full-size values are those of `Wan-AI/Wan2.1-I2V-14B-480P-Diffusers`'
configs (as diffusers' `scripts/convert_wan_to_diffusers.py` writes them, model type
`Wan-I2V-14B-480p`): its `WanTransformer3DModel` (40 layers, 40 heads × 128, ffn 13824, 36 input
channels: 16 noise + 4 first-frame mask + 16 picture latents, the CLIP image tokens through added
key/value projections), `google/umt5-xxl`'s encoder, `laion/CLIP-ViT-H-14-laion2B-s32B-b79K`'s vision
tower (its second-to-last hidden states, 1280 wide, are the image tokens) and its image processor,
Wan 2.1's `AutoencoderKLWan` (z 16, factors 8 in space and 4 in time: diffusers' defaults) and
UniPC with flow sigmas, shift 3 (480P). The call: 832×480, 81 frames (16 fps: 5 s), guidance 5 (two
transformer passes a step), 512 UMT5 tokens: `WanImageToVideoPipeline`'s defaults, which the project's
`recognise_video` takes as the model's own.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

VIDEO_ARCH_NAMES = ("wan21-i2v-14b-480p",)


@dataclass(frozen=True)
class VideoArch:
    """One image-to-video architecture: component configs, the call's settings and what is timed."""

    name: str
    pipeline_class: str  # "WanImageToVideoPipeline"
    transformer: dict[str, Any]  # WanTransformer3DModel kwargs
    vae: dict[str, Any]  # AutoencoderKLWan kwargs
    text_encoder: dict[str, Any]  # UMT5Config kwargs (UMT5EncoderModel)
    image_encoder: dict[str, Any]  # CLIPVisionConfig kwargs (CLIPVisionModelWithProjection)
    image_processor: dict[str, Any]  # CLIPImageProcessor kwargs
    scheduler: dict[str, Any]  # UniPCMultistepScheduler kwargs
    width: int
    height: int
    frames: int  # frames of a clip (4k + 1)
    fps: int
    steps: int  # the model's denoising steps for a clip (the call's default)
    guidance: float
    max_sequence_length: int  # UMT5 tokens per prompt: the pipeline's default, as the project calls it
    source: str  # the public repository whose configs these copy
    shortcuts: tuple[str, ...] = ()  # where the benchmark departs from the model's own use

    @property
    def cfg_passes(self) -> int:
        """Transformer passes per step: 2 with classifier-free guidance (guidance > 1), else 1."""
        return 2 if self.guidance > 1.0 else 1


_UMT5_XXL: dict[str, Any] = {  # google/umt5-xxl's encoder
    "vocab_size": 256384,
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

_CLIP_VIT_H: dict[str, Any] = {  # laion/CLIP-ViT-H-14-laion2B-s32B-b79K's vision tower
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_attention_heads": 16,
    "image_size": 224,
    "patch_size": 14,
    "projection_dim": 1024,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-05,
}

WAN21_I2V_14B_480P = VideoArch(  # Wan-AI/Wan2.1-I2V-14B-480P-Diffusers
    name="wan21-i2v-14b-480p",
    pipeline_class="WanImageToVideoPipeline",
    transformer={
        "patch_size": (1, 2, 2),
        "num_attention_heads": 40,
        "attention_head_dim": 128,
        "in_channels": 36,
        "out_channels": 16,
        "text_dim": 4096,
        "freq_dim": 256,
        "ffn_dim": 13824,
        "num_layers": 40,
        "cross_attn_norm": True,
        "qk_norm": "rms_norm_across_heads",
        "eps": 1e-06,
        "image_dim": 1280,
        "added_kv_proj_dim": 5120,
    },
    vae={},  # AutoencoderKLWan's defaults are Wan 2.1's VAE
    text_encoder=_UMT5_XXL,
    image_encoder=_CLIP_VIT_H,
    image_processor={},  # CLIPImageProcessor's defaults are the checkpoint's (224 px, OpenAI's mean and std)
    scheduler={
        "num_train_timesteps": 1000,
        "prediction_type": "flow_prediction",
        "use_flow_sigmas": True,
        "flow_shift": 3.0,
    },
    width=832,
    height=480,
    frames=81,
    fps=16,
    steps=50,
    guidance=5.0,
    max_sequence_length=512,
    source="Wan-AI/Wan2.1-I2V-14B-480P-Diffusers",
    shortcuts=(
        "a few timed denoising steps (the plan's video_steps), not the model's 50: seconds per step are "
        "the gaps between step ends (device synchronised), and a clip's time is extrapolated as the timed "
        "call plus the missing steps at that rate",
    ),
)

TINY_VIDEO_ARCHS = {
    "wan21-i2v-14b-480p": replace(
        WAN21_I2V_14B_480P,
        name="wan21-i2v-14b-480p-tiny",
        transformer={
            **WAN21_I2V_14B_480P.transformer,
            "num_attention_heads": 2,
            "attention_head_dim": 12,
            "text_dim": 32,  # the tiny UMT5's width
            "ffn_dim": 32,
            "num_layers": 2,
            "image_dim": 32,  # the tiny CLIP's width
            "added_kv_proj_dim": 24,  # the inner width, as 5120 is the full one's
            "rope_max_seq_len": 32,
        },
        vae={
            "base_dim": 3,
            "z_dim": 16,
            "dim_mult": [1, 1, 1, 1],
            "num_res_blocks": 1,
            "temperal_downsample": [False, True, True],  # still factors 8 and 4 (lists: the VAE adds to them)
        },
        text_encoder={
            **_UMT5_XXL,
            "vocab_size": 1000,  # the local T5 tokenizer's ids are below 1000
            "d_model": 32,
            "d_kv": 8,
            "d_ff": 37,
            "num_layers": 2,
            "num_heads": 4,
            "relative_attention_num_buckets": 8,
            "relative_attention_max_distance": 32,
        },
        image_encoder={
            **_CLIP_VIT_H,
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": 32,
            "patch_size": 8,
            "projection_dim": 32,
        },
        image_processor={"size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32}},
        width=64,
        height=48,
        frames=9,
    ),
}

FULL_VIDEO_ARCHS = {"wan21-i2v-14b-480p": WAN21_I2V_14B_480P}


def get_video_arch(name: str, *, tiny: bool = False) -> VideoArch:
    """The image-to-video architecture called `name` (one of VIDEO_ARCH_NAMES), or its tiny stand-in."""
    if name not in FULL_VIDEO_ARCHS:
        raise ValueError(f"unknown architecture {name!r}; expected one of {', '.join(VIDEO_ARCH_NAMES)}")
    return TINY_VIDEO_ARCHS[name] if tiny else FULL_VIDEO_ARCHS[name]
