"""Edit requests through `DiffusersEngine.run_batch` on the real `tiny` pipelines (4- and 9-channel):
the canvas sizes, the kept pixels, the `Action:` line, batching and a 9-channel model as the main one."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from generation.media.canvas import SizeCap, canvas_size, prepare_canvas, with_redraw_mask
from generation.media.compose import read_parameters
from generation.pipelines.engine import DiffusersEngine
from generation.prompts.edits import Direction, EditKind, EditSpec, edit_spec
from generation.prompts.request import GenerationRequest, Mode, edit_of
from tests.fixtures_generation import png_pixels, same_within_rounding, tiny_request
from tests.test_inpaint import picture, png

pytest_plugins = ["tests.fixtures_generation"]

CAP = SizeCap.for_native(64)


def edit_request(spec: EditSpec, source: Image.Image, seeds: tuple[int, ...] = (5,)) -> GenerationRequest:
    parent = tiny_request(width=source.width, height=source.height)
    return edit_of(parent, spec, "ab" * 32, canvas_size(spec, source.size, CAP), seeds)


def no_stop(_step: int, _total: int, _preview: Any) -> bool:
    return True


@pytest.mark.parametrize(
    ("spec", "size"),
    [
        (edit_spec(EditKind.ZOOM_OUT, factor=2, of_job="0123456789ab"), (64, 48)),
        (edit_spec(EditKind.PAN, direction=Direction.RIGHT), (96, 48)),
        (edit_spec(EditKind.MAKE_SQUARE), (64, 64)),
        (edit_spec(EditKind.VARY_REGION, regions=("top",)), (64, 48)),
    ],
    ids=lambda v: v.describe() if isinstance(v, EditSpec) else str(v),
)
def test_an_edit_request_keeps_the_picture_and_says_what_was_done(
    tiny_engine: DiffusersEngine, spec: EditSpec, size: tuple[int, int]
) -> None:
    source = picture(3, (64, 48))
    request = edit_request(spec, source, (5, 6))
    assert (request.width, request.height) == size and request.mode is Mode.EDIT
    [images] = tiny_engine.run_batch([request], [png(source)], no_stop)
    assert len(images) == 2 and all((i.width, i.height) == size for i in images)
    canvas = prepare_canvas(spec, source, CAP, seed=5)
    assert canvas.keep is not None
    keep = np.asarray(canvas.keep) == 255
    for image in images:
        assert np.array_equal(png_pixels(image.png)[keep], np.asarray(canvas.image)[keep])
    text = read_parameters(images[0].png)
    assert text is not None and text.splitlines()[-1] == spec.action_text()
    assert "Denoising strength: 0.9" in text
    if spec.of_job:
        assert text.endswith("Action: zoom out 2x of job 0123456789ab")


def test_edits_of_one_kind_and_size_batch_and_equal_each_alone(tiny_engine: DiffusersEngine) -> None:
    two = edit_request(edit_spec(EditKind.ZOOM_OUT, factor=2), picture(1), (7,))
    one_and_half = edit_request(edit_spec(EditKind.ZOOM_OUT, factor=1.5), picture(2), (8,))
    assert two.batch_key() == one_and_half.batch_key()  # zoom factors share a pipeline call
    subtle = edit_request(edit_spec(EditKind.VARY_SUBTLE), picture(1), (7,))
    assert subtle.batch_key() != two.batch_key()
    sources = [png(picture(1)), png(picture(2))]
    together = tiny_engine.run_batch([two, one_and_half], sources, no_stop)
    pairs = zip([two, one_and_half], sources, strict=True)
    alone = [tiny_engine.run_batch([r], [s], no_stop)[0] for r, s in pairs]
    for got, expected in zip(together, alone, strict=True):
        assert same_within_rounding(got[0].png, expected[0].png)


def test_a_mask_carried_in_the_source_redraws_only_its_white(tiny_engine: DiffusersEngine) -> None:
    source = picture(4)
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (40, 40, 64, 64))  # the bottom-right corner only
    carried = with_redraw_mask(source, mask)
    spec = edit_spec(EditKind.VARY_REGION, mask_image="cd" * 32)
    [[image]] = tiny_engine.run_batch([edit_request(spec, source)], [png(carried)], no_stop)
    got = png_pixels(image.png).astype(np.int16)
    want = np.asarray(source, dtype=np.int16)
    assert np.array_equal(got[:24, :24], want[:24, :24])  # far from the mask: exact
    assert np.abs(got[48:, 48:] - want[48:, 48:]).mean() > 2  # under the mask: redrawn


def test_vary_and_upscale_run_image_to_image_at_their_size(tiny_engine: DiffusersEngine) -> None:
    source = picture(5, (64, 48))
    upscale = edit_request(edit_spec(EditKind.UPSCALE_CREATIVE), source)
    [[big]] = tiny_engine.run_batch([upscale], [png(source)], no_stop)
    assert (big.width, big.height) == (upscale.width, upscale.height) == (128, 96)
    vary = edit_request(edit_spec(EditKind.VARY_STRONG), source, (1, 2))
    [images] = tiny_engine.run_batch([vary], [png(source)], no_stop)
    assert [(i.width, i.height) for i in images] == [(64, 48)] * 2
    assert images[0].png != images[1].png


def test_a_stored_edit_request_round_trips() -> None:
    request = edit_request(edit_spec(EditKind.PAN, direction=Direction.UP, of_job="0123456789ab"), picture(1))
    assert GenerationRequest.from_json(request.to_json()) == request
    plain = tiny_request()
    assert GenerationRequest.from_json(plain.to_json()).edit is None


def test_a_9_channel_inpainting_model_draws_text_to_image_and_edits(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from generation.pipelines.loading import load_pipeline
    from generation.pipelines.tiny_inpaint import ensure_tiny_inpaint_model

    cache = tmp_path_factory.mktemp("imagine-inpaint-engine")
    engine = DiffusersEngine(load_pipeline(str(ensure_tiny_inpaint_model(cache)), "cpu", cache_dir=cache))
    [images] = engine.run_batch([tiny_request(seeds=(1, 2))], [None], no_stop)
    assert [(i.width, i.height) for i in images] == [(64, 64)] * 2 and images[0].png != images[1].png
    [again] = engine.run_batch([tiny_request(seeds=(1,))], [None], no_stop)
    assert same_within_rounding(again[0].png, images[0].png)  # its seed decides its picture
    source = picture(6)
    zoom = edit_request(edit_spec(EditKind.ZOOM_OUT, factor=2), source)
    [[zoomed]] = engine.run_batch([zoom], [png(source)], no_stop)
    canvas = prepare_canvas(zoom.edit or edit_spec(EditKind.VARY_SUBTLE), source, CAP, seed=5)
    assert canvas.keep is not None
    keep = np.asarray(canvas.keep) == 255
    assert np.array_equal(png_pixels(zoomed.png)[keep], np.asarray(canvas.image)[keep])
    variation = tiny_request(mode=Mode.VARIATION, strength=0.6, source_image="ef" * 32)
    [[varied]] = engine.run_batch([variation], [png(source)], no_stop)
    assert Image.open(io.BytesIO(varied.png)).size == (64, 64)
