"""CUDA readiness choices, each a pure function of dtype, config and sizes, and the small hooks that
apply them: the VAE's precision, VAE tiling, and the memory estimate behind `max_batch_images`.

Every figure here is a rule of thumb, not a measurement on a card: `python -m bench gpu` records the
estimate beside each peak it measures, so a run on a GPU checks them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

# Memory estimate (fp16, SDPA attention): ≈ 0.35 GiB of UNet activations per SD 1.5 image at 512×512
# with classifier-free guidance, ≈ 0.6 GiB peak for decoding one image with the VAE, scaled by area;
# SDXL's UNet costs about 1.5× per pixel. Tiled decoding keeps the decoder to about one 512² tile.
UNET_BYTES_PER_PIXEL = 1400
VAE_DECODE_BYTES_PER_PIXEL = 2400
VAE_TILE_PIXELS = 512 * 512
MEMORY_HEADROOM = 0.85  # share of free memory a batch may plan to use


def vae_dtype(
    model_dtype: torch.dtype, overflows_in_fp16: bool, force_upcast: bool, bf16_supported: bool
) -> torch.dtype:
    """The dtype to run the VAE in. SDXL's VAE overflows in fp16 (NaN, then black images; its config
    says `force_upcast`): run it in bf16, which has fp32's range at fp16's cost, or fp32 on cards
    without bf16. Once at load, not diffusers' fp32 round trip of the weights on every call. SD 1.x/2.x
    VAEs decode in fp16 as diffusers' own SD pipelines do (they ignore `force_upcast`)."""
    if model_dtype == torch.float16 and force_upcast and overflows_in_fp16:
        return torch.bfloat16 if bf16_supported else torch.float32
    return model_dtype


def _param_dtype(module: Any) -> torch.dtype:
    dtype: torch.dtype = next(module.parameters()).dtype
    return dtype


def _cast_input(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Forward pre-hook: the first argument in the module's own dtype (read at call time)."""
    return (args[0].to(_param_dtype(module)), *args[1:])


def set_vae_dtype(vae: Any, dtype: torch.dtype, compute_dtype: torch.dtype) -> None:
    """Keep `vae` in `dtype` while the UNet runs in `compute_dtype`: inputs to its encoder and decoder
    are cast to the VAE's dtype, encoded latents back to `compute_dtype`. Marks the config as not
    needing diffusers' upcast (the fp16-fixed VAE's setting), so no pipeline casts it back."""
    if dtype == compute_dtype:
        return
    vae.to(dtype)
    for name in ("post_quant_conv", "decoder", "encoder"):
        part = getattr(vae, name, None)
        if part is not None:
            part.register_forward_pre_hook(_cast_input)
    last = getattr(vae, "quant_conv", None) or vae.encoder

    def to_compute(_module: Any, _args: Any, output: Any) -> Any:
        return output.to(compute_dtype)

    last.register_forward_hook(to_compute)
    vae.register_to_config(force_upcast=False)


def apply_vae_precision(pipe: Any, model_dtype: torch.dtype, overflows_in_fp16: bool) -> torch.dtype:
    """Choose (`vae_dtype`) and apply (`set_vae_dtype`) the VAE's dtype for a loaded pipeline; returns it."""
    vae = getattr(pipe, "vae", None)
    if vae is None:
        return model_dtype
    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    chosen = vae_dtype(model_dtype, overflows_in_fp16, bool(getattr(vae.config, "force_upcast", False)), bf16)
    set_vae_dtype(vae, chosen, model_dtype)
    return chosen


@dataclass(frozen=True)
class VaePlan:
    """How to decode one batch: one image at a time (slicing), and in tiles (tiling)."""

    slicing: bool
    tiling: bool


def vae_plan(images: int, width: int, height: int, free_bytes: int) -> VaePlan:
    """Slicing for every batch of two or more (the decoder's peak is per image, the cost small);
    tiling only when decoding one image would not fit in free memory (tiles blend at their seams, so
    pixels change slightly: never when not needed)."""
    one_image = VAE_DECODE_BYTES_PER_PIXEL * width * height
    return VaePlan(slicing=images > 1, tiling=one_image > free_bytes * MEMORY_HEADROOM)


def apply_vae_plan(vae: Any, plan: VaePlan) -> None:
    """Switch `vae`'s slicing and tiling to `plan` (flags on the module: no copy, no reload)."""
    if vae is None:
        return
    vae.enable_slicing() if plan.slicing else vae.disable_slicing()
    vae.enable_tiling() if plan.tiling else vae.disable_tiling()


def _unet_bytes_per_image(width: int, height: int, guidance: float, scale: float) -> float:
    """`scale`: the family's activation memory per pixel against SD 1.x's (`Family.activation_scale`)."""
    cfg = 2 if guidance > 1.0 else 1
    return UNET_BYTES_PER_PIXEL * width * height * scale * cfg / 2


def _decode_bytes(width: int, height: int, tiled: bool) -> int:
    pixels = width * height
    return VAE_DECODE_BYTES_PER_PIXEL * (min(pixels, VAE_TILE_PIXELS) if tiled else pixels)


def batch_memory_bytes(
    images: int, width: int, height: int, guidance: float, scale: float, *, tiled: bool = False
) -> int:
    """Estimated activation memory of one batch (weights excluded): the UNet's rows (two per image with
    guidance) plus one image's VAE decode (slicing on), or one tile's when decoding `tiled`."""
    unet = _unet_bytes_per_image(width, height, guidance, scale) * images
    return int(unet + _decode_bytes(width, height, tiled))


def images_that_fit(width: int, height: int, guidance: float, scale: float, free_bytes: int, cap: int) -> int:
    """The most images (1 to `cap`) whose `batch_memory_bytes` fits in `MEMORY_HEADROOM` of free memory,
    decoding tiled where `vae_plan` would tile."""
    tiled = vae_plan(1, width, height, free_bytes).tiling
    room = free_bytes * MEMORY_HEADROOM - _decode_bytes(width, height, tiled)
    fits = int(room // _unet_bytes_per_image(width, height, guidance, scale))
    return max(1, min(cap, fits))
