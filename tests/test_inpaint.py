"""Edits on the real diffusers pipelines of the `tiny` models (4- and 9-channel UNets), on the CPU."""

from __future__ import annotations

import copy
import io
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from generation.media.canvas import Canvas, SizeCap, prepare_canvas
from generation.pipelines.inpaint import (
    EditCall,
    EditPipelines,
    added_weight_bytes,
    pipeline_steps,
    run_edits,
)
from generation.prompts.edits import Direction, EditKind, EditSpec, edit_spec
from tests.fixtures_generation import same_within_rounding

pytest_plugins = ["tests.fixtures_generation"]

CAP = SizeCap.for_native(64)


@pytest.fixture(scope="module")
def tiny_pipes(tiny_model: Any) -> EditPipelines:
    """The tiny model's edit pipelines (the session's loaded model, shared)."""
    return EditPipelines.from_text2img(tiny_model.text2img, tiny_model.img2img)


@pytest.fixture(scope="module")
def inpaint_model(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The tiny 9-channel inpainting model, loaded as any local model folder is (`MODEL_ID=<folder>`);
    built in a cache of its own (the session's tiny cache holds the tiny model alone)."""
    from generation.pipelines.loading import load_pipeline
    from generation.pipelines.tiny_inpaint import ensure_tiny_inpaint_model

    cache = tmp_path_factory.mktemp("imagine-inpaint-cache")
    return load_pipeline(str(ensure_tiny_inpaint_model(cache)), "cpu", cache_dir=cache)


@pytest.fixture(scope="module")
def inpaint_pipes(inpaint_model: Any) -> EditPipelines:
    return EditPipelines.from_text2img(
        inpaint_model.text2img, fills=inpaint_model.family.fills(inpaint_model.text2img)
    )


def picture(seed: int, size: tuple[int, int] = (64, 64)) -> Image.Image:
    """A smooth picture with some structure (a gradient and a disc), different per seed."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = rng.integers(30, 220, 3)
    out = np.stack([base[c] + 30 * np.sin((xx + c * 7) / 9 + yy / 13) for c in range(3)], axis=-1)
    out[(xx - w / 2) ** 2 + (yy - h / 2) ** 2 < (min(w, h) / 4) ** 2] = rng.integers(0, 256, 3)
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), "RGB")


def call(spec: EditSpec, source: Image.Image, seeds: tuple[int, ...], prompt: str = "a fox") -> EditCall:
    return EditCall(prompt, "", seeds, prepare_canvas(spec, source, CAP, seed=seeds[0]))


def run(pipes: EditPipelines, spec: EditSpec, calls: list[EditCall]) -> list[list[Image.Image]]:
    return run_edits(pipes, calls, strength=spec.strength, steps=4, guidance=7.5)


def px(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def assert_kept_exactly_and_new_area_painted(canvas: Canvas, result: Image.Image) -> None:
    assert canvas.keep is not None and canvas.mask is not None
    keep = np.asarray(canvas.keep) == 255
    assert keep.any()
    assert np.array_equal(px(result)[keep], px(canvas.image)[keep])  # the seam masked, the rest exact
    beyond = np.asarray(canvas.keep) == 0
    assert np.abs(px(result)[beyond] - px(canvas.image)[beyond]).mean() > 2  # the model painted there


def storage(module: torch.nn.Module) -> list[int]:
    return [p.data_ptr() for p in module.parameters()]


def test_from_pipe_shares_the_loaded_weights(tiny_model: Any, tiny_pipes: EditPipelines) -> None:
    t2i = tiny_model.text2img
    for pipe in (tiny_pipes.inpaint, tiny_pipes.img2img):
        for name in ("unet", "vae", "text_encoder"):
            assert storage(getattr(pipe, name)) == storage(getattr(t2i, name)), name
    assert not tiny_pipes.fills
    assert added_weight_bytes(t2i, tiny_pipes.inpaint) == added_weight_bytes(t2i, tiny_pipes.img2img) == 0
    assert added_weight_bytes(t2i, copy.deepcopy(tiny_pipes.inpaint)) > 1_000_000  # a second copy counts
    made = EditPipelines.from_text2img(t2i)  # img2img made here too
    assert storage(made.img2img.unet) == storage(t2i.unet)


@pytest.mark.parametrize(
    "spec",
    [
        edit_spec(EditKind.ZOOM_OUT, factor=2),
        edit_spec(EditKind.ZOOM_OUT, factor=1.5),
        edit_spec(EditKind.PAN, direction=Direction.LEFT),
        edit_spec(EditKind.PAN, direction=Direction.DOWN),
        edit_spec(EditKind.VARY_REGION, regions=("top left", "center")),
    ],
    ids=lambda s: s.describe(),
)
def test_outpainting_and_regions_on_a_4_channel_unet(tiny_pipes: EditPipelines, spec: EditSpec) -> None:
    edit = call(spec, picture(1), (3, 4))
    [images] = run(tiny_pipes, spec, [edit])
    assert len(images) == 2
    assert all(image.size == edit.canvas.size for image in images)
    for image in images:
        assert_kept_exactly_and_new_area_painted(edit.canvas, image)
    assert not np.array_equal(px(images[0]), px(images[1]))  # one generator per image


def test_make_square_on_a_4_channel_unet(tiny_pipes: EditPipelines) -> None:
    spec = edit_spec(EditKind.MAKE_SQUARE)
    edit = call(spec, picture(2, (64, 40)), (5,))
    [[image]] = run(tiny_pipes, spec, [edit])
    assert image.size == (64, 64)
    assert_kept_exactly_and_new_area_painted(edit.canvas, image)


@pytest.mark.parametrize(
    ("kind", "size", "denoised"),
    [
        (EditKind.VARY_SUBTLE, (64, 64), 2),  # int(pipeline_steps(6, strength) * strength) steps run
        (EditKind.VARY_STRONG, (64, 64), 4),
        (EditKind.UPSCALE_SUBTLE, (128, 128), 1),
        (EditKind.UPSCALE_CREATIVE, (128, 128), 3),
    ],
)
def test_vary_and_upscale_redraw_the_picture_at_their_strength(
    tiny_pipes: EditPipelines, kind: EditKind, size: tuple[int, int], denoised: int
) -> None:
    spec = edit_spec(kind)
    steps: list[int] = []

    def count(_pipe: Any, step: int, _t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        steps.append(step)
        return tensors

    def edit(source: Image.Image) -> Image.Image:
        [[image]] = run_edits(
            tiny_pipes,
            [call(spec, source, (9,))],
            strength=spec.strength,
            steps=6,
            guidance=7.5,
            callback_on_step_end=count,
        )
        return image

    first = edit(picture(3))
    assert first.size == size
    assert len(steps) == denoised
    # it starts from the picture, not from noise (tiny's random VAE reads little of it, so: not equal)
    assert not np.array_equal(px(edit(picture(4))), px(first))


@pytest.mark.parametrize(
    "spec",
    [edit_spec(EditKind.ZOOM_OUT, factor=2), edit_spec(EditKind.VARY_SUBTLE)],
    ids=lambda s: s.describe(),
)
def test_a_batch_of_several_equals_each_alone(tiny_pipes: EditPipelines, spec: EditSpec) -> None:
    other = edit_spec(EditKind.ZOOM_OUT, factor=1.5) if spec.kind is EditKind.ZOOM_OUT else spec
    assert other.batch_key() == spec.batch_key()  # another zoom factor: its own mask, the same call
    calls = [
        call(spec, picture(5), (21, 22), prompt="a fox"),
        call(other, picture(6), (23,), prompt="an owl at night"),
    ]
    batched = run(tiny_pipes, spec, calls)
    alone = [run(tiny_pipes, spec, [c])[0] for c in calls]
    assert [len(images) for images in batched] == [2, 1]
    for got, expected in zip(batched, alone, strict=True):
        assert all(same_within_rounding(png(a), png(b)) for a, b in zip(got, expected, strict=True))


def test_an_inpainting_unet_is_used_as_one(inpaint_model: Any, inpaint_pipes: EditPipelines) -> None:
    assert inpaint_pipes.fills
    assert inpaint_model.text2img.unet.config.in_channels == 9
    assert storage(inpaint_pipes.inpaint.unet) == storage(inpaint_model.text2img.unet)
    spec = edit_spec(EditKind.ZOOM_OUT, factor=2)
    edit = call(spec, picture(7), (31, 32))
    [images] = run(inpaint_pipes, spec, [edit])
    for image in images:
        assert image.size == (64, 64)
        assert_kept_exactly_and_new_area_painted(edit.canvas, image)
    batched = run(inpaint_pipes, spec, [edit, call(spec, picture(8), (33,))])
    assert all(same_within_rounding(png(a), png(b)) for a, b in zip(batched[0], images, strict=True))


def test_an_inpainting_unet_also_varies_a_whole_picture(inpaint_pipes: EditPipelines) -> None:
    spec = edit_spec(EditKind.VARY_STRONG)
    [[one, two]] = run(inpaint_pipes, spec, [call(spec, picture(9), (41, 42))])
    assert one.size == two.size == (64, 64)
    assert not np.array_equal(px(one), px(two))


def test_a_batch_of_mixed_sizes_or_pipelines_is_refused(tiny_pipes: EditPipelines) -> None:
    zoom = call(edit_spec(EditKind.ZOOM_OUT, factor=2), picture(1), (1,))
    wide = call(edit_spec(EditKind.PAN, direction=Direction.LEFT), picture(1), (1,))
    vary = call(edit_spec(EditKind.VARY_SUBTLE), picture(1), (1,))
    with pytest.raises(ValueError, match="one size"):
        run_edits(tiny_pipes, [zoom, wide], strength=0.9, steps=4, guidance=7.5)
    with pytest.raises(ValueError, match="all be inpainting"):
        run_edits(tiny_pipes, [zoom, vary], strength=0.9, steps=4, guidance=7.5)
    with pytest.raises(ValueError, match="at least one"):
        run_edits(tiny_pipes, [], strength=0.9, steps=4, guidance=7.5)


def test_pipeline_steps_always_run_at_least_one() -> None:
    assert pipeline_steps(30, 0.35) == 30
    assert pipeline_steps(1, 0.25) == 4  # int(4 * 0.25) = 1 step runs
