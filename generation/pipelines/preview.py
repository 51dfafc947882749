"""Cheap progress previews: latents → RGB by a fixed linear map (no VAE), as a small PNG.

The 4×3 factors are the widely used approximations of the SD 1.x/2.x and SDXL VAE decoders
(as in ComfyUI's latent formats). Numpy and Pillow only: no torch here.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

# rows: latent channels 0..3; columns: R, G, B
_SD_FACTORS = np.array(
    [
        [0.3512, 0.2297, 0.3227],
        [0.3250, 0.4974, 0.2350],
        [-0.2829, 0.1762, 0.2721],
        [-0.2120, -0.2616, -0.7177],
    ],
    dtype=np.float32,
)
_SD_BIAS = np.zeros(3, dtype=np.float32)
_SDXL_FACTORS = np.array(
    [
        [0.3651, 0.4232, 0.4341],
        [-0.2533, -0.0042, 0.1068],
        [0.1076, 0.1111, -0.0362],
        [-0.3165, -0.2492, -0.2188],
    ],
    dtype=np.float32,
)
_SDXL_BIAS = np.array([0.1084, -0.0175, -0.0011], dtype=np.float32)

PREVIEW_MAX_SIDE = 128
_MAX_UPSCALE = 8  # a latent pixel is 8 image pixels: never show a preview larger than the image


_MAPS = {"sd": (_SD_FACTORS, _SD_BIAS), "sdxl": (_SDXL_FACTORS, _SDXL_BIAS)}
"""The linear latent → RGB maps by name (`Family.preview`); any other latent space is stretched."""


def latents_to_rgb(latents: np.ndarray, kind: str = "sd") -> np.ndarray:
    """(C, h, w) latents of one image → (h, w, 3) uint8 RGB by the `kind` of map (`Family.preview`);
    a latent space without one (16 channels, …) shows its first three channels, stretched."""
    if latents.ndim != 3:
        raise ValueError(f"expected (channels, height, width) latents, got shape {latents.shape}")
    lat = latents.astype(np.float32, copy=False)
    known = _MAPS.get(kind)
    if known is not None and lat.shape[0] == known[0].shape[0]:
        factors, bias = known
        rgb = np.tensordot(lat, factors, axes=([0], [0])) + bias  # (h, w, 3), about [-1, 1]
    else:  # an unknown latent space: its first three channels, stretched to the visible range
        first = np.moveaxis(lat[:3] if lat.shape[0] >= 3 else np.repeat(lat[:1], 3, axis=0), 0, -1)
        low, high = float(first.min()), float(first.max())
        rgb = (first - low) / (high - low or 1.0) * 2.0 - 1.0
    out: np.ndarray = np.clip((rgb + 1.0) * 127.5, 0, 255).astype(np.uint8)
    return out


def preview_png(latents: np.ndarray, kind: str = "sd", max_side: int = PREVIEW_MAX_SIDE) -> bytes:
    """A small PNG (longer side ≤ `max_side`) of one image's latents."""
    image = Image.fromarray(latents_to_rgb(latents, kind), "RGB")
    long_side = max(image.size)
    target = min(max_side, long_side * _MAX_UPSCALE)
    if target != long_side:
        scale = target / long_side
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BILINEAR)
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()
