# mypy: disable-error-code="no-untyped-call"
"""A tiny Flux Redux model for tests and benchmarks: `FluxPriorReduxPipeline`'s image side (a SigLIP
vision tower, its image processor, and `ReduxImageEncoder`, the projection into T5's width) with seeded
random weights from small configs, saved once into the cache and loaded back through diffusers' real
`from_pretrained`, as `generation.pipelines.redux.ReduxReferences` loads the real one
(`black-forest-labs/FLUX.1-Redux-dev`). It fits the tiny Flux models (`tiny-flux`, `tiny-flux-schnell`):
its tokens are as wide as their T5's (`joint_attention_dim`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from generation.pipelines.tiny import ensure_built

TINY_REDUX_FOLDER = "tiny-redux-v1"  # bump when the builder changes, so old caches are not reused
TINY_REDUX_SIZE = 32  # the SigLIP tower's picture side: (32 / 8)² = 16 tokens per picture
_MARKER = "model_index.json"


def build_tiny_redux(folder: Path, text_width: int, seed: int = 0) -> None:
    """A tiny `FluxPriorReduxPipeline` (no text encoders: the Flux model's own encode the prompt) whose
    tokens are `text_width` wide, saved to `folder`."""
    from diffusers import FluxPriorReduxPipeline
    from diffusers.pipelines.flux.modeling_flux import ReduxImageEncoder
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(seed)
    config = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=TINY_REDUX_SIZE,
        patch_size=8,
    )
    image_encoder = SiglipVisionModel(config).eval()
    torch.manual_seed(seed + 1)
    embedder = ReduxImageEncoder(redux_dim=config.hidden_size, txt_in_features=text_width).eval()
    processor = SiglipImageProcessor(size={"height": TINY_REDUX_SIZE, "width": TINY_REDUX_SIZE})
    pipe: Any = FluxPriorReduxPipeline(
        image_encoder=image_encoder, feature_extractor=processor, image_embedder=embedder
    )
    pipe.save_pretrained(folder)


def ensure_tiny_redux(cache_dir: Path, text_width: int) -> Path:
    """The tiny Redux model's folder under `cache_dir`, built on first use (seed 0) for a T5 of
    `text_width`; safe beside other processes (`tiny.ensure_built`). One cache folder per width: the
    tiny Flux models share theirs."""
    return ensure_built(
        cache_dir / f"{TINY_REDUX_FOLDER}-{text_width}",
        _MARKER,
        lambda tmp: build_tiny_redux(tmp, text_width),
    )
