"""The canvases of one picture's edits: zoom out, pan, make square, region masks, upscale.

Pure geometry on Pillow and numpy (no torch). A `Canvas` is what the pipeline starts from: the
picture, its new area filled (a blurred mirror of the picture's own edges, plus noise, so the model
paints a continuation rather than a flat border), the mask of what to redraw (white), and how to
paste the kept pixels back: exactly, blended with the generated picture only across a narrow seam.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image, ImageFilter, ImageOps

from generation.prompts.edits import REGION_NAMES, Direction, EditError, EditKind, EditSpec, canonical_regions
from generation.prompts.request import ModelProfile, model_unit, size_unit, snap_size

UPSCALE_FACTOR = 2
FILL_NOISE = 12.0  # standard deviation (8-bit levels) of the noise over the filled area
MIN_SEAM = 8  # pixels: at least one latent cell (the VAE's scale factor)


@dataclass(frozen=True)
class SizeCap:
    """The largest canvas the model is asked for: at most `max_pixels`, both sides multiples of `unit`."""

    max_pixels: int
    unit: int

    @classmethod
    def for_native(cls, native_size: int) -> SizeCap:
        """The cap the upscale of a grid image uses (`upscale_of`): 4× the model's native pixel count."""
        return cls(4 * native_size * native_size, size_unit(native_size))

    @classmethod
    def for_profile(cls, profile: ModelProfile) -> SizeCap:
        """`for_native` of the model's native size, on its family's size step (`model_unit`: Flux's
        and SD 3's sides are multiples of 16)."""
        return cls(4 * profile.native_size**2, model_unit(profile))


@dataclass(frozen=True)
class Canvas:
    """What one edit starts from (all of width×height)."""

    image: Image.Image  # RGB: the start picture; outside the kept area, filled
    mask: Image.Image | None  # L, 0/255: 255 = redraw (the new area grown by the seam); None: image-to-image
    keep: Image.Image | None  # L: 255 = the start picture exactly, ramping to 0 across the seam; None: none

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.image.size


def paste_back(generated: Image.Image, canvas: Canvas) -> Image.Image:
    """`generated` with the canvas's kept pixels put back: equal to the source where `keep` is 255,
    the generated picture where it is 0, blended between them across the seam."""
    if generated.size != canvas.size:
        raise ValueError(f"generated {generated.size} for a canvas of {canvas.size}")
    if canvas.keep is None:
        return generated.convert("RGB")
    return Image.composite(canvas.image, generated.convert("RGB"), canvas.keep)


def prepare_canvas(
    spec: EditSpec,
    source: Image.Image,
    cap: SizeCap,
    *,
    seed: int = 0,
    uploaded_mask: Image.Image | None = None,
) -> Canvas:
    """The canvas of `spec` on `source`; `seed` draws the fill's noise and `uploaded_mask` is a
    member's mask for `Vary (Region)` (white = redraw). A source made by `with_redraw_mask` carries
    that mask in its alpha."""
    if uploaded_mask is None and spec.kind is EditKind.VARY_REGION:
        uploaded_mask = carried_mask(source)
    source = fit_to_cap(source.convert("RGB"), cap)
    kind = spec.kind
    if kind in (EditKind.VARY_SUBTLE, EditKind.VARY_STRONG):
        return Canvas(source, None, None)
    if kind in (EditKind.UPSCALE_SUBTLE, EditKind.UPSCALE_CREATIVE):
        return Canvas(upscaled(source, cap), None, None)
    if kind is EditKind.VARY_REGION:
        return region_canvas(source, spec.regions, uploaded_mask)
    if kind is EditKind.ZOOM_OUT:
        assert spec.factor is not None  # edit_spec guarantees it
        return zoom_out(source, spec.factor, seed=seed)
    if kind is EditKind.PAN:
        assert spec.direction is not None
        return pan(source, spec.direction, cap, seed=seed)
    if kind is EditKind.MAKE_SQUARE:
        return make_square(source, cap, seed=seed)
    raise ValueError(f"no canvas for {kind}")


def canvas_size(spec: EditSpec, source_size: tuple[int, int], cap: SizeCap) -> tuple[int, int]:
    """The (width, height) `prepare_canvas(spec, source, cap)` gives for a source of `source_size`,
    without touching pixels: what an edit's request asks for (and batches by)."""
    w, h = _fitted_size(source_size, cap)
    kind = spec.kind
    if kind in (EditKind.UPSCALE_SUBTLE, EditKind.UPSCALE_CREATIVE):
        return _upscaled_size((w, h), cap)
    if kind is EditKind.PAN:
        grow_x = spec.direction in (Direction.LEFT, Direction.RIGHT)
        wide, high = (w * 3 / 2, h) if grow_x else (w, h * 3 / 2)
        return _scaled_to_cap(math.ceil(wide), math.ceil(high), cap)
    if kind is EditKind.MAKE_SQUARE:
        if w == h:
            raise EditError("That picture is already square.")
        side, _ = _scaled_to_cap(max(w, h), max(w, h), cap)
        return side, side
    return w, h


# -- sizes ------------------------------------------------------------------------------------------


def fit_to_cap(image: Image.Image, cap: SizeCap) -> Image.Image:
    """`image` itself when its sides are multiples of the unit within the cap, else resized to the
    nearest such size of the same aspect."""
    size = _fitted_size(image.size, cap)
    return image if size == image.size else ImageOps.fit(image, size, Image.Resampling.LANCZOS)


def _fitted_size(size: tuple[int, int], cap: SizeCap) -> tuple[int, int]:
    w, h = size
    if w % cap.unit == 0 and h % cap.unit == 0 and w * h <= cap.max_pixels:
        return w, h
    return snap_size(w / h, float(min(w * h, cap.max_pixels)), cap.unit, max_pixels=cap.max_pixels)


def _scaled_to_cap(width: int, height: int, cap: SizeCap) -> tuple[int, int]:
    """(width, height) rounded up to the unit, then scaled down (keeping the aspect) to fit the cap."""
    width, height = _round_up(width, cap.unit), _round_up(height, cap.unit)
    if width * height <= cap.max_pixels:
        return width, height
    scale = math.sqrt(cap.max_pixels / (width * height))
    return _round_down(width * scale, cap.unit), _round_down(height * scale, cap.unit)


def _round_up(value: float, unit: int) -> int:
    return max(unit, math.ceil(value / unit - 1e-9) * unit)


def _round_down(value: float, unit: int) -> int:
    return max(unit, math.floor(value / unit + 1e-9) * unit)


def upscaled(source: Image.Image, cap: SizeCap) -> Image.Image:
    """`source` at twice its width and height (as near as the cap allows), by a Lanczos resize."""
    size = _upscaled_size(source.size, cap)
    return source if size == source.size else source.resize(size, Image.Resampling.LANCZOS)


def _upscaled_size(size: tuple[int, int], cap: SizeCap) -> tuple[int, int]:
    w, h = size
    target = min(w * h * UPSCALE_FACTOR**2, cap.max_pixels)
    if target <= w * h:
        return w, h
    return snap_size(w / h, float(target), cap.unit, max_pixels=cap.max_pixels)


# -- outpainting: zoom out, pan, make square --------------------------------------------------------


def zoom_out(source: Image.Image, factor: float, *, seed: int = 0) -> Canvas:
    """`source` shrunk by `factor` in the middle of a canvas of its own size."""
    w, h = source.size
    inner = (max(1, round(w / factor)), max(1, round(h / factor)))
    return _outpaint(source.resize(inner, Image.Resampling.LANCZOS), (w, h), _centred(inner, (w, h)), seed)


def pan(source: Image.Image, direction: Direction, cap: SizeCap, *, seed: int = 0) -> Canvas:
    """A canvas half as large again towards `direction`, `source` flush against the opposite side;
    past the cap the whole is scaled down to fit."""
    w, h = source.size
    grow_x = direction in (Direction.LEFT, Direction.RIGHT)
    wide, high = (w * 3 / 2, h) if grow_x else (w, h * 3 / 2)
    width, height = _scaled_to_cap(math.ceil(wide), math.ceil(high), cap)
    scale = height / h if grow_x else width / w  # the picture spans the side that does not grow
    picture = _resized(source, (min(width, round(w * scale)), min(height, round(h * scale))))
    pw, ph = picture.size
    cx, cy = _centred((pw, ph), (width, height))
    offset = {
        Direction.LEFT: (width - pw, cy),
        Direction.RIGHT: (0, cy),
        Direction.UP: (cx, height - ph),
        Direction.DOWN: (cx, 0),
    }[direction]
    return _outpaint(picture, (width, height), offset, seed)


def make_square(source: Image.Image, cap: SizeCap, *, seed: int = 0) -> Canvas:
    """A square canvas whose side is `source`'s long side (within the cap), `source` centred."""
    w, h = source.size
    if w == h:
        raise EditError("That picture is already square.")
    side, _ = _scaled_to_cap(max(w, h), max(w, h), cap)
    scale = min(side / max(w, h), 1.0)
    picture = _resized(source, (min(side, round(w * scale)), min(side, round(h * scale))))
    return _outpaint(picture, (side, side), _centred(picture.size, (side, side)), seed)


def _resized(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    return image if image.size == size else image.resize(size, Image.Resampling.LANCZOS)


def _centred(inner: tuple[int, int], outer: tuple[int, int]) -> tuple[int, int]:
    return (outer[0] - inner[0]) // 2, (outer[1] - inner[1]) // 2


def _outpaint(picture: Image.Image, size: tuple[int, int], offset: tuple[int, int], seed: int) -> Canvas:
    """`picture` at `offset` on a canvas of `size`, the rest filled; the mask and keep of that box."""
    known = np.zeros((size[1], size[0]), dtype=bool)
    x, y = offset
    known[y : y + picture.height, x : x + picture.width] = True
    filled = fill_around(picture, size, offset, np.random.default_rng(seed))
    mask, keep = seam_masks(known)
    return Canvas(filled, mask, keep)


def fill_around(
    picture: Image.Image, size: tuple[int, int], offset: tuple[int, int], rng: np.random.Generator
) -> Image.Image:
    """A canvas of `size` holding `picture` at `offset`; around it, the picture's edges mirrored
    outwards, blurred (so the model keeps their colours and light, not their details) plus noise."""
    arr = np.asarray(picture.convert("RGB"), dtype=np.float32)
    x, y = offset
    pads = ((y, size[1] - y - picture.height), (x, size[0] - x - picture.width), (0, 0))
    mirrored = np.pad(arr, pads, mode="symmetric")
    radius = max(MIN_SEAM, min(size) / 16)
    blurred = Image.fromarray(mirrored.round().astype(np.uint8)).filter(ImageFilter.GaussianBlur(radius))
    out = np.asarray(blurred, dtype=np.float32) + rng.normal(0.0, FILL_NOISE, mirrored.shape)
    out = np.clip(out.round(), 0, 255).astype(np.uint8)
    out[y : y + picture.height, x : x + picture.width] = np.asarray(picture.convert("RGB"))
    return Image.fromarray(out, "RGB")


# -- masks ------------------------------------------------------------------------------------------


def seam_width(size: tuple[int, int]) -> int:
    """The seam's width in pixels: 1/32 of the short side, at least one latent cell."""
    return max(MIN_SEAM, round(min(size) / 32))


def seam_masks(known: np.ndarray, seam: int | None = None) -> tuple[Image.Image, Image.Image]:
    """From a boolean array of the pixels to keep: the pipeline's mask (255 = redraw: what is not
    kept, grown by `seam` pixels into the kept area) and the paste-back weight (255 at least `seam`
    pixels from anything redrawn, ramping down to 0 at it). The picture's own border is no seam."""
    height, width = known.shape
    seam = seam_width((width, height)) if seam is None else seam
    weight = np.zeros(known.shape, dtype=np.float32)
    eroded = known
    for _ in range(seam):
        eroded = _erode(eroded)
        weight += eroded
    weight /= seam
    mask = np.where(weight < 1.0, 255, 0).astype(np.uint8)
    keep = np.round(weight * 255).astype(np.uint8)
    return Image.fromarray(mask, "L"), Image.fromarray(keep, "L")


def _erode(mask: np.ndarray) -> np.ndarray:
    """One step of erosion by a 3×3 square (the canvas edge extended, so it erodes nothing)."""
    padded = np.pad(mask, 1, mode="edge")
    rows = sliding_window_view(padded, 3, axis=0).min(axis=-1)
    result: np.ndarray = sliding_window_view(rows, 3, axis=1).min(axis=-1)
    return result


def region_mask(size: tuple[int, int], regions: tuple[str, ...] | list[str]) -> np.ndarray:
    """A boolean array (height × width), True over the named cells of the 3×3 grid."""
    width, height = size
    xs = [round(width * i / 3) for i in range(4)]
    ys = [round(height * i / 3) for i in range(4)]
    redraw = np.zeros((height, width), dtype=bool)
    for name in canonical_regions(regions):
        row, col = divmod(REGION_NAMES.index(name), 3)
        redraw[ys[row] : ys[row + 1], xs[col] : xs[col + 1]] = True
    return redraw


def normalise_mask(mask: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """A member's mask picture as a boolean array of `size` (True = redraw, where it is white):
    transparency counts as black, it is stretched to the picture, and grey splits at half."""
    if mask.mode in ("RGBA", "LA", "PA") or (mask.mode == "P" and "transparency" in mask.info):
        rgba = mask.convert("RGBA")
        flat = Image.new("L", rgba.size, 0)
        flat.paste(rgba.convert("L"), mask=rgba.getchannel("A"))
        grey = flat
    else:
        grey = mask.convert("L")
    redraw: np.ndarray = np.asarray(grey.resize(size, Image.Resampling.BILINEAR)) >= 128
    return redraw


def with_redraw_mask(source: Image.Image, mask: Image.Image) -> Image.Image:
    """`source` as RGBA, transparent where `mask` (a member's picture, see `normalise_mask`) is
    white: how an uploaded mask travels with its picture as one stored PNG (the convention of
    OpenAI's image edits: transparent = redraw). The colours under the transparency are kept."""
    redraw = normalise_mask(mask, source.size)
    if not redraw.any():
        raise EditError("That mask is all black: paint in white the part to redraw.")
    rgba = source.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.where(redraw, 0, 255).astype(np.uint8), "L"))
    return rgba


def carried_mask(image: Image.Image) -> Image.Image | None:
    """The redraw mask (white = redraw) a `with_redraw_mask` picture carries, or None."""
    if image.mode != "RGBA":
        return None
    alpha = image.getchannel("A")
    transparent = bool((np.asarray(alpha) < 128).any())
    return ImageOps.invert(alpha) if transparent else None


def region_canvas(
    source: Image.Image, regions: tuple[str, ...], uploaded_mask: Image.Image | None = None
) -> Canvas:
    """`Vary (Region)`: redraw the named grid cells and the white of `uploaded_mask`; the rest of
    `source` comes back as it was."""
    redraw = region_mask(source.size, regions)
    if uploaded_mask is not None:
        redraw |= normalise_mask(uploaded_mask, source.size)
    if not redraw.any():
        raise EditError("That mask is all black: paint in white the part to redraw.")
    mask, keep = seam_masks(~redraw)
    return Canvas(source, mask, keep)
