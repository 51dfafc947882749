# mypy: disable-error-code="no-untyped-call"
"""The built-in `tiny` model: seeded random weights from small configs and a tokenizer made locally.

Built once into a cache folder with `save_pretrained`, then loaded back by `generation.pipelines.loading`
through diffusers' real `from_pretrained`, so tests run the same loading path as real models.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from generation.pipelines.source import TINY_FOLDER_NAME as TINY_FOLDER_NAME
from generation.pipelines.source import TINY_MODEL_ID as TINY_MODEL_ID

TINY_MAX_LENGTH = 77


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte → printable character map (what byte-level BPE works over)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


def byte_tokenizer() -> CLIPTokenizer:
    """A CLIP tokenizer over single bytes (every text tokenizes; one token per byte), made locally."""
    alphabet = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for ch in alphabet:
        vocab[ch] = len(vocab)
    for ch in alphabet:
        vocab[ch + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=TINY_MAX_LENGTH)


def build_tiny_model(folder: Path, seed: int = 0) -> None:
    """Write the `tiny` Stable Diffusion pipeline (seeded random weights) to `folder` in diffusers format.

    Like diffusers' own `get_dummy_components()`: a two-level UNet on 8×8 latents, a four-level VAE
    (scale factor 8, so the native size is 64 px), a small CLIP text encoder and a local tokenizer.
    """
    unet = tiny_unet(seed, cross_attention_dim=32)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        block_out_channels=(8, 16, 16, 16),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=64,
    )
    tokenizer = byte_tokenizer()
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            hidden_size=32,
            intermediate_size=37,
            layer_norm_eps=1e-05,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=len(tokenizer),
            max_position_embeddings=TINY_MAX_LENGTH,
        )
    )
    sd_pipeline(vae, text_encoder, tokenizer, unet, sd_scheduler()).save_pretrained(folder)


def tiny_unet(seed: int, **settings: Any) -> UNet2DConditionModel:
    """A two-level UNet on 8×8 latents (4 channels), seeded: the `tiny` model's, and `tiny-sdxl`'s with
    SDXL's text-time conditioning in `settings`, which also give the cross-attention width."""
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        norm_num_groups=32,
        **settings,
    )


def sd_scheduler() -> EulerDiscreteScheduler:
    """Stable Diffusion's Euler scheduler (1.x's and SDXL's): scaled-linear betas, leading spacing."""
    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
        timestep_spacing="leading",
    )


def sd_pipeline(vae: Any, text_encoder: Any, tokenizer: CLIPTokenizer, unet: Any, scheduler: Any) -> Any:
    """A `StableDiffusionPipeline` of these components, without a safety checker (also `bench.gpu`'s)."""
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )


def ensure_tiny_model(cache_dir: Path, seed: int = 0) -> Path:
    """The folder of the `tiny` model under `cache_dir`, built on first use."""
    return ensure_built(
        cache_dir / TINY_FOLDER_NAME, "model_index.json", lambda tmp: build_tiny_model(tmp, seed)
    )


def ensure_built(folder: Path, marker: str, build: Callable[[Path], None]) -> Path:
    """`folder`, built by `build(tmp)` unless it already holds `marker`.

    Built in a temporary sibling folder and renamed into place, so concurrent processes never see half
    a model (the loser of a race keeps the winner's copy).
    """
    if (folder / marker).is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=folder.parent))
    try:
        build(tmp)
        try:
            tmp.rename(folder)
        except OSError:
            if not (folder / marker).is_file():
                raise  # not a lost race: a real failure
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder
