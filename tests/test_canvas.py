"""Canvases of one picture's edits: sizes and aspect, kept pixels, masks, the fill, the size cap."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from generation.media.canvas import (
    Canvas,
    SizeCap,
    canvas_size,
    fill_around,
    make_square,
    normalise_mask,
    pan,
    paste_back,
    prepare_canvas,
    region_canvas,
    region_mask,
    seam_masks,
    seam_width,
    upscaled,
    zoom_out,
)
from generation.prompts.edits import REGION_NAMES, Direction, EditError, EditKind, edit_spec

CAP = SizeCap.for_native(64)  # the tiny model's: 16384 pixels, sides in multiples of 8


def noise_picture(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def arr(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def kept(canvas: Canvas) -> np.ndarray:
    assert canvas.keep is not None
    found: np.ndarray = np.asarray(canvas.keep) == 255
    return found


def redrawn(canvas: Canvas) -> np.ndarray:
    assert canvas.mask is not None
    found: np.ndarray = np.asarray(canvas.mask) == 255
    return found


def test_size_cap_follows_the_models_native_size() -> None:
    assert SizeCap.for_native(64) == SizeCap(16384, 8)
    assert SizeCap.for_native(512) == SizeCap(4 * 512 * 512, 64)


@pytest.mark.parametrize("factor", [2.0, 1.5, 1.25])
def test_zoom_out_keeps_size_and_puts_the_shrunk_picture_in_the_middle(factor: float) -> None:
    source = noise_picture(96, 64)
    canvas = zoom_out(source, factor, seed=3)
    assert canvas.size == (96, 64)
    iw, ih = round(96 / factor), round(64 / factor)
    x, y = (96 - iw) // 2, (64 - ih) // 2
    shrunk = arr(source.resize((iw, ih), Image.Resampling.LANCZOS))
    assert np.array_equal(arr(canvas.image)[y : y + ih, x : x + iw], shrunk)
    keep, mask = kept(canvas), redrawn(canvas)
    outside = np.ones((64, 96), dtype=bool)
    outside[y : y + ih, x : x + iw] = False
    assert mask[outside].all() and not keep[outside].any()  # the ring around it is redrawn
    seam = seam_width((96, 64))
    assert keep[y + seam : y + ih - seam, x + seam : x + iw - seam].all()  # inside the seam: kept
    assert np.array_equal(mask, ~keep)  # the seam is redrawn and blended, the rest kept


@pytest.mark.parametrize(
    ("direction", "size"),
    [
        (Direction.LEFT, (96, 64)),
        (Direction.RIGHT, (96, 64)),
        (Direction.UP, (64, 96)),
        (Direction.DOWN, (64, 96)),
    ],
)
def test_pan_grows_by_half_and_keeps_the_picture_on_the_other_side(
    direction: Direction, size: tuple[int, int]
) -> None:
    source = noise_picture(64, 64)
    canvas = pan(source, direction, CAP, seed=1)
    assert canvas.size == size
    x, y = {Direction.LEFT: (32, 0), Direction.RIGHT: (0, 0), Direction.UP: (0, 32), Direction.DOWN: (0, 0)}[
        direction
    ]
    assert np.array_equal(arr(canvas.image)[y : y + 64, x : x + 64], arr(source))
    keep = kept(canvas)
    seam = seam_width(size)
    # exactly kept: the picture less a seam on its inner side only (the canvas edge is no seam)
    expected = np.zeros((size[1], size[0]), dtype=bool)
    expected[y : y + 64, x : x + 64] = True
    if direction is Direction.LEFT:
        expected[:, x : x + seam] = False
    elif direction is Direction.RIGHT:
        expected[:, 64 - seam : 64] = False
    elif direction is Direction.UP:
        expected[y : y + seam, :] = False
    else:
        expected[64 - seam : 64, :] = False
    assert np.array_equal(keep, expected)


def test_pan_past_the_size_cap_scales_the_whole_down_to_fit() -> None:
    source = noise_picture(128, 128)  # at the tiny model's cap already
    canvas = pan(source, Direction.RIGHT, CAP, seed=1)
    width, height = canvas.size
    assert width * height <= CAP.max_pixels
    assert width % 8 == 0 and height % 8 == 0
    assert abs(width / height - 1.5) < 0.1  # still about half as wide again
    # the picture spans the full height at its new scale, flush left
    keep = np.asarray(canvas.keep)
    assert (keep[:, 0] == 255).all()
    picture = source.resize((height, height), Image.Resampling.LANCZOS)
    assert np.array_equal(arr(canvas.image)[:, :height], arr(picture))
    assert redrawn(canvas)[:, height:].all()


def test_make_square_grows_the_short_sides_and_refuses_a_square() -> None:
    tall = noise_picture(40, 64)
    canvas = make_square(tall, CAP, seed=0)
    assert canvas.size == (64, 64)
    assert np.array_equal(arr(canvas.image)[:, 12:52], arr(tall))
    assert redrawn(canvas)[:, :12].all() and redrawn(canvas)[:, 52:].all()
    assert kept(canvas)[:, 12 + 8 : 52 - 8].all()
    with pytest.raises(EditError, match="already square"):
        make_square(noise_picture(64, 64), CAP)
    capped = make_square(noise_picture(160, 96), CAP)  # 160² would pass the cap
    assert capped.size == (128, 128)


def test_upscale_doubles_within_the_cap() -> None:
    assert upscaled(noise_picture(64, 64), CAP).size == (128, 128)
    wide = upscaled(noise_picture(96, 64), CAP)  # 192×128 would pass the cap
    assert wide.size[0] * wide.size[1] <= CAP.max_pixels and wide.size[0] > 96
    assert abs(wide.size[0] / wide.size[1] - 1.5) < 0.1
    assert upscaled(noise_picture(128, 128), CAP).size == (128, 128)  # at the cap: as it is


def test_each_region_name_is_its_third_of_the_grid() -> None:
    size = (96, 63)
    cells = []
    for index, name in enumerate(REGION_NAMES):
        mask = region_mask(size, [name])
        row, col = divmod(index, 3)
        expected = np.zeros((63, 96), dtype=bool)
        expected[row * 21 : (row + 1) * 21, col * 32 : (col + 1) * 32] = True
        assert np.array_equal(mask, expected), name
        cells.append(mask)
    assert np.array_equal(region_mask(size, list(REGION_NAMES)), np.ones((63, 96), dtype=bool))
    assert not np.logical_and(cells[0], cells[1]).any()


def test_region_canvas_redraws_the_chosen_cells_and_keeps_the_rest() -> None:
    source = noise_picture(96, 96)
    canvas = region_canvas(source, ("center",))
    assert canvas.image is source
    mask, keep = redrawn(canvas), kept(canvas)
    seam = seam_width((96, 96))
    assert mask[32:64, 32:64].all()
    assert keep[: 32 - seam].all() and keep[64 + seam :].all()
    assert not keep[32 - seam : 64 + seam, 32 - seam : 64 + seam].any()


def test_uploaded_masks_are_white_to_redraw_transparent_as_black_and_stretched() -> None:
    rgba = Image.new("RGBA", (20, 10), (255, 255, 255, 0))  # transparent white: keep
    rgba.paste((255, 255, 255, 255), (0, 0, 10, 10))  # opaque white on the left: redraw
    found = normalise_mask(rgba, (40, 20))
    assert found.shape == (20, 40)
    assert found[:, :19].all() and not found[:, 21:].any()
    grey = Image.new("L", (4, 4), 100)
    assert not normalise_mask(grey, (8, 8)).any()
    canvas = region_canvas(noise_picture(40, 20), (), rgba)
    assert redrawn(canvas)[:, :19].all()
    with pytest.raises(EditError, match="all black"):
        region_canvas(noise_picture(40, 20), (), Image.new("RGB", (40, 20), "black"))


def test_the_fill_continues_the_edges_with_noise_not_a_flat_border() -> None:
    half = np.zeros((64, 64, 3), dtype=np.uint8)
    half[:32] = (220, 30, 30)  # red on top, blue below
    half[32:] = (30, 30, 220)
    source = Image.fromarray(half, "RGB")
    filled = arr(fill_around(source, (96, 64), (32, 0), np.random.default_rng(5)))
    strip = filled[:, :24]  # new area on the left, away from the picture's blur
    assert strip[:, :, 0].std() > 5  # noise and continuation: not flat
    top, bottom = strip[:20].mean(axis=(0, 1)), strip[-20:].mean(axis=(0, 1))
    assert top[0] > top[2] + 100 and bottom[2] > bottom[0] + 100  # each row continues its own colour
    again = arr(fill_around(source, (96, 64), (32, 0), np.random.default_rng(5)))
    other = arr(fill_around(source, (96, 64), (32, 0), np.random.default_rng(6)))
    assert np.array_equal(filled, again) and not np.array_equal(filled, other)


def test_paste_back_is_exact_where_kept_generated_where_redrawn_and_blended_between() -> None:
    source = noise_picture(64, 64, seed=1)
    canvas = zoom_out(source, 2.0, seed=0)
    generated = noise_picture(64, 64, seed=2)
    result = arr(paste_back(generated, canvas))
    keep = np.asarray(canvas.keep)
    assert np.array_equal(result[keep == 255], arr(canvas.image)[keep == 255])
    assert np.array_equal(result[keep == 0], arr(generated)[keep == 0])
    seam = (keep > 0) & (keep < 255)
    assert seam.any()
    low = np.minimum(arr(canvas.image), arr(generated))[seam]
    high = np.maximum(arr(canvas.image), arr(generated))[seam]
    assert ((result[seam] >= low) & (result[seam] <= high)).all()
    with pytest.raises(ValueError, match="canvas"):
        paste_back(noise_picture(32, 32), canvas)


def test_seam_weight_ramps_over_its_width_and_the_canvas_edge_is_no_seam() -> None:
    known = np.zeros((16, 32), dtype=bool)
    known[:, 16:] = True
    mask, keep = seam_masks(known, seam=4)
    row = np.asarray(keep)[5]
    assert list(row[14:22]) == [0, 0, 0, 64, 128, 191, 255, 255]
    assert (np.asarray(keep)[:, 20:] == 255).all()  # top, bottom and right canvas edges erode nothing
    assert np.array_equal(np.asarray(mask) == 255, np.asarray(keep) < 255)


def test_prepare_canvas_picks_each_kinds_canvas() -> None:
    source = noise_picture(64, 64)
    sizes = {
        edit_spec(EditKind.VARY_SUBTLE): ((64, 64), False),
        edit_spec(EditKind.VARY_STRONG): ((64, 64), False),
        edit_spec(EditKind.UPSCALE_SUBTLE): ((128, 128), False),
        edit_spec(EditKind.UPSCALE_CREATIVE): ((128, 128), False),
        edit_spec(EditKind.ZOOM_OUT, factor=2): ((64, 64), True),
        edit_spec(EditKind.PAN, direction=Direction.UP): ((64, 96), True),
        edit_spec(EditKind.VARY_REGION, regions=("top",)): ((64, 64), True),
    }
    for spec, (size, masked) in sizes.items():
        canvas = prepare_canvas(spec, source, CAP, seed=0)
        assert (canvas.size, canvas.mask is not None) == (size, masked), spec
    square = prepare_canvas(edit_spec(EditKind.MAKE_SQUARE), noise_picture(64, 48), CAP)
    assert square.size == (64, 64)
    odd = prepare_canvas(edit_spec(EditKind.VARY_SUBTLE), noise_picture(61, 47), CAP)  # not of 8s
    assert odd.size[0] % 8 == 0 and odd.size[1] % 8 == 0


@pytest.mark.parametrize("size", [(64, 64), (64, 48), (48, 64), (61, 47), (128, 128), (160, 96)])
def test_canvas_size_is_the_size_prepare_canvas_gives_without_drawing(size: tuple[int, int]) -> None:
    source = noise_picture(*size)
    specs = [
        edit_spec(EditKind.VARY_SUBTLE),
        edit_spec(EditKind.UPSCALE_CREATIVE),
        edit_spec(EditKind.ZOOM_OUT, factor=1.5),
        edit_spec(EditKind.VARY_REGION, regions=("center",)),
        *(edit_spec(EditKind.PAN, direction=d) for d in Direction),
    ]
    if size[0] != size[1]:
        specs.append(edit_spec(EditKind.MAKE_SQUARE))
    for spec in specs:
        assert canvas_size(spec, size, CAP) == prepare_canvas(spec, source, CAP).size, spec
    if size[0] == size[1]:
        with pytest.raises(EditError, match="already square"):
            canvas_size(edit_spec(EditKind.MAKE_SQUARE), size, CAP)
