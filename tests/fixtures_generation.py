"""Shared fixtures for tests that run the real diffusers pipeline on the built-in `tiny` model.

Expose them with `pytest_plugins = ["tests.fixtures_generation"]` in tests/conftest.py. The model is
built once per test session (into a session temp folder) and loaded once on the CPU.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from generation.prompts.request import GenerationRequest, Mode


@pytest.fixture(scope="session")
def tiny_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder holding the built `tiny` model (pass it as `cache_dir=`)."""
    from generation.pipelines.tiny import ensure_tiny_model

    cache = tmp_path_factory.mktemp("imagine-cache")
    ensure_tiny_model(cache)
    return cache


@pytest.fixture(scope="session")
def tiny_model(tiny_cache_dir: Path) -> Any:
    """The `tiny` model loaded on the CPU (a `generation.pipelines.loading.LoadedModel`); don't mutate it."""
    from generation.pipelines.loading import load_pipeline

    return load_pipeline("tiny", "cpu", cache_dir=tiny_cache_dir)


@pytest.fixture
def tiny_engine(tiny_model: Any) -> Iterator[Any]:
    """A `generation.pipelines.engine.DiffusersEngine` over the session's tiny model."""
    from generation.pipelines.engine import DiffusersEngine

    yield DiffusersEngine(tiny_model)


def tiny_request(**changes: Any) -> GenerationRequest:
    """A small, fast txt2img request for the tiny model; keyword arguments replace fields."""
    base = GenerationRequest(
        prompt="a red fox in the snow",
        width=64,
        height=64,
        steps=4,
        guidance=7.5,
        seeds=(1,),
        model="tiny",
    )
    return replace(base, **changes)


def tiny_source_png(color: tuple[int, int, int] = (200, 40, 40), size: tuple[int, int] = (64, 64)) -> bytes:
    """A plain picture (PNG bytes) to start image-to-image from."""
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


@contextlib.contextmanager
def nan_decoding(vae: Any, images: Sequence[int] | None = None) -> Iterator[None]:
    """While open, `vae`'s decoder emits NaN for the batch's `images` (all when None): a pipeline
    made to go non-finite, as an fp16 overflow does on a real GPU."""

    def poison(_module: Any, _inputs: Any, output: Any) -> Any:
        chosen = range(len(output)) if images is None else images
        output = output.clone()
        for i in chosen:
            output[i] = float("nan")
        return output

    handle = vae.decoder.register_forward_hook(poison)
    try:
        yield
    finally:
        handle.remove()


__all__ = [
    "Mode",
    "nan_decoding",
    "tiny_cache_dir",
    "tiny_engine",
    "tiny_model",
    "tiny_request",
    "tiny_source_png",
]


def png_pixels(png: bytes) -> np.ndarray:
    """A PNG's RGB pixels as int16, so differences can be taken without wrapping."""
    with Image.open(io.BytesIO(png)) as opened:
        return np.asarray(opened.convert("RGB"), dtype=np.int16)


def same_within_rounding(a: bytes, b: bytes) -> bool:
    """Equal pictures up to one level of 8-bit rounding: a batched image against the same image
    alone differs by float summation order only (different matmul shapes), never by more."""
    pa, pb = png_pixels(a), png_pixels(b)
    return pa.shape == pb.shape and int(np.abs(pa - pb).max()) <= 1
