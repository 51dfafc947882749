# mypy: disable-error-code="no-untyped-call"
"""The CUDA readiness choices of `generation.pipelines.tuning` (pure functions of dtype, config and
sizes), and their hooks run for real on the CPU: a VAE kept in bf16 under an fp32 UNet still draws and
encodes, for SD and for SDXL, through txt2img and img2img."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from generation.families.sd import SD, SDXL
from generation.pipelines import tuning
from generation.pipelines.tuning import (
    VaePlan,
    batch_memory_bytes,
    images_that_fit,
    set_vae_dtype,
    vae_dtype,
    vae_plan,
)

GIB = 2**30
XL_OVERFLOWS, SD_OVERFLOWS = SDXL.fp16_vae_overflows, SD.fp16_vae_overflows
XL_SCALE, SD_SCALE = SDXL.activation_scale, SD.activation_scale


def test_only_an_fp16_sdxl_vae_that_asks_for_upcasting_leaves_fp16() -> None:
    half, bf16, fp32 = torch.float16, torch.bfloat16, torch.float32
    assert vae_dtype(half, XL_OVERFLOWS, force_upcast=True, bf16_supported=True) == bf16
    assert vae_dtype(half, XL_OVERFLOWS, force_upcast=True, bf16_supported=False) == fp32
    assert (
        vae_dtype(half, XL_OVERFLOWS, force_upcast=False, bf16_supported=True) == half
    )  # the fp16-fixed VAE
    assert (
        vae_dtype(half, SD_OVERFLOWS, force_upcast=True, bf16_supported=True) == half
    )  # as diffusers' SD pipelines
    assert vae_dtype(fp32, XL_OVERFLOWS, force_upcast=True, bf16_supported=True) == fp32
    assert vae_dtype(bf16, XL_OVERFLOWS, force_upcast=True, bf16_supported=True) == bf16


def test_vae_plan_slices_batches_and_tiles_only_when_one_image_does_not_fit() -> None:
    assert vae_plan(1, 512, 512, 80 * GIB) == VaePlan(slicing=False, tiling=False)
    assert vae_plan(16, 1024, 1024, 80 * GIB) == VaePlan(slicing=True, tiling=False)
    one_1024 = tuning.VAE_DECODE_BYTES_PER_PIXEL * 1024 * 1024  # 2.3 GiB for one SDXL-sized decode
    assert vae_plan(1, 1024, 1024, int(one_1024 / tuning.MEMORY_HEADROOM) + 2).tiling is False
    assert vae_plan(1, 1024, 1024, one_1024).tiling is True


def test_a_vae_plan_switches_the_vaes_own_flags(tiny_model: Any) -> None:
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_config(tiny_model.text2img.vae.config)  # its own copy: flags are state
    tuning.apply_vae_plan(vae, VaePlan(slicing=True, tiling=True))
    assert vae.use_slicing and vae.use_tiling
    tuning.apply_vae_plan(vae, VaePlan(slicing=False, tiling=False))
    assert not vae.use_slicing and not vae.use_tiling


def test_batch_memory_estimate_counts_guidance_rows_family_and_tiling() -> None:
    sd = batch_memory_bytes(4, 512, 512, 7.5, SD_SCALE)
    assert batch_memory_bytes(4, 512, 512, 0.0, SD_SCALE) < sd  # one UNet row per image instead of two
    assert batch_memory_bytes(4, 512, 512, 7.5, XL_SCALE) > sd
    assert batch_memory_bytes(8, 512, 512, 7.5, SD_SCALE) > sd
    untiled = batch_memory_bytes(1, 2048, 2048, 5.0, XL_SCALE)
    assert batch_memory_bytes(1, 2048, 2048, 5.0, XL_SCALE, tiled=True) < untiled


def test_images_that_fit_is_bounded_and_grows_with_free_memory() -> None:
    small = images_that_fit(512, 512, 7.5, SD_SCALE, 4 * GIB, cap=16)
    large = images_that_fit(512, 512, 7.5, SD_SCALE, 40 * GIB, cap=16)
    assert 1 <= small < large == 16
    assert images_that_fit(1024, 1024, 5.0, XL_SCALE, 1 * GIB, cap=16) == 1  # never below one
    # what the estimate promises fits within the headroom
    assert batch_memory_bytes(small, 512, 512, 7.5, SD_SCALE) <= 4 * GIB * tuning.MEMORY_HEADROOM


def _draw(pipe: Any, img2img: Any, size: int) -> tuple[np.ndarray, np.ndarray]:
    common = {"num_inference_steps": 2, "guidance_scale": 5.0, "output_type": "np"}
    drawn = pipe(
        "a fox", width=size, height=size, generator=torch.Generator().manual_seed(1), **common
    ).images
    source = Image.new("RGB", (size, size), (200, 40, 40))
    edited = img2img(
        "a fox", image=source, strength=0.6, generator=torch.Generator().manual_seed(2), **common
    )
    return drawn, edited.images


@pytest.mark.parametrize("arch_name", ["sd15", "sdxl"])
def test_a_bf16_vae_under_an_fp32_unet_draws_and_encodes(arch_name: str) -> None:
    from diffusers import AutoPipelineForImage2Image

    from bench.archs import get_arch
    from bench.gpu.build import build_pipeline

    arch = get_arch(arch_name, tiny=True)
    pipe = build_pipeline(arch, "cpu", torch.float32)
    img2img = AutoPipelineForImage2Image.from_pipe(pipe)
    img2img.set_progress_bar_config(disable=True)
    set_vae_dtype(pipe.vae, torch.bfloat16, torch.float32)
    assert {p.dtype for p in pipe.vae.parameters()} == {torch.bfloat16}
    assert pipe.unet.dtype == torch.float32
    assert pipe.vae.config.force_upcast is False  # no pipeline casts it back to fp16 or up to fp32
    drawn, edited = _draw(pipe, img2img, arch.size)
    for images in (drawn, edited):
        assert images.shape == (1, arch.size, arch.size, 3)
        assert np.isfinite(images).all() and images.max() > 0
    assert {p.dtype for p in pipe.vae.parameters()} == {torch.bfloat16}  # still, after both pipelines


def test_without_the_hooks_the_same_mix_of_dtypes_fails() -> None:
    """The hooks are what makes the mix work: a bf16 VAE given fp32 latents raises."""
    from bench.archs import get_arch
    from bench.gpu.build import build_pipeline

    pipe = build_pipeline(get_arch("sd15", tiny=True), "cpu", torch.float32)
    pipe.vae.to(torch.bfloat16)
    with pytest.raises(RuntimeError):
        pipe("a fox", num_inference_steps=1, output_type="np", generator=torch.Generator().manual_seed(1))


def test_optimise_on_cuda_turns_on_cudnn_benchmark_and_keeps_sdpa(tiny_cache_dir: Path) -> None:
    """`optimise` for a CUDA device, on a pipeline that stays on the CPU (nothing it sets needs a GPU)."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    from generation.pipelines.loading import load_pipeline, optimise
    from generation.pipelines.options import OptimiseOptions, parse_optimise

    assert OptimiseOptions().xformers is False and parse_optimise("xformers").xformers is True
    model = load_pipeline("tiny", "cpu", cache_dir=tiny_cache_dir)  # its own: optimise changes it
    before = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = False
        optimise(model.text2img, "cuda", OptimiseOptions())
        assert torch.backends.cudnn.benchmark is True
    finally:
        torch.backends.cudnn.benchmark = before
    processors = model.text2img.unet.attn_processors.values()
    assert processors and all(isinstance(p, AttnProcessor2_0) for p in processors)
