# mypy: disable-error-code="no-untyped-call"
"""Loading diffusers pipelines: device choice, dtype, and the model's profile.

`load_pipeline` goes through `AutoPipelineForText2Image.from_pretrained` for every model, `tiny`
included (it is built once, saved with `save_pretrained` into a cache folder, then loaded back), so
tests run the same loading path as real models. Only `generation.pipelines` imports torch.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoPipelineForImage2Image, AutoPipelineForText2Image
from PIL import Image

from generation.pipelines.options import OptimiseOptions
from generation.pipelines.tiny import TINY_MODEL_ID, ensure_tiny_model
from generation.pipelines.tuning import apply_vae_precision
from generation.prompts.request import ModelProfile

log = logging.getLogger(__name__)

Pipeline = Any
"""A diffusers `DiffusionPipeline` (its stubs are too loose for mypy: attributes are per-pipeline)."""

SafetyCheck = Callable[[list[Image.Image]], list[bool]]
"""Flags for a list of images: True where the image is unsafe."""


def default_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where built-in models are kept when no cache folder is given: `IMAGINE_CACHE` in `environ` (a
    settings mapping the caller passes), else `~/.cache/imagine`."""
    value = (environ or {}).get("IMAGINE_CACHE")
    return Path(value).expanduser() if value else Path("~/.cache/imagine").expanduser()


# --------------------------------------------------------------------------------------------------
# Devices and dtypes
# --------------------------------------------------------------------------------------------------


def resolve_device(setting: str) -> str:
    """`auto` → `cuda`, then `mps`, then `cpu`; `cuda`, `cuda:N`, `mps`, `cpu` are checked to exist."""
    value = setting.strip().lower()
    if value == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if value == "cpu":
        return "cpu"
    if value == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError("DEVICE=mps but this machine has no Apple GPU (MPS) available")
        return "mps"
    if value == "cuda" or value.startswith("cuda:"):
        index_text = value.partition(":")[2]
        if value.startswith("cuda:") and not index_text.isdigit():
            raise ValueError(f"DEVICE={setting!r}: expected cuda:N with N a GPU number")
        if not torch.cuda.is_available():
            raise ValueError(f"DEVICE={setting!r} but CUDA is not available (no GPU, or a CPU-only torch)")
        if index_text and int(index_text) >= torch.cuda.device_count():
            raise ValueError(f"DEVICE={setting!r} but only {torch.cuda.device_count()} CUDA GPU(s) exist")
        return value
    raise ValueError(f"DEVICE={setting!r}: expected auto, cuda, cuda:N, mps or cpu")


_BF16_PIPELINES = ("Flux", "StableDiffusion3", "Sana", "Lumina", "HunyuanDiT")


def choose_dtype(device: str, pipeline_class: str | None) -> torch.dtype:
    """fp32 on cpu/mps; on CUDA bf16 for model families trained in it, fp16 otherwise."""
    if not device.startswith("cuda"):
        return torch.float32
    if pipeline_class and pipeline_class.startswith(_BF16_PIPELINES) and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def _pipeline_class_of(model_id: str) -> str | None:
    """The `_class_name` from a local folder's model_index.json (None for hub ids: not fetched here)."""
    index = Path(model_id) / "model_index.json"
    if index.is_file():
        name = json.loads(index.read_text()).get("_class_name")
        return str(name) if name else None
    return None


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def optimise(pipe: Pipeline, device: str, options: OptimiseOptions | None = None) -> None:
    """The one place for speed settings. SDPA attention is diffusers' default (AttnProcessor2_0);
    xformers only when asked for (`OPTIMISE=xformers`). On CUDA cuDNN picks the fastest convolution
    per shape (`cudnn.benchmark`: a few ms the first time a batch shape is seen)."""
    options = options or OptimiseOptions()
    if device == "cpu":
        # Leave a core to the event loop (Discord's heartbeat, acknowledgements): torch would take all.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) - 1))
    if not device.startswith("cuda"):
        return
    torch.backends.cudnn.benchmark = True
    if options.xformers:
        try:
            import xformers  # noqa: F401

            pipe.enable_xformers_memory_efficient_attention()
            log.info("xformers memory-efficient attention enabled")
        except Exception as exc:  # missing or broken build: SDPA stays
            log.info("xformers not used (%s); using PyTorch SDPA attention", exc)
    vae = getattr(pipe, "vae", None)
    if options.vae_slicing and vae is not None and hasattr(vae, "enable_slicing"):
        vae.enable_slicing()
    unet = getattr(pipe, "unet", None)
    if options.channels_last and unet is not None:
        unet.to(memory_format=torch.channels_last)
    if options.fuse_qkv and hasattr(pipe, "fuse_qkv_projections"):
        pipe.fuse_qkv_projections()
    if options.compile_unet and unet is not None:
        pipe.unet = torch.compile(unet, mode="reduce-overhead", fullgraph=True)


@dataclass
class LoadedModel:
    """A loaded model: both pipelines (sharing components), its profile and what the engine needs."""

    model_id: str
    device: str
    dtype: torch.dtype
    text2img: Pipeline
    img2img: Pipeline
    profile: ModelProfile
    family: str  # "sd" or "sdxl" (or "other"): picks the latent → RGB preview factors
    safety_check: SafetyCheck | None  # the model's own checker, run apart from the pipeline

    @property
    def tokenizer(self) -> Any:
        """The (first) tokenizer of the model."""
        return self.text2img.tokenizer


def _dtype_kwargs(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """`dtype=` where diffusers takes it (it deprecates `torch_dtype=`), else `torch_dtype=`."""
    from diffusers.utils import deprecation_utils

    return {"dtype": dtype} if hasattr(deprecation_utils, "_resolve_dtype") else {"torch_dtype": dtype}


def _from_pretrained(source: str, dtype: torch.dtype) -> Pipeline:
    """from_pretrained, preferring a hub repo's fp16 weight variant when loading in half precision."""
    if dtype == torch.float16 and not Path(source).exists():
        try:
            fp16: Pipeline = AutoPipelineForText2Image.from_pretrained(
                source, variant="fp16", **_dtype_kwargs(dtype)
            )
            return fp16
        except (OSError, ValueError):
            log.info("no fp16 weight variant for %s; loading the default weights", source)
    pipe: Pipeline = AutoPipelineForText2Image.from_pretrained(source, **_dtype_kwargs(dtype))
    return pipe


def load_pipeline(
    model_id: str,
    device: str,
    *,
    cache_dir: Path | None,
    options: OptimiseOptions | None = None,
) -> LoadedModel:
    """Load `model_id` (`tiny`, a Hugging Face id or a local diffusers folder) onto `device`."""
    source = model_id
    if model_id == TINY_MODEL_ID:
        source = str(ensure_tiny_model(cache_dir or default_cache_dir()))
    dtype = choose_dtype(device, _pipeline_class_of(source))
    log.info("loading model %s on %s (%s)", model_id, device, str(dtype).removeprefix("torch."))
    text2img = _from_pretrained(source, dtype)
    checker_module = getattr(text2img, "safety_checker", None)
    feature_extractor = getattr(text2img, "feature_extractor", None)
    if checker_module is not None:
        # The checker runs apart from the pipeline, so flagged pictures are reported, never blacked out.
        text2img.safety_checker = None
    text2img.to(device)
    text2img.set_progress_bar_config(disable=True)
    optimise(text2img, device, options)
    apply_vae_precision(text2img, dtype, _family(text2img))  # SDXL's VAE overflows in fp16
    img2img = AutoPipelineForImage2Image.from_pipe(text2img)
    img2img.set_progress_bar_config(disable=True)
    safety_check: SafetyCheck | None = None
    if checker_module is not None and feature_extractor is not None:
        checker_module.to(device)
        safety_check = _model_safety_check(checker_module, feature_extractor, device, dtype)
    else:
        log.warning("model %s has no safety checker: its images are not screened", model_id)
    family = _family(text2img)
    profile = make_profile(model_id, text2img, family, has_safety_checker=safety_check is not None)
    log.info("model %s loaded: %s", model_id, profile)
    return LoadedModel(model_id, device, dtype, text2img, img2img, profile, family, safety_check)


def _model_safety_check(checker: Any, feature_extractor: Any, device: str, dtype: torch.dtype) -> SafetyCheck:
    """Wrap diffusers' StableDiffusionSafetyChecker as a flags-only function (images are left alone)."""
    import numpy as np

    def check(images: list[Image.Image]) -> list[bool]:
        arrays = np.stack([np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0 for image in images])
        clip_input = feature_extractor(images, return_tensors="pt").pixel_values.to(device, dtype)
        with torch.no_grad():
            _, flags = checker(images=arrays.copy(), clip_input=clip_input)
        return [bool(flag) for flag in flags]

    return check


# --------------------------------------------------------------------------------------------------
# Profiles
# --------------------------------------------------------------------------------------------------


def _family(pipe: Pipeline) -> str:
    name = type(pipe).__name__
    if "XL" in name or getattr(pipe, "text_encoder_2", None) is not None:
        return "sdxl"
    if name.startswith("StableDiffusion"):
        return "sd"
    return "other"


def is_turbo(model_id: str, scheduler_config: Mapping[str, Any]) -> bool:
    """Distilled few-step models: "turbo"/"lightning"/"lcm" in the id, or a trailing-spacing schedule
    with such a hint in the scheduler's name."""
    lowered = model_id.lower()
    hints = ("turbo", "lightning", "lcm", "hyper")
    if any(hint in lowered for hint in hints):
        return True
    spacing = scheduler_config.get("timestep_spacing")
    class_name = str(scheduler_config.get("_class_name", "")).lower()
    return spacing == "trailing" and any(hint in class_name for hint in hints)


def make_profile(model_id: str, pipe: Pipeline, family: str, *, has_safety_checker: bool) -> ModelProfile:
    """What the parser and scheduler need to know about a loaded pipeline."""
    vae_scale = int(getattr(pipe, "vae_scale_factor", 8))
    unet = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    sample_size = int(unet.config.sample_size) if unet is not None else 64
    native = sample_size * vae_scale
    tokenizer = getattr(pipe, "tokenizer", None)
    token_limit = int(getattr(tokenizer, "model_max_length", 77) or 77)
    if token_limit > 4096:  # unset in some tokenizer configs (a huge sentinel): CLIP's own limit
        token_limit = 77
    if model_id == TINY_MODEL_ID:
        return ModelProfile(
            name=model_id,
            native_size=native,
            default_steps=4,
            default_guidance=7.5,
            max_steps=50,
            token_limit=token_limit,
            has_safety_checker=has_safety_checker,
        )
    if is_turbo(model_id, pipe.scheduler.config):
        return ModelProfile(
            name=model_id,
            native_size=native,
            default_steps=4 if family == "sdxl" else 1,
            default_guidance=0.0,
            max_steps=8,
            token_limit=token_limit,
            is_turbo=True,
            has_safety_checker=has_safety_checker,
        )
    guidance = 6.0 if family == "sdxl" else 7.5
    return ModelProfile(
        name=model_id,
        native_size=native,
        default_steps=30,
        default_guidance=guidance,
        max_steps=100,
        token_limit=token_limit,
        has_safety_checker=has_safety_checker,
    )
