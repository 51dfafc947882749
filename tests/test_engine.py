"""DiffusersEngine on the real diffusers pipeline with the tiny model, on the CPU."""

from __future__ import annotations

import io
import threading
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from generation.backends.protocol import GeneratedImage
from generation.media.compose import encode_png
from generation.pipelines import engine as engine_module
from generation.pipelines.contract import BatchInterrupted, OutOfMemory, PreviewFn
from generation.pipelines.engine import (
    CPU_MAX_BATCH_IMAGES,
    ENCODE_WORKERS,
    DiffusersEngine,
    encode_images,
    warm_up_shapes,
)
from generation.pipelines.preview import preview_png
from generation.prompts.request import Mode
from tests.fixtures_generation import png_pixels, tiny_request, tiny_source_png

pytest_plugins = ["tests.fixtures_generation"]


class StepLog:
    """An on_step callback that records (step, total) and stops after `stop_after` steps if given."""

    def __init__(self, stop_after: int | None = None, preview_of: int | None = None) -> None:
        self.steps: list[tuple[int, int]] = []
        self.previews: list[bytes] = []
        self.stop_after = stop_after
        self.preview_of = preview_of

    def __call__(self, step: int, total: int, preview: PreviewFn) -> bool:
        self.steps.append((step, total))
        if self.preview_of is not None:
            self.previews.append(preview(self.preview_of))
        return self.stop_after is None or step < self.stop_after


def pixels(image: GeneratedImage) -> np.ndarray:
    found = png_pixels(image.png)
    assert found.shape == (image.height, image.width, 3)
    return found


def run_one(engine: DiffusersEngine, **changes: Any) -> GeneratedImage:
    [[image]] = engine.run_batch([tiny_request(**changes)], [None], StepLog())
    return image


def test_same_seed_same_pixels_other_seed_other_pixels(tiny_engine: DiffusersEngine) -> None:
    first = run_one(tiny_engine, seeds=(7,))
    again = run_one(tiny_engine, seeds=(7,))
    other = run_one(tiny_engine, seeds=(8,))
    assert np.array_equal(pixels(first), pixels(again))
    assert np.abs(pixels(first) - pixels(other)).mean() > 5
    assert (first.seed, first.width, first.height, first.nsfw) == (7, 64, 64, False)


def test_warm_up_runs_each_shape_and_changes_no_result(
    tiny_engine: DiffusersEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = run_one(tiny_engine, seeds=(7,))
    shapes: list[tuple[int, int, int]] = []
    real_run_batch = tiny_engine.run_batch

    def counting(requests: Any, sources: Any, on_step: Any) -> Any:
        shapes.extend((r.count, r.width, r.height) for r in requests)
        return real_run_batch(requests, sources, on_step)

    monkeypatch.setattr(tiny_engine, "run_batch", counting)
    assert tiny_engine.warm_up() > 0
    # two batch sizes at the native size, then two other aspects: each dimension seen with two values
    assert shapes == warm_up_shapes(tiny_engine.profile)
    assert {n for n, _, _ in shapes} == {1, 2} and len({(w, h) for _, w, h in shapes}) == 3
    assert shapes[0] == (1, 64, 64) and shapes[2][1] > shapes[2][2] and shapes[3][1] < shapes[3][2]
    monkeypatch.undo()
    assert np.array_equal(pixels(before), pixels(run_one(tiny_engine, seeds=(7,))))


def test_png_carries_its_parameters(tiny_engine: DiffusersEngine) -> None:
    image = run_one(tiny_engine, seeds=(42,), negative_prompt="text")
    with Image.open(io.BytesIO(image.png)) as opened:
        text = opened.info["parameters"]
    assert "a red fox in the snow" in text
    assert "Negative prompt: text" in text
    assert "Seed: 42" in text
    assert "Sampler: Euler," in text  # the tiny model's scheduler, not a guess


def test_a_batch_equals_its_images_made_alone(tiny_engine: DiffusersEngine) -> None:
    fox = tiny_request(seeds=(1, 2, 3))
    cat = tiny_request(prompt="a cat on a sofa", negative_prompt="blurry", seeds=(9,))
    steps = StepLog()
    together = tiny_engine.run_batch([fox, cat], [None, None], steps)
    assert [[i.seed for i in images] for images in together] == [[1, 2, 3], [9]]
    assert steps.steps == [(1, 4), (2, 4), (3, 4), (4, 4)]
    alone = [run_one(tiny_engine, seeds=(s,)) for s in (1, 2, 3)]
    alone.append(run_one(tiny_engine, prompt="a cat on a sofa", negative_prompt="blurry", seeds=(9,)))
    for batched, single in zip([*together[0], *together[1]], alone, strict=True):
        assert np.abs(pixels(batched) - pixels(single)).max() <= 1


def test_img2img_starts_from_the_source_at_the_requests_size(tiny_engine: DiffusersEngine) -> None:
    request = tiny_request(mode=Mode.IMG2IMG, strength=0.5, width=64, height=48, seeds=(3,))
    steps = StepLog()
    [[red]] = tiny_engine.run_batch([request], [tiny_source_png((220, 30, 30), size=(100, 60))], steps)
    [[blue]] = tiny_engine.run_batch([request], [tiny_source_png((30, 30, 220), size=(100, 60))], StepLog())
    assert (red.width, red.height) == (64, 48)
    assert steps.steps == [(1, 2), (2, 2)]  # diffusers runs int(steps × strength) steps
    # random weights cannot keep colours, but the source must change the picture
    assert not np.array_equal(pixels(red), pixels(blue))


def test_upscale_and_variation_output_sizes(tiny_engine: DiffusersEngine) -> None:
    source = run_one(tiny_engine, seeds=(5,))
    upscale = tiny_request(mode=Mode.UPSCALE, strength=0.35, width=128, height=128, seeds=(5,))
    [[big]] = tiny_engine.run_batch([upscale], [source.png], StepLog())
    assert (big.width, big.height) == (128, 128)
    variation = tiny_request(mode=Mode.VARIATION, strength=0.6, seeds=(11, 12))
    [images] = tiny_engine.run_batch([variation], [source.png], StepLog())
    assert [(i.seed, i.width, i.height) for i in images] == [(11, 64, 64), (12, 64, 64)]
    assert not np.array_equal(pixels(images[0]), pixels(images[1]))


def test_a_single_step_img2img_still_runs_one_step(tiny_engine: DiffusersEngine) -> None:
    request = tiny_request(mode=Mode.UPSCALE, strength=0.35, steps=1, width=128, height=128)
    steps = StepLog()
    [[image]] = tiny_engine.run_batch([request], [tiny_source_png()], steps)
    assert steps.steps == [(1, 1)]
    assert image.width == 128


def test_on_step_returning_false_interrupts_the_batch(tiny_engine: DiffusersEngine) -> None:
    steps = StepLog(stop_after=2)
    with pytest.raises(BatchInterrupted):
        tiny_engine.run_batch([tiny_request(seeds=(1, 2))], [None], steps)
    assert steps.steps == [(1, 4), (2, 4)]


def test_preview_is_a_small_png_of_each_requests_first_image(tiny_engine: DiffusersEngine) -> None:
    first, second = StepLog(preview_of=0), StepLog(preview_of=1)
    requests = [tiny_request(seeds=(1, 2)), tiny_request(seeds=(3,))]
    tiny_engine.run_batch(requests, [None, None], first)
    tiny_engine.run_batch(requests, [None, None], second)
    assert len(first.previews) == 4
    for png in first.previews + second.previews:
        with Image.open(io.BytesIO(png)) as opened:
            assert opened.format == "PNG"
            assert opened.mode == "RGB"
            assert max(opened.size) <= 128
    assert first.previews[-1] != second.previews[-1]  # request 1's first image is seed 3, not seed 1
    assert first.previews[0] != first.previews[-1]  # the picture changes as it denoises


def test_preview_keeps_the_aspect_and_stays_small() -> None:
    latents = np.random.default_rng(0).standard_normal((4, 64, 96)).astype(np.float32)
    with Image.open(io.BytesIO(preview_png(latents))) as opened:
        assert opened.size == (128, 85)
    with Image.open(io.BytesIO(preview_png(latents[:, :8, :8], kind="sdxl"))) as opened:
        assert opened.size == (64, 64)


def test_injected_safety_checker_flags_reach_the_images(tiny_model: Any) -> None:
    seen: list[int] = []

    def flag_second(images: list[Image.Image]) -> list[bool]:
        seen.append(len(images))
        return [i == 1 for i in range(len(images))]

    engine = DiffusersEngine(tiny_model, safety_checker=flag_second)
    assert engine.profile.has_safety_checker
    result = engine.run_batch([tiny_request(seeds=(1,)), tiny_request(seeds=(2, 3))], [None, None], StepLog())
    assert seen == [3]
    assert [[i.nsfw for i in images] for images in result] == [[False], [True, False]]
    assert pixels(result[1][0]).max() > 0  # flagged, never blacked out


def test_out_of_memory_becomes_engine_out_of_memory(tiny_model: Any) -> None:
    engine = DiffusersEngine(tiny_model)
    errors = [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"),
        RuntimeError("MPS backend out of memory"),
    ]
    for error in errors:

        def fail(*_args: Any, error: Exception = error) -> None:
            raise error

        handle = tiny_model.text2img.unet.register_forward_pre_hook(fail)
        try:
            with pytest.raises(OutOfMemory) as caught:
                engine.run_batch([tiny_request()], [None], StepLog())
        finally:
            handle.remove()
        assert caught.value.__cause__ is error


def test_other_errors_pass_through(tiny_model: Any) -> None:
    engine = DiffusersEngine(tiny_model)

    def fail(*_args: Any) -> None:
        raise RuntimeError("expected scalar type Half")

    handle = tiny_model.text2img.unet.register_forward_pre_hook(fail)
    try:
        with pytest.raises(RuntimeError, match="scalar type"):
            engine.run_batch([tiny_request()], [None], StepLog())
    finally:
        handle.remove()


def test_bad_batches_are_refused(tiny_engine: DiffusersEngine) -> None:
    with pytest.raises(ValueError, match="batch_key"):
        tiny_engine.run_batch([tiny_request(), tiny_request(steps=5)], [None, None], StepLog())
    with pytest.raises(ValueError, match="source"):
        tiny_engine.run_batch([tiny_request(mode=Mode.IMG2IMG, strength=0.5)], [None], StepLog())
    with pytest.raises(ValueError, match="sources"):
        tiny_engine.run_batch([tiny_request()], [], StepLog())


def test_count_tokens_counts_begin_and_end_without_truncating(tiny_engine: DiffusersEngine) -> None:
    assert tiny_engine.count_tokens("") == 2
    assert tiny_engine.count_tokens("a red fox") == 2 + 1 + 3 + 3  # the tiny tokenizer: one per byte
    assert tiny_engine.count_tokens("x" * 100) == 102


def test_max_batch_images_on_cpu(tiny_engine: DiffusersEngine) -> None:
    assert (
        tiny_engine.max_batch_images(replace(tiny_request(), width=512, height=512)) == CPU_MAX_BATCH_IMAGES
    )


def noise_image(side: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (side, side + 8, 3), dtype=np.uint8), "RGB")


def test_parallel_png_encoding_gives_the_bytes_of_serial_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    fox = tiny_request(seeds=(1, 2, 3))
    cat = tiny_request(prompt="un chat sur un canapé ✓", seeds=(9,))  # non-Latin-1: an iTXt chunk
    owners = [(fox, 1), (fox, 2), (fox, 3), (cat, 9)]
    images = [noise_image(96, seed) for seed in range(4)]
    pairs = zip(images, owners, strict=True)
    serial = [encode_png(image, r, seed, sampler="Euler") for image, (r, seed) in pairs]
    threads: list[str] = []

    def recording_encode_png(*args: Any, **kwargs: Any) -> bytes:
        threads.append(threading.current_thread().name)
        return encode_png(*args, **kwargs)

    monkeypatch.setattr(engine_module, "encode_png", recording_encode_png)
    assert encode_images(images, owners, sampler="Euler") == serial
    if ENCODE_WORKERS >= 2:  # encoded on the pool, not in the calling thread
        assert len(threads) == 4 and all(name.startswith("png-encode") for name in threads)
    assert encode_images(images[:1], owners[:1], sampler="Euler") == serial[:1]
    assert threads[-1] == threading.current_thread().name  # one image: no hand-off
    with pytest.raises(ValueError, match="owners"):
        encode_images(images, owners[:3], sampler="Euler")


def test_a_batchs_pngs_are_what_serial_encoding_of_its_images_makes(tiny_engine: DiffusersEngine) -> None:
    fox = tiny_request(seeds=(1, 2))
    cat = tiny_request(prompt="a cat on a sofa", seeds=(9,))
    together = tiny_engine.run_batch([fox, cat], [None, None], StepLog())
    for request, images in zip([fox, cat], together, strict=True):
        for image in images:
            with Image.open(io.BytesIO(image.png)) as opened:
                decoded = opened.convert("RGB")  # PNG is lossless: the very image that was encoded
            serial = encode_png(
                decoded,
                request,
                image.seed,
                sampler=tiny_engine.sampler,
                model_hash=tiny_engine.model.model_hash,
            )
            assert image.png == serial


def test_a_source_picture_is_flattened_onto_white_and_fit_to_the_request() -> None:
    buf = io.BytesIO()
    Image.new("RGBA", (30, 20), (0, 0, 0, 0)).save(buf, format="PNG")
    request = tiny_request(mode=Mode.IMG2IMG, width=64, height=32, source_image="0" * 64, strength=0.5)
    fitted = engine_module._source_for(buf.getvalue(), request)
    assert fitted.mode == "RGB" and fitted.size == (64, 32)
    assert fitted.getpixel((0, 0)) == (255, 255, 255)  # transparency is white, not black
    with pytest.raises(ValueError, match="needs a source image"):
        engine_module._source_for(None, request)
