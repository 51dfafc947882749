# mypy: disable-error-code="no-untyped-call"
"""Loading an image-to-video pipeline and animating one picture with it (the "Animate" model layer).

`load_video_pipeline` loads through diffusers' real `DiffusionPipeline.from_pretrained` (a hub id or a
diffusers folder) and recognises its `VideoFamily`; `animate` makes one clip as uint8 frames
(F, H, W, 3) from one `torch.Generator` seeded by `seed` (on the CPU, so a seed makes the same noise on
any device), reporting each denoising step to `on_step`.
"""

from __future__ import annotations

import importlib.util
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline
from PIL import Image, ImageOps

from generation.families.video import VideoFamily, recognise_video
from generation.pipelines.loading import dtype_kwargs

__all__ = [
    "NonFiniteVideo",
    "StepReport",
    "VideoInterrupted",
    "animate",
    "load_video_pipeline",
    "preview_png",
]

StepReport = Callable[[int, int], bool]
"""`on_step(step, total)` after each denoising step (step counts from 1); False stops the clip."""

StepEnd = Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]
"""diffusers' `callback_on_step_end(pipe, step_index, timestep, tensors) -> tensors`."""

PREVIEW_SIDE = 128


class VideoInterrupted(Exception):
    """`on_step` asked the clip to stop."""


class NonFiniteVideo(Exception):
    """The clip came out with NaN or infinite pixels (a half-precision overflow, typically)."""


def load_video_pipeline(
    model: str | Path, device: str, dtype: torch.dtype, cache_dir: Path | None = None
) -> tuple[Any, VideoFamily]:
    """The image-to-video pipeline of `model` (a hub id or a diffusers folder) on `device` in `dtype`,
    progress bars off, and its family. Raises ValueError for a pipeline that does not animate a
    picture (`recognise_video`), RuntimeError when a module the family's call needs is missing."""
    settings: dict[str, Any] = {"cache_dir": str(cache_dir)} if cache_dir is not None else {}
    pipe: Any = DiffusionPipeline.from_pretrained(str(model), **settings, **dtype_kwargs(dtype))
    family = recognise_video(pipe)
    missing = [name for name in family.requires if importlib.util.find_spec(name) is None]
    if missing:
        raise RuntimeError(f"{family.name} needs the Python package(s) {', '.join(missing)}: install them")
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device)
    if family.vae_float32 and dtype in (torch.float16, torch.bfloat16):
        pipe.vae.to(torch.float32)  # the pipeline casts latents to the VAE's dtype: decoded in float32
    return pipe, family


def animate(
    pipe: Any,
    family: VideoFamily,
    source: Image.Image,
    prompt: str,
    negative: str,
    width: int,
    height: int,
    frames: int,
    steps: int,
    guidance: float,
    motion: str,
    seed: int,
    on_step: StepReport | None = None,
    first_frames: int = 0,
) -> np.ndarray:
    """One clip starting from `source`: uint8 frames (`frames`, `height`, `width`, 3). The size and
    frame count must be the family's (`size_for`, `snap_frames`); the source is centre-cropped to the
    clip's aspect and resized (never stretched). `first_frames` leading frames are that picture
    itself, so the clip starts exactly on it; 0 keeps the model's own (its VAE round trip shifts
    colours slightly). `on_step` hears of each step where the call takes `callback_on_step_end` (all
    but a few older pipelines). Raises VideoInterrupted when `on_step` returns False, NonFiniteVideo
    for NaN or infinite pixels."""
    if not 0 <= first_frames <= frames:
        raise ValueError(f"first_frames is 0 to {frames}, not {first_frames}")
    image = ImageOps.fit(source.convert("RGB"), (width, height), Image.Resampling.LANCZOS)
    generator = torch.Generator("cpu").manual_seed(seed)
    kwargs = family.call_arguments(
        image, prompt, negative, width, height, frames, steps, guidance, motion, generator
    )
    kwargs["output_type"] = "np"  # floats: a NaN pixel is seen (as PIL it is black)
    if on_step is not None and "callback_on_step_end" in family.parameters:
        kwargs["callback_on_step_end"] = _step_callback(on_step, steps)
    video: np.ndarray = np.asarray(pipe(**kwargs).frames[0])
    if video.shape != (frames, height, width, 3):
        raise RuntimeError(f"{family.name} made frames of {video.shape}, not {(frames, height, width, 3)}")
    if not np.isfinite(video).all():
        raise NonFiniteVideo(f"{family.name} made non-finite pixels (NaN or infinite): nothing to show")
    out: np.ndarray = (np.clip(video, 0.0, 1.0) * 255).round().astype(np.uint8)
    if first_frames:
        out[:first_frames] = np.asarray(image)
    return out


def preview_png(source: Image.Image) -> bytes:
    """A small still of the source (at most 128 px a side) as PNG, for progress messages."""
    still = source.convert("RGB")
    still.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    still.save(buffer, format="PNG")
    return buffer.getvalue()


def _step_callback(on_step: StepReport, steps: int) -> StepEnd:
    """diffusers' `callback_on_step_end`, telling `on_step` (step, total) and stopping when it says so
    (raising ends the call at once: no decoding of a clip nobody will see)."""

    def callback(pipe: Any, step_index: int, _timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        total = int(getattr(pipe, "num_timesteps", 0) or steps)
        if not on_step(step_index + 1, total):
            raise VideoInterrupted(f"stopped after step {step_index + 1} of {total}")
        return tensors

    return callback
