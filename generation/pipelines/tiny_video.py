# mypy: disable-error-code="no-untyped-call"
"""Built-in tiny image-to-video models: seeded random weights, small configs, local tokenizers.

Like diffusers' own tests' `get_dummy_components()` for its image-to-video pipelines, each saved with
`save_pretrained` into a folder that diffusers' real `DiffusionPipeline.from_pretrained` loads back.
Their call's defaults are the full-size model's, so each denoiser's config carries its native size,
frame count and rate under `video.VIDEO_DEFAULTS_KEY`, which `recognise_video` reads:

- `tiny-video`: `WanImageToVideoPipeline` like Wan 2.2 A14B's (no CLIP image encoder: the first frame
  conditions through the 36-channel input, 16 noise + 4 mask + 16 picture latents; one transformer),
  a Wan VAE with factors 8 (space) and 4 (time), UMT5, Wan's UniPC flow scheduler. 64×48, 9 frames
  (4k+1) at 16 fps, sides multiples of 16.
- `tiny-ltx-video`: `LTXImageToVideoPipeline`, an LTX VAE with LTX's real factors 32 (patch 4 and 3
  scalings) and 8, a one-layer transformer, T5, LTX's dynamically shifted flow scheduler. 96×64,
  17 frames (8k+1) at 25 fps, sides multiples of 32.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKLLTXVideo,
    AutoencoderKLWan,
    LTXImageToVideoPipeline,
    LTXVideoTransformer3DModel,
    UniPCMultistepScheduler,
    WanImageToVideoPipeline,
    WanTransformer3DModel,
)

from generation.families.video import VIDEO_DEFAULTS_KEY
from generation.pipelines.tiny import ensure_built
from generation.pipelines.tiny_parts import flow_match, save, t5
from generation.pipelines.tiny_tokenizers import t5_tokenizer

__all__ = [
    "TINY_VIDEO_DEFAULTS",
    "TINY_VIDEO_IDS",
    "TINY_VIDEO_MODELS",
    "build_tiny_video",
    "ensure_tiny_video",
]

Builder = Callable[[Path, int], None]
"""Writes one tiny pipeline, built with seeded random weights, to a folder (`save_pretrained`)."""

TINY_VIDEO_IDS: dict[str, str] = {
    "tiny-video": "tiny-video-v1",
    "tiny-ltx-video": "tiny-ltx-video-v1",
}
"""The built-in tiny image-to-video models → their cache folders; bump a folder's version when its
builder changes, so old caches are not reused."""

TINY_VIDEO_DEFAULTS: dict[str, dict[str, int]] = {
    "tiny-video": {"width": 64, "height": 48, "frames": 9, "fps": 16},
    "tiny-ltx-video": {"width": 96, "height": 64, "frames": 17, "fps": 25},
}
"""Model id → its native size, frame count and rate (written into its denoiser's config)."""


def build_tiny_wan(folder: Path, seed: int = 0) -> None:
    """`WanImageToVideoPipeline` (Wan 2.2 A14B-style: no image encoder), 64×48, 9 frames at 16 fps."""
    torch.manual_seed(seed)
    vae = AutoencoderKLWan(
        base_dim=3,
        z_dim=16,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],  # time: factor 4
        latents_mean=[0.0] * 16,
        latents_std=[1.0] * 16,
    )
    torch.manual_seed(seed + 1)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=16 + 4 + 16,  # noise, first-frame mask (× temporal factor), picture latents
        out_channels=16,
        text_dim=32,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )
    _carry_defaults(transformer, "tiny-video")
    tokenizer = t5_tokenizer()
    scheduler = UniPCMultistepScheduler(  # Wan 2.x's scheduler_config.json (480p: shift 3)
        num_train_timesteps=1000,
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=3.0,
    )
    save(
        WanImageToVideoPipeline(
            tokenizer=tokenizer,
            text_encoder=t5(tokenizer, seed + 2, umt5=True),
            vae=vae,
            scheduler=scheduler,
            transformer=transformer,
        ),
        folder,
    )


def build_tiny_ltx(folder: Path, seed: int = 0) -> None:
    """`LTXImageToVideoPipeline`, 96×64, 17 frames at 25 fps: LTX's own VAE factors (32 and 8)."""
    torch.manual_seed(seed)
    transformer = LTXVideoTransformer3DModel(
        in_channels=8,
        out_channels=8,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=4,
        attention_head_dim=8,
        cross_attention_dim=32,
        num_layers=1,
        caption_channels=32,
    )
    _carry_defaults(transformer, "tiny-ltx-video")
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLLTXVideo(
        in_channels=3,
        out_channels=3,
        latent_channels=8,
        block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, True, False),  # × patch 4: space 32, time 8
        decoder_spatio_temporal_scaling=(True, True, True, False),
        decoder_inject_noise=(False,) * 5,
        upsample_residual=(False,) * 4,
        upsample_factor=(1,) * 4,
        timestep_conditioning=False,  # LTX-Video 0.9.0's decoder
        patch_size=4,
        patch_size_t=1,
        encoder_causal=True,
        decoder_causal=False,
    )
    tokenizer = t5_tokenizer()
    scheduler = flow_match(  # LTX-Video's scheduler_config.json
        shift=1.0,
        use_dynamic_shifting=True,
        base_shift=0.95,
        max_shift=2.05,
        base_image_seq_len=1024,
        max_image_seq_len=4096,
        shift_terminal=0.1,
    )
    save(
        LTXImageToVideoPipeline(
            scheduler=scheduler,
            vae=vae,
            text_encoder=t5(tokenizer, seed + 2),
            tokenizer=tokenizer,
            transformer=transformer,
        ),
        folder,
    )


def _carry_defaults(denoiser: Any, model_id: str) -> None:
    """Write the model's native size, frames and rate into its denoiser's config (saved with it)."""
    denoiser.register_to_config(**{VIDEO_DEFAULTS_KEY: TINY_VIDEO_DEFAULTS[model_id]})


TINY_VIDEO_MODELS: dict[str, Builder] = {
    "tiny-video": build_tiny_wan,
    "tiny-ltx-video": build_tiny_ltx,
}
"""Model id → the builder writing its pipeline to a folder."""

assert tuple(TINY_VIDEO_MODELS) == tuple(TINY_VIDEO_IDS) == tuple(TINY_VIDEO_DEFAULTS)


def build_tiny_video(model_id: str, folder: Path, seed: int = 0) -> None:
    """Write the tiny `model_id` image-to-video pipeline (seeded random weights) to `folder`."""
    try:
        builder = TINY_VIDEO_MODELS[model_id]
    except KeyError:
        raise ValueError(
            f"{model_id!r} is not a tiny video model: one of {', '.join(TINY_VIDEO_IDS)}"
        ) from None
    builder(folder, seed)


def ensure_tiny_video(cache_dir: Path, model_id: str, seed: int = 0) -> Path:
    """The folder of the tiny `model_id` under `cache_dir` (versioned: `TINY_VIDEO_IDS`), built on
    first use; concurrent processes are safe (`tiny.ensure_built`)."""
    if model_id not in TINY_VIDEO_MODELS:
        raise ValueError(f"{model_id!r} is not a tiny video model: one of {', '.join(TINY_VIDEO_IDS)}")
    return ensure_built(
        cache_dir / TINY_VIDEO_IDS[model_id],
        "model_index.json",
        lambda tmp: build_tiny_video(model_id, tmp, seed),
    )
