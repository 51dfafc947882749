"""Qwen-Image-Edit and Qwen-Image-Edit-Plus on their tiny models (built from configs with a Qwen2-VL
processor made locally, loaded through diffusers' real `from_pretrained` without torchvision): they
are recognised, edit a picture from words at its size, take `--oref` and `/blend` as their own picture
input (Plus several pictures at once), run a batch of several requests one request a call (Plus's call
takes one prompt) with each image what it is alone, and refuse what they can't carry before anything
runs: a prompt with no picture, `--sref`, a weight, `--strength`."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from diffusers import QwenImageEditPipeline, QwenImageEditPlusPipeline
from PIL import Image

from generation.families.features import Guidance
from generation.media.compose import read_parameters
from generation.model_set import ModelSet
from generation.pipelines.contract import NoPreview
from generation.pipelines.engine import DiffusersEngine
from generation.pipelines.engine_pool import instruction_editor, load_engines
from generation.pipelines.processors import images_only_processors, torchvision_available
from generation.pipelines.references import InputReferences
from generation.prompts.errors import PromptError
from generation.prompts.parser import ParseContext, parse_prompt
from generation.prompts.references import Reference, ReferenceKind
from generation.prompts.request import GenerationRequest, Mode, PromptOptions, instruct_of

pytest_plugins = ["tests.fixtures_generation"]

URL = "http://127.0.0.1:1/attachments/1/ref.png"
EDIT, PLUS = "tiny-qwen-edit", "tiny-qwen-edit-plus"


def _png(seed: int, size: tuple[int, int] = (96, 64)) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


PICTURES = {hashlib.sha256(data).hexdigest(): data for data in (_png(1), _png(2), _png(3), _png(4))}
FIRST, SECOND, THIRD, FOURTH = PICTURES
SOURCE = _png(9)


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], DiffusersEngine]]:
    loaded: dict[str, DiffusersEngine] = {}
    cache = tmp_path_factory.mktemp("qwen-edit")

    def get(model_id: str) -> DiffusersEngine:
        if model_id not in loaded:
            loaded[model_id] = DiffusersEngine.load(model_id, "cpu", cache_dir=cache)
        return loaded[model_id]

    yield get
    loaded.clear()


@pytest.fixture
def inputs(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The `image` each edit pipeline call is handed (recorded; the real call runs). On the tiny random
    weights a picture moves the output by hundredths of a level, below a PNG's rounding: so the
    pictures are checked where the model takes them."""
    seen: list[Any] = []
    for cls in (QwenImageEditPipeline, QwenImageEditPlusPipeline):
        original = cls.__call__

        def recording(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            seen.append(kwargs.get("image"))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__call__", recording)
    return seen


def _same(picture: Any, png: bytes) -> bool:
    decoded = Image.open(io.BytesIO(png)).convert("RGB")
    return bool(np.array_equal(np.asarray(picture.convert("RGB")), np.asarray(decoded)))


def _request(model: str, seed: int = 5, **changes: Any) -> GenerationRequest:
    request = GenerationRequest("make it red", 96, 64, 2, 4.0, (seed,), model)
    return replace(request, **changes)


def _pixels(png: bytes) -> np.ndarray[Any, Any]:
    return np.asarray(Image.open(io.BytesIO(png)), np.int16)


def _parse(engine: DiffusersEngine, text: str, **context: Any) -> GenerationRequest:
    profile = replace(engine.profile, name=engine.profile.name)
    return parse_prompt(
        text, PromptOptions(), ParseContext(profile, lambda t: len(t.split()) + 2, lambda: 1, **context)
    )


@pytest.mark.parametrize(
    ("model_id", "family", "pictures"), [(EDIT, "qwen-image-edit", 1), (PLUS, "qwen-image-edit-plus", 3)]
)
def test_recognised_as_edit_models_loaded_without_torchvision(
    engines: Callable[[str], DiffusersEngine], model_id: str, family: str, pictures: int
) -> None:
    engine = engines(model_id)
    features = engine.profile.features
    assert features.family == family and features.guidance is Guidance.TRUE_CFG
    assert features.instruct and features.references and not features.reference_adapter
    assert not features.from_text and not features.strength and not features.edits
    assert engine.family.input_pictures == pictures
    assert isinstance(engine.references, InputReferences)
    assert instruction_editor(engine) is engine  # EDIT_MODEL takes it
    assert engine.profile.native_size == 1024  # the pipeline's 128 latent pixels × the VAE's 8
    folder = Path(engine.model.text2img.config._name_or_path)
    # transformers builds Qwen2-VL's processor with a torchvision video part: made without it here
    assert torchvision_available() or set(images_only_processors(folder)) == {"processor"}


@pytest.mark.parametrize("model_id", [EDIT, PLUS])
def test_an_edit_in_words_keeps_the_pictures_size_and_follows_the_words(
    engines: Callable[[str], DiffusersEngine], model_id: str, inputs: list[Any]
) -> None:
    engine = engines(model_id)
    instruct = _request(model_id, mode=Mode.INSTRUCT)
    [[red]] = engine.run_batch([instruct], [SOURCE], lambda *_: True)
    [[winter]] = engine.run_batch([replace(instruct, prompt="make it winter")], [SOURCE], lambda *_: True)
    assert (red.width, red.height) == (96, 64)
    assert not np.array_equal(_pixels(red.png), _pixels(winter.png))  # the words act
    [picture] = inputs[0]  # the picture is the model's input, as it is
    assert _same(picture, SOURCE)
    text = read_parameters(red.png) or ""
    assert text.startswith("make it red\n") and f"Model: {model_id}" in text and "Denoising" not in text


def test_plus_takes_several_pictures_as_its_own_input(
    engines: Callable[[str], DiffusersEngine], inputs: list[Any]
) -> None:
    engine = engines(PLUS)
    reference = Reference(ReferenceKind.BLEND, 100, (URL, URL), (SECOND, FIRST))
    [[image]] = engine.run_batch([_request(PLUS, references=(reference,))], [None], lambda *_: True, PICTURES)
    assert (image.width, image.height) == (96, 64)
    [given] = inputs  # each its own input ("Picture 1", "Picture 2"), in the member's order
    assert len(given) == 2 and _same(given[0], PICTURES[SECOND]) and _same(given[1], PICTURES[FIRST])
    assert "References: blend ×100:" in (read_parameters(image.png) or "")
    # beyond its three inputs, pictures are dealt into three: one strip holds the first and the fourth
    assert isinstance(engine.references, InputReferences)
    pictures = [Image.open(io.BytesIO(PICTURES[digest])) for digest in PICTURES]
    dealt = engine.references._input(pictures, _request(PLUS))
    assert len(dealt) == 3
    assert all(
        np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(dealt[1:], pictures[1:3], strict=True)
    )
    assert dealt[0].width > dealt[0].height  # side by side
    edit = engines(EDIT).references
    assert isinstance(edit, InputReferences)
    [strip] = edit._input(pictures[:2], _request(EDIT))  # Qwen-Image-Edit: one input, a strip
    assert strip.width > strip.height


def test_plus_runs_a_batch_one_request_a_call_each_as_alone(
    engines: Callable[[str], DiffusersEngine],
) -> None:
    engine = engines(PLUS)
    first = _request(PLUS, 5, mode=Mode.IMG2IMG, seeds=(5, 6))
    second = _request(PLUS, 7, mode=Mode.IMG2IMG)
    assert engine.max_batch_images(first) == 2  # one request a batch, however many images it has
    previews: list[tuple[int, bytes | None]] = []

    def on_step(step: int, total: int, preview: Callable[[int], bytes]) -> bool:
        for i in (0, 1):
            try:
                previews.append((i, preview(i)))
            except NoPreview:
                previews.append((i, None))
        return True

    together = engine.run_batch([first, second], [SOURCE, _png(10)], on_step)
    alone = [engine.run_batch([r], [s], lambda *_: True)[0] for r, s in ((first, SOURCE), (second, _png(10)))]
    assert [[i.png for i in images] for images in together] == [[i.png for i in images] for images in alone]
    assert [len(images) for images in together] == [2, 1]
    assert not np.array_equal(_pixels(together[0][0].png), _pixels(together[0][1].png))  # two seeds
    # while the first runs only it has a preview, then only the second
    shown = [i for i, png in previews if png is not None]
    assert shown == sorted(shown) and set(shown) == {0, 1}


def test_edit_takes_a_subject_as_its_own_input(
    engines: Callable[[str], DiffusersEngine], inputs: list[Any]
) -> None:
    engine = engines(EDIT)
    subject = Reference(ReferenceKind.SUBJECT, 100, (URL,), (FIRST,))
    request = _request(EDIT, references=(subject,), seeds=(5, 6))
    [[image, _second]] = engine.run_batch([request], [None], lambda *_: True, PICTURES)
    [per_image] = inputs  # one input per image: the subject, at about the result's pixel count
    assert len(per_image) == 2 and per_image[0] is per_image[1]
    assert per_image[0].width * per_image[0].height == pytest.approx(96 * 64, rel=0.2)
    assert f"References: subject ×100: {FIRST[:10]}" in (read_parameters(image.png) or "")


@pytest.mark.parametrize("model_id", [EDIT, PLUS])
def test_what_an_edit_model_cannot_carry_is_refused(
    engines: Callable[[str], DiffusersEngine], model_id: str
) -> None:
    engine = engines(model_id)
    with pytest.raises(
        PromptError, match=f"`{model_id}` .* only edits pictures.*`image`.*`--oref`.*`/blend`"
    ):
        _parse(engine, "a red fox")
    with pytest.raises(PromptError, match=r"A style reference .* doesn't work"):
        _parse(engine, f"a red fox --sref {URL}")
    with pytest.raises(PromptError, match="`--ow`"):
        _parse(engine, f"a red fox --oref {URL} --ow 300")
    with pytest.raises(PromptError, match="`--strength` doesn't work"):
        _parse(engine, "a red fox --strength 0.5", source_image="f" * 64)
    # what it does take: a picture to start from, or a subject picture
    assert _parse(engine, "a red fox", source_image="f" * 64).mode is Mode.IMG2IMG
    assert _parse(engine, f"a red fox --oref {URL}").references[0].kind is ReferenceKind.SUBJECT


def test_as_edit_model_it_is_loaded_on_first_edit_by_the_pool(tmp_path: Path) -> None:
    pool: Any = load_engines(
        ModelSet.parse("plain=tiny"), "cpu", cache_dir=tmp_path, options=None, edit_model=EDIT
    )
    assert EDIT not in pool.loaded and EDIT not in pool.catalog()  # asked for by Edit, never by `--model`
    request = instruct_of(
        source_hash=hashlib.sha256(SOURCE).hexdigest(),
        size=(96, 64),
        instruction="make it winter",
        edit_model=EDIT,
        seed=11,
    )
    [[image]] = pool.run_batch([request], [SOURCE], lambda *_: True)
    assert (image.width, image.height) == (96, 64) and EDIT in pool.loaded
    text = read_parameters(image.png) or ""
    assert text.startswith("make it winter\n") and f"Model: {EDIT}" in text
    pool.close()
