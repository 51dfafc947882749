# mypy: disable-error-code="no-untyped-call"
"""SAFETY=model|require|off, whatever the model ships.

- `model`: the model's own checker where it ships one (else its pictures are not screened).
- `require`: the model's own checker, else a standalone one: diffusers' `StableDiffusionSafetyChecker`
  with its CLIP feature extractor, from `checker_id` (`tiny` = a small one made locally, for tests).
  If none can be loaded, every picture counts as flagged: nothing is posted outside age-restricted
  channels.
- `off`: no screening at all.

Checks are flags only (True = unsafe); the runner decides what to post where.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from generation.pipelines.safety_options import SafetyOptions

log = logging.getLogger(__name__)

SafetyCheck = Callable[[list[Image.Image]], list[bool]]
"""Flags for a list of images: True where the image is unsafe."""

TINY_CHECKER_ID = "tiny"
TINY_CHECKER_FOLDER = "tiny-safety-v1"  # bump when build_tiny_checker changes


def model_check(checker: Any, feature_extractor: Any, device: str, dtype: torch.dtype) -> SafetyCheck:
    """Wrap diffusers' StableDiffusionSafetyChecker as a flags-only function (images are left alone)."""

    def check(images: list[Image.Image]) -> list[bool]:
        arrays = np.stack([np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0 for image in images])
        clip_input = feature_extractor(images, return_tensors="pt").pixel_values.to(device, dtype)
        with torch.no_grad():
            _, flags = checker(images=arrays.copy(), clip_input=clip_input)
        return [bool(flag) for flag in flags]

    return check


def flag_everything(images: list[Image.Image]) -> list[bool]:
    """`require` without a checker: no picture counts as screened."""
    return [True] * len(images)


def build_tiny_checker(folder: Path, seed: int = 0) -> None:
    """A small `StableDiffusionSafetyChecker` (seeded random CLIP weights, 32 px input) and its
    feature extractor, saved in diffusers' layout (`safety_checker/`, `feature_extractor/`). Its
    thresholds are set below any cosine, so it flags every picture: tests see the screening path."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_attention_heads": 2,
            "num_hidden_layers": 1,
        },
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_attention_heads": 2,
            "num_hidden_layers": 1,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=8,
    )
    checker = StableDiffusionSafetyChecker(config)
    with torch.no_grad():
        checker.concept_embeds_weights.fill_(-2.0)
        checker.special_care_embeds_weights.fill_(-2.0)
    checker.save_pretrained(folder / "safety_checker")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        folder / "feature_extractor"
    )


def ensure_tiny_checker(cache_dir: Path) -> Path:
    """The tiny checker's folder under `cache_dir`, built on first use (in a temporary folder renamed
    into place, so concurrent processes never see half of it)."""
    folder = cache_dir / TINY_CHECKER_FOLDER
    if (folder / "safety_checker" / "config.json").is_file():
        return folder
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-safety-", dir=cache_dir))
    try:
        build_tiny_checker(tmp)
        try:
            tmp.rename(folder)
        except OSError:
            if not (folder / "safety_checker" / "config.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def load_standalone_check(
    checker_id: str, device: str, dtype: torch.dtype, cache_dir: Path | None, tiny_cache: Path
) -> SafetyCheck:
    """diffusers' safety checker and its feature extractor from `checker_id` (a hub id in the layout of
    `CompVis/stable-diffusion-safety-checker`, a local folder with `safety_checker/` and
    `feature_extractor/` subfolders, or `tiny`); raises what the loaders raise."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPImageProcessor

    source = str(ensure_tiny_checker(tiny_cache)) if checker_id == TINY_CHECKER_ID else checker_id
    where: dict[str, Any] = {"cache_dir": str(cache_dir)} if cache_dir is not None else {}
    if Path(source, "safety_checker").is_dir():  # diffusers' pipeline layout
        checker: Any = StableDiffusionSafetyChecker.from_pretrained(source, subfolder="safety_checker")
        extractor: Any = CLIPImageProcessor.from_pretrained(source, subfolder="feature_extractor")
    else:  # the hub repo layout: both at the top
        checker = StableDiffusionSafetyChecker.from_pretrained(source, **where)
        extractor = CLIPImageProcessor.from_pretrained(source, **where)
    checker.to(device=device, dtype=dtype)
    checker.eval()
    return model_check(checker, extractor, device, dtype)


def choose_check(
    own: SafetyCheck | None,
    options: SafetyOptions,
    model_id: str,
    load_standalone: Callable[[], SafetyCheck],
) -> SafetyCheck | None:
    """The check SAFETY asks for, given the model's own (`own`, None when it ships none)."""
    if options.mode == "off":
        log.warning("SAFETY=off: pictures of %s are not screened", model_id)
        return None
    if own is not None:
        return own
    if options.mode == "model":
        log.warning(
            "model %s has no safety checker: its images are not screened (SAFETY=require adds one)", model_id
        )
        return None
    try:
        check = load_standalone()
    except Exception as exc:  # no checker at all: refuse to post outside age-restricted channels
        log.warning(
            "SAFETY=require: the safety checker %s could not be loaded (%s: %s); pictures are posted only "
            "in age-restricted channels",
            options.checker_id,
            type(exc).__name__,
            (str(exc).splitlines() or [""])[0][:200],
        )
        return flag_everything
    log.info("SAFETY=require: pictures of %s are screened by %s", model_id, options.checker_id)
    return check
