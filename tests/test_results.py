"""PNG results: the A1111 `parameters` chunk, grids, and re-encoding to fit an upload limit."""

from __future__ import annotations

import io
import random

import pytest
from PIL import Image

from generation.media.compose import encode_png, fit_to_size, grid_2x2, parameters_text, read_parameters
from generation.prompts.request import Mode
from tests.fixtures_generation import tiny_request

REQUEST = tiny_request(  # "a red fox in the snow", 64×64
    steps=20,
    guidance=7.0,
    seeds=(42, 43, 44, 45),
    model="dreamlike-art/dreamlike-photoreal-2.0",
    negative_prompt="text, watermark",
)


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.frombytes("RGB", (width, height), random.Random(seed).randbytes(width * height * 3))


def png_chunk_types(data: bytes) -> list[bytes]:
    types, pos = [], 8
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        types.append(data[pos + 4 : pos + 8])
        pos += 12 + length
    return types


def test_parameters_text_in_automatic1111_format() -> None:
    assert parameters_text(REQUEST, 42) == (
        "a red fox in the snow\n"
        "Negative prompt: text, watermark\n"
        "Steps: 20, Sampler: Euler a, CFG scale: 7.0, Seed: 42, Size: 64x64, "
        "Model: dreamlike-art/dreamlike-photoreal-2.0"
    )


def test_parameters_text_without_negative_with_sampler_and_denoising() -> None:
    from dataclasses import replace

    r = replace(REQUEST, negative_prompt="", mode=Mode.IMG2IMG, strength=0.6, guidance=7.5, model="C:\\m")
    text = parameters_text(r, 7, sampler="DPM++ 2M")
    assert "Negative prompt" not in text
    assert text.endswith(
        'Sampler: DPM++ 2M, CFG scale: 7.5, Seed: 7, Size: 64x64, Model: "C:\\\\m", Denoising strength: 0.6'
    )


def test_png_round_trip_latin1_uses_text_chunk() -> None:
    png = encode_png(noise(64, 64), REQUEST, 42)
    assert read_parameters(png) == parameters_text(REQUEST, 42)
    assert b"tEXt" in png_chunk_types(png)
    with Image.open(io.BytesIO(png)) as im:
        assert im.size == (64, 64) and im.format == "PNG"


def test_png_round_trip_non_latin_uses_itxt() -> None:
    from dataclasses import replace

    r = replace(REQUEST, prompt="ein Fuchs 狐 🦊 שלג\u200f", negative_prompt="文字")
    png = encode_png(noise(64, 64), r, 43)
    text = read_parameters(png)
    assert text is not None and text.startswith("ein Fuchs 狐 🦊 שלג\u200f\nNegative prompt: 文字\n")
    assert "Seed: 43" in text
    assert b"iTXt" in png_chunk_types(png)


def test_read_parameters_of_non_images_and_plain_pngs_is_none() -> None:
    assert read_parameters(b"not an image") is None
    buf = io.BytesIO()
    noise(8, 8).save(buf, format="PNG")
    assert read_parameters(buf.getvalue()) is None


@pytest.mark.parametrize(("count", "size"), [(2, (128, 64)), (3, (128, 128)), (4, (128, 128))])
def test_grid_sizes_and_seeds(count: int, size: tuple[int, int]) -> None:
    pngs = [encode_png(noise(64, 64, s), REQUEST, s) for s in REQUEST.seeds[:count]]
    grid = grid_2x2(pngs)
    with Image.open(io.BytesIO(grid)) as im:
        assert im.size == size
        first = Image.open(io.BytesIO(pngs[0])).convert("RGB")
        assert im.convert("RGB").crop((0, 0, 64, 64)).tobytes() == first.tobytes()
        if count == 3:  # the fourth cell is empty (black)
            assert im.convert("RGB").crop((64, 64, 128, 128)).getextrema() == ((0, 0), (0, 0), (0, 0))
    text = read_parameters(grid)
    assert text is not None
    assert text.startswith(parameters_text(REQUEST, 42))
    assert text.endswith(f'Seeds: "{", ".join(str(s) for s in REQUEST.seeds[:count])}"')


def test_grid_of_one_is_unchanged_and_of_none_refused() -> None:
    png = encode_png(noise(64, 64), REQUEST, 42)
    assert grid_2x2([png]) is png
    with pytest.raises(ValueError):
        grid_2x2([])


def test_fit_to_size_leaves_small_files_alone() -> None:
    png = encode_png(noise(32, 32), REQUEST, 42)
    assert fit_to_size(png, len(png)) == (png, "png")


def test_fit_to_size_recompresses_png_first() -> None:
    flat = Image.new("RGB", (256, 256), (10, 120, 200))
    buf = io.BytesIO()
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "x")
    flat.save(buf, format="PNG", compress_level=0, pnginfo=info)
    loose = buf.getvalue()
    data, ext = fit_to_size(loose, len(loose) // 10)
    assert ext == "png" and len(data) <= len(loose) // 10
    assert read_parameters(data) == "x"


def test_fit_to_size_under_a_small_limit_goes_to_jpeg_and_keeps_parameters() -> None:
    png = encode_png(noise(256, 256), REQUEST, 42)
    limit = 20_000
    data, ext = fit_to_size(png, limit)
    assert ext == "jpg" and len(data) <= limit < len(png)
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "JPEG"
    assert read_parameters(data) == parameters_text(REQUEST, 42)


def test_fit_to_size_impossible_limit_raises() -> None:
    png = encode_png(noise(64, 64), REQUEST, 42)
    with pytest.raises(ValueError):
        fit_to_size(png, 50)
