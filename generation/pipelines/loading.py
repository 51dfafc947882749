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
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoPipelineForImage2Image, AutoPipelineForText2Image, DiffusionPipeline
from huggingface_hub import constants as hub_constants
from huggingface_hub import try_to_load_from_cache

from generation.families.base import Family
from generation.families.registry import recognise
from generation.pipelines.download import download_model
from generation.pipelines.model_hash import model_hash
from generation.pipelines.options import OptimiseOptions
from generation.pipelines.processors import images_only_processors
from generation.pipelines.safety import (
    SafetyCheck,
    choose_check,
    flag_everything,
    load_standalone_check,
    model_check,
)
from generation.pipelines.safety_options import SafetyOptions
from generation.pipelines.source import BUILTIN_MODEL_IDS, TINY_FAMILY_IDS, default_cache_dir, hub_cache_dir
from generation.pipelines.tiny import TINY_MODEL_ID, ensure_tiny_model
from generation.pipelines.tuning import apply_vae_precision
from generation.prompts.request import ModelProfile

log = logging.getLogger(__name__)

Pipeline = Any
"""A diffusers `DiffusionPipeline` (its stubs are too loose for mypy: attributes are per-pipeline)."""

__all__ = ["LoadedModel", "SafetyCheck", "default_cache_dir", "load_pipeline", "resolve_device"]


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


def _pipeline_class_of(model_id: str, cache_dir: Path | None = None) -> str | None:
    """The `_class_name` from a local folder's model_index.json, or a hub id's in the cache (None when
    it is not there: nothing is fetched here)."""
    index = Path(model_id) / "model_index.json"
    if not index.is_file() and not Path(model_id).exists():
        cached = try_to_load_from_cache(model_id, "model_index.json", cache_dir=hub_cache_dir(cache_dir))
        index = Path(cached) if isinstance(cached, str) else index
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
    img2img: Pipeline | None  # None: the family has no image-to-image pipeline
    profile: ModelProfile
    family: Family  # how the model is called (`generation.families`)
    safety_check: SafetyCheck | None  # the model's own checker, run apart from the pipeline
    model_hash: str | None = None  # PNG parameters' `Model hash:` (generation.pipelines.model_hash)

    @property
    def tokenizer(self) -> Any:
        """The tokenizer prompts are counted with: the longest-reading encoder's (`Family.tokenizer`)."""
        return self.family.tokenizer(self.text2img)


def dtype_kwargs(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """`dtype=` where diffusers takes it (it deprecates `torch_dtype=`), else `torch_dtype=`."""
    from diffusers.utils import deprecation_utils

    return {"dtype": dtype} if hasattr(deprecation_utils, "_resolve_dtype") else {"torch_dtype": dtype}


def _fetch(source: str, cache_dir: Path | None, variant: str | None) -> str:
    """A hub id's local folder in the cache (MODEL_CACHE_DIR, else the hub's), downloading it first
    (with progress lines) when it is not there; local folders are returned as they are."""
    if Path(source).exists():
        return source
    cache = hub_cache_dir(cache_dir)
    cached = try_to_load_from_cache(source, "model_index.json", cache_dir=cache)
    if hub_constants.HF_HUB_OFFLINE or isinstance(cached, str):
        return source  # from_pretrained(cache_dir=…) finds it, or says it is missing
    return str(download_model(source, cache, variant))


def _from_pretrained(source: str, dtype: torch.dtype, cache_dir: Path | None = None) -> Pipeline:
    """from_pretrained (hub ids: through MODEL_CACHE_DIR), preferring a hub repo's fp16 weight variant
    when loading in half precision."""
    cache = {"cache_dir": str(cache_dir)} if cache_dir is not None else {}
    if dtype == torch.float16 and not Path(source).exists():
        try:
            folder = _fetch(source, cache_dir, "fp16")
            fp16: Pipeline = _loader_for(folder, cache_dir).from_pretrained(
                folder, variant="fp16", **cache, **dtype_kwargs(dtype), **images_only_processors(folder)
            )
            return fp16
        except (OSError, ValueError):
            log.info("no fp16 weight variant for %s; loading the default weights", source)
    folder = _fetch(source, cache_dir, None)
    loader = _loader_for(folder, cache_dir)
    pipe: Pipeline = loader.from_pretrained(
        folder, **cache, **dtype_kwargs(dtype), **images_only_processors(folder)
    )
    return pipe


def _loader_for(folder: str, cache_dir: Path | None) -> Any:
    """`AutoPipelineForText2Image`, which loads a checkpoint as its family's text-to-image pipeline (an
    SD inpainting checkpoint as SD's, with its 9-channel UNet); a pipeline class it maps to no
    text-to-image one (`FluxFillPipeline`: an inpainting model with no text-to-image twin; the
    Qwen-Image-Edit pipelines, which only edit) loads as itself through `DiffusionPipeline`."""
    from diffusers.pipelines.auto_pipeline import (  # the class → its family in AutoPipeline's maps
        AUTO_TEXT2IMAGE_PIPELINES_MAPPING,
        _get_model,
    )

    name = _pipeline_class_of(folder, cache_dir)
    if name is not None and _get_model(name) not in AUTO_TEXT2IMAGE_PIPELINES_MAPPING:
        return DiffusionPipeline
    return AutoPipelineForText2Image


def _image_to_image(text2img: Pipeline, family: Family) -> Pipeline | None:
    """The family's image-to-image pipeline on the loaded weights (`from_pipe`), or None where diffusers
    has none for it (PixArt, SANA, AuraFlow, …: such a model refuses `image` and has no edit buttons)."""
    if not family.features.image:
        return None
    try:
        img2img = AutoPipelineForImage2Image.from_pipe(text2img)
    except ValueError as exc:
        log.info("no image-to-image pipeline for %s: %s", type(text2img).__name__, exc)
        return None
    img2img.set_progress_bar_config(disable=True)
    return img2img


def load_pipeline(
    model_id: str,
    device: str,
    *,
    cache_dir: Path | None,
    options: OptimiseOptions | None = None,
    safety: SafetyOptions | None = None,
) -> LoadedModel:
    """Load `model_id` (`tiny`, a Hugging Face id or a local diffusers folder) onto `device`; hub
    downloads go to `cache_dir` (MODEL_CACHE_DIR; None: the hub's default cache). `safety` says which
    checker screens its pictures (`generation.pipelines.safety`)."""
    source = model_id
    if model_id == TINY_MODEL_ID:
        source = str(ensure_tiny_model(cache_dir or default_cache_dir()))
    elif model_id in TINY_FAMILY_IDS:
        from generation.pipelines.tiny_families import ensure_tiny_family

        source = str(ensure_tiny_family(cache_dir or default_cache_dir(), model_id))
    dtype = choose_dtype(device, _pipeline_class_of(source))
    log.info("loading model %s on %s (%s)", model_id, device, str(dtype).removeprefix("torch."))
    text2img = _from_pretrained(source, dtype, cache_dir)
    checker_module = getattr(text2img, "safety_checker", None)
    feature_extractor = getattr(text2img, "feature_extractor", None)
    if checker_module is not None:
        # The checker runs apart from the pipeline, so flagged pictures are reported, never blacked out.
        text2img.safety_checker = None
    text2img.to(device)
    text2img.set_progress_bar_config(disable=True)
    optimise(text2img, device, options)
    family = recognise(text2img)
    apply_vae_precision(text2img, dtype, family.fp16_vae_overflows)  # SDXL's VAE overflows in fp16
    img2img = _image_to_image(text2img, family)
    image = img2img is not None or family.fills(text2img)  # an inpainting model redraws a whole picture
    own: SafetyCheck | None = None
    if checker_module is not None and feature_extractor is not None:
        checker_module.to(device)
        own = model_check(checker_module, feature_extractor, device, dtype)
    options_ = safety or SafetyOptions()
    safety_check = choose_check(
        own,
        options_,
        model_id,
        lambda: load_standalone_check(
            options_.checker_id, device, dtype, cache_dir, cache_dir or default_cache_dir()
        ),
    )
    # `require` without a loadable checker flags every picture: nothing screens them.
    screened = safety_check is not None and safety_check is not flag_everything
    profile = make_profile(model_id, text2img, family, has_safety_checker=screened, image=image)
    weights = model_hash(source, hub_cache_dir(cache_dir))
    log.info("model %s loaded (hash %s): %s", model_id, weights or "unknown", profile)
    return LoadedModel(model_id, device, dtype, text2img, img2img, profile, family, safety_check, weights)


# --------------------------------------------------------------------------------------------------
# Profiles
# --------------------------------------------------------------------------------------------------


def is_turbo(model_id: str, scheduler_config: Mapping[str, Any]) -> bool:
    """Distilled few-step U-Net models (SD-Turbo, SDXL-Lightning, LCM, Hyper-SD), which carry no config
    marker: "turbo"/"lightning"/"lcm"/"hyper" in the id, or a trailing-spacing schedule with such a
    hint in the scheduler's name. (Flow-matching families say it in their configs: `generation.families`.)"""
    lowered = model_id.lower()
    hints = ("turbo", "lightning", "lcm", "hyper")
    if any(hint in lowered for hint in hints):
        return True
    spacing = scheduler_config.get("timestep_spacing")
    class_name = str(scheduler_config.get("_class_name", "")).lower()
    return spacing == "trailing" and any(hint in class_name for hint in hints)


def make_profile(
    model_id: str, pipe: Pipeline, family: Family, *, has_safety_checker: bool, image: bool = True
) -> ModelProfile:
    """What the parser and scheduler need to know about a loaded pipeline, from its family
    (`image`: whether an image-to-image pipeline could be made for it)."""
    features = replace(family.features, image=family.features.image and image)
    native = family.native_size(pipe)
    steps, guidance = family.defaults(pipe)
    profile = ModelProfile(
        name=model_id,
        native_size=native,
        default_steps=steps,
        default_guidance=guidance,
        max_steps=family.max_steps,
        token_limit=family.token_limit(pipe),
        has_safety_checker=has_safety_checker,
        features=features,
    )
    if model_id in BUILTIN_MODEL_IDS:  # the test models: few steps, whatever their family
        return replace(profile, default_steps=4, max_steps=50)
    if family.distilled or is_turbo(model_id, pipe.scheduler.config):
        fast = family.default_steps if family.distilled and family.default_steps else family.turbo_steps
        limit = family.max_steps if family.distilled else 8
        return replace(profile, default_steps=fast, default_guidance=0.0, max_steps=limit, is_turbo=True)
    return profile
