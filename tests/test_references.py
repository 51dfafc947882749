"""Style and subject references on the engine (`generation.pipelines.references`) and in the parser: on
the tiny model with its tiny IP-Adapter (built locally from configs, loaded through diffusers' real
`load_ip_adapter`), a reference changes the pixels, weight 0 gives the plain picture's pixels, the
same picture twice is encoded once, a batch of different references equals each alone, the PNG names
its references; the flags' refusals; and a family without an adapter refuses them."""

from __future__ import annotations

import hashlib
import io
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from generation.families.adapters import NO_REFERENCE_ADAPTER, AdapterSpec, parse_adapter
from generation.families.sd3 import SD35_LARGE_BLOCKS, SD35_LARGE_IP_ADAPTER
from generation.families.sd3 import recognise as recognise_sd3
from generation.media.compose import read_parameters
from generation.pipelines.contract import BatchFailed
from generation.pipelines.engine import DiffusersEngine
from generation.pipelines.ip_adapters import ReferenceAdapter, TransformerReferenceAdapter
from generation.pipelines.redux import ReduxReferences
from generation.pipelines.references import InputReferences
from generation.pipelines.tiny_families import ensure_tiny_family
from generation.pipelines.tiny_ip_adapter import (
    TINY_IP_ADAPTER_ENCODER,
    TINY_IP_ADAPTER_PLUS_WEIGHT,
    TINY_IP_ADAPTER_WEIGHT,
    ensure_tiny_ip_adapter,
)
from generation.prompts.errors import PromptError
from generation.prompts.parser import ParseContext, parse_prompt
from generation.prompts.references import Reference, ReferenceKind, adapter_scale
from generation.prompts.request import GenerationRequest, ModelProfile, PromptOptions

pytest_plugins = ["tests.fixtures_generation"]

URL = "http://127.0.0.1:1/attachments/1/ref.png"


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


PICTURES = {hashlib.sha256(data).hexdigest(): data for data in (_png(1), _png(2), _png(3))}
FIRST, SECOND, THIRD = PICTURES


@pytest.fixture(scope="module")
def engine(tiny_cache_dir: Path) -> DiffusersEngine:
    """A tiny model of its own: loading the adapter changes its UNet (the shared `tiny_model` stays bare)."""
    return DiffusersEngine.load("tiny", "cpu", cache_dir=tiny_cache_dir)


def _request(seed: int = 5, *references: Reference) -> GenerationRequest:
    return GenerationRequest(
        prompt="a red fox",
        width=64,
        height=64,
        steps=4,
        guidance=7.5,
        seeds=(seed,),
        model="tiny",
        references=references,
    )


def _style(weight: int, *images: str) -> Reference:
    return Reference(ReferenceKind.STYLE, weight, tuple(URL for _ in images), images)


def _subject(weight: int, image: str) -> Reference:
    return Reference(ReferenceKind.SUBJECT, weight, (URL,), (image,))


def _pixels(engine: DiffusersEngine, *requests: GenerationRequest) -> list[np.ndarray[Any, Any]]:
    out = engine.run_batch(list(requests), [None] * len(requests), lambda *_: True, PICTURES)
    return [np.asarray(Image.open(io.BytesIO(images[0].png)), np.int16) for images in out]


def test_a_reference_changes_the_picture_and_weight_zero_gives_the_plain_one(engine: DiffusersEngine) -> None:
    [plain] = _pixels(engine, _request())
    [off] = _pixels(engine, _request(5, _style(0, FIRST)))
    [styled] = _pixels(engine, _request(5, _style(100, FIRST)))
    [strong] = _pixels(engine, _request(5, _style(1000, FIRST)))
    [subject] = _pixels(engine, _request(5, _subject(100, FIRST)))
    np.testing.assert_array_equal(off, plain)  # scale 0: the adapter's attention is skipped
    assert isinstance(engine.references, ReferenceAdapter) and engine.references.loaded
    change, stronger = np.abs(styled - plain).mean(), np.abs(strong - plain).mean()
    assert 1 < change < stronger  # --sw 1000 moves it further than 100
    assert np.abs(subject - styled).mean() > 1  # every layer, not the style layers alone
    [after] = _pixels(engine, _request())
    np.testing.assert_array_equal(after, plain)  # the adapter, loaded, leaves plain jobs alone


def test_the_same_picture_is_encoded_once(engine: DiffusersEngine) -> None:
    _pixels(engine, _request(7, _style(100, THIRD)))
    adapter = engine.references
    assert isinstance(adapter, ReferenceAdapter)
    computed, cached = adapter.embeds_computed, adapter.embeds_cached
    _pixels(engine, _request(8, _style(100, THIRD)))
    assert (adapter.embeds_computed, adapter.embeds_cached) == (computed, cached + 1)


def test_a_batch_of_different_references_equals_each_alone(engine: DiffusersEngine) -> None:
    one, two = _request(3, _style(100, FIRST)), _request(4, _style(100, SECOND, THIRD))
    assert one.batch_key() == two.batch_key()  # kinds and weights batch; pictures are per sample
    together = _pixels(engine, one, two)
    alone = _pixels(engine, one) + _pixels(engine, two)
    for batched, single in zip(together, alone, strict=True):
        assert np.abs(batched - single).max() <= 1  # one call, each image its own embedding
    assert np.abs(together[0] - together[1]).mean() > 1


def test_the_png_names_each_reference_with_its_hash_and_origin(engine: DiffusersEngine) -> None:
    request = _request(9, _style(250, FIRST, SECOND), _subject(40, THIRD))
    [[image]] = engine.run_batch([request], [None], lambda *_: True, PICTURES)
    text = read_parameters(image.png) or ""
    line = text.splitlines()[-1]
    style = f"style ×250: {FIRST[:10]} ({URL}), {SECOND[:10]} ({URL})"
    assert line == f"References: {style}; subject ×40: {THIRD[:10]} ({URL})"


@pytest.fixture(scope="module")
def plus(
    tiny_cache_dir: Path, engine: DiffusersEngine, tmp_path_factory: pytest.TempPathFactory
) -> DiffusersEngine:
    """`tiny` with the plus kind of the tiny IP-Adapter (a resampler over the encoder's hidden states),
    named as MODELS' `ref=` names one."""
    folder = ensure_tiny_ip_adapter(tmp_path_factory.mktemp("plus"), dict(engine.model.text2img.unet.config))
    spec = AdapterSpec(str(folder), "", TINY_IP_ADAPTER_PLUS_WEIGHT, TINY_IP_ADAPTER_ENCODER)
    return DiffusersEngine.load("tiny", "cpu", cache_dir=tiny_cache_dir, reference_adapter=spec)


def test_the_plus_kind_takes_a_subject_from_the_encoders_hidden_states(plus: DiffusersEngine) -> None:
    [plain] = _pixels(plus, _request())
    [off] = _pixels(plus, _request(5, _subject(1, FIRST)))
    [subject] = _pixels(plus, _request(5, _subject(100, FIRST)))
    [other] = _pixels(plus, _request(5, _subject(100, SECOND)))
    adapter = plus.references
    assert isinstance(adapter, ReferenceAdapter) and adapter._wants_hidden_states()
    assert np.abs(off - plain).mean() < 0.5 < 1 < np.abs(subject - plain).mean()  # the weight scales it
    assert np.abs(subject - other).mean() > 1  # the picture's own states


def test_an_encoder_named_apart_is_the_one_loaded(
    engine: DiffusersEngine, tiny_cache_dir: Path, tmp_path: Path
) -> None:
    """`ref=…@encoder`: the image encoder from its own folder (SDXL's plus ViT-H kinds read one that is
    not beside their weights); here a copy of the tiny encoder, reseeded, so the pictures tell them apart."""
    from transformers import CLIPVisionModelWithProjection

    folder = ensure_tiny_ip_adapter(tmp_path / "adapter", dict(engine.model.text2img.unet.config))
    bundled = CLIPVisionModelWithProjection.from_pretrained(folder / TINY_IP_ADAPTER_ENCODER)
    torch.manual_seed(7)
    CLIPVisionModelWithProjection(bundled.config).save_pretrained(tmp_path / "other-encoder")
    spec = AdapterSpec(str(folder), "", TINY_IP_ADAPTER_WEIGHT, encoder=str(tmp_path / "other-encoder"))
    assert parse_adapter(spec.describe()) == spec
    apart = DiffusersEngine.load("tiny", "cpu", cache_dir=tiny_cache_dir, reference_adapter=spec)
    beside = DiffusersEngine.load(
        "tiny", "cpu", cache_dir=tiny_cache_dir, reference_adapter=replace(spec, encoder="")
    )
    [mine], [theirs] = (_pixels(e, _request(5, _subject(100, FIRST))) for e in (apart, beside))
    loaded = apart.model.text2img.image_encoder
    assert torch.equal(
        next(loaded.parameters()),
        next(CLIPVisionModelWithProjection.from_pretrained(tmp_path / "other-encoder").parameters()),
    )
    assert not np.array_equal(mine, theirs)  # another encoder: other embeddings


@pytest.mark.parametrize("kind", ["basic", "plus"])
def test_the_embeddings_handed_over_are_diffusers_own(
    engine: DiffusersEngine, plus: DiffusersEngine, kind: str
) -> None:
    """For one picture per slot, both slots are what diffusers' `prepare_ip_adapter_image_embeds` makes
    of it (the unconditional half included: zeros for the basic kind, a blank picture's hidden states
    for the plus kind), so a reference means what the adapter was trained on."""
    chosen = engine if kind == "basic" else plus
    adapter = chosen.references
    assert isinstance(adapter, ReferenceAdapter)
    adapter.load()
    pipe = chosen.model.text2img
    request = _request(5, _style(100, FIRST), _subject(100, SECOND))
    ours = adapter._slots([request], PICTURES, {"guidance_scale": 7.5})
    pictures = [Image.open(io.BytesIO(PICTURES[d])).convert("RGB") for d in (FIRST, SECOND)]
    own = type(pipe).prepare_ip_adapter_image_embeds(pipe, pictures, None, pipe.device, 1, True)
    for mine, theirs in zip(ours, own, strict=True):
        torch.testing.assert_close(mine, theirs)


def test_weights_map_onto_the_adapter_scale() -> None:
    assert (adapter_scale(0), adapter_scale(100), adapter_scale(1000)) == (0.0, 0.6, 1.5)
    assert adapter_scale(50) == pytest.approx(0.3) and adapter_scale(550) == pytest.approx(1.05)


def test_a_family_without_an_adapter_or_ref_none_has_no_references(tmp_path: Path, tiny_model: Any) -> None:
    # an SD 3 model by its folder (not the built-in id): not SD 3.5 Large, so no adapter of its own
    folder = ensure_tiny_family(tmp_path, "tiny-sd3")
    sd3 = DiffusersEngine.load(str(folder), "cpu", cache_dir=tmp_path)
    assert sd3.references is None and not sd3.profile.features.references
    with pytest.raises(PromptError, match=r"Style and subject references .* doesn't work .* `ref=`"):
        _parse(f"a fox --sref {URL}", replace(sd3.profile, name="mine"))
    plain = DiffusersEngine(tiny_model, reference_adapter=NO_REFERENCE_ADAPTER)  # MODELS' `ref=none`
    assert plain.references is None and not plain.profile.features.references
    with pytest.raises(BatchFailed, match="Style and subject references doesn't work on `tiny`"):
        plain.run_batch([_request(1, _style(100, FIRST))], [None], lambda *_: True, PICTURES)


# -- the parser ------------------------------------------------------------------------------------------


def _parse(text: str, profile: ModelProfile, **attached: str) -> GenerationRequest:
    context = ParseContext(
        profile,
        lambda t: len(t.split()) + 2,
        lambda: 1,
        attached={ReferenceKind(kind): url for kind, url in attached.items()},
    )
    return parse_prompt(text, PromptOptions(), context)


def test_the_reference_flags_parse(engine: DiffusersEngine) -> None:
    profile = engine.profile
    request = _parse(f"a fox --sref {URL} {URL}2 --sw 300 --oref {URL}3", profile)
    assert request.references == (
        Reference(ReferenceKind.STYLE, 300, (URL, f"{URL}2")),
        Reference(ReferenceKind.SUBJECT, 100, (f"{URL}3",)),
    )
    attached = _parse("a fox --ow 7", profile, subject=URL)
    assert attached.references == (Reference(ReferenceKind.SUBJECT, 7, (URL,)),)
    assert _parse("a fox", profile).references == ()
    assert replace(request, references=()).batch_key() != request.batch_key()


@pytest.mark.parametrize(
    ("text", "attached", "message"),
    [
        (f"a fox --sref {URL} {URL} {URL} {URL} {URL}", {}, "at most 4 style pictures"),
        (f"a fox --sref {URL} {URL} {URL} {URL}", {"style": URL}, "at most 4 style pictures"),
        (f"a fox --oref {URL} {URL}", {}, "`--oref` takes one value"),
        (f"a fox --oref {URL}", {"subject": URL}, "one subject picture"),
        ("a fox --sw 200", {}, "give `--sref` or the `style_image` option too"),
        (f"a fox --sref {URL} --ow 5", {}, "give `--oref` too"),
        (f"a fox --sref {URL} --sw 1001", {}, "between 0 and 1000"),
        (f"a fox --oref {URL} --ow 0", {}, "between 1 and 1000"),
        (f"a fox --sref {URL} --sw high", {}, "whole number"),
    ],
)
def test_bad_reference_flags_are_refused(
    engine: DiffusersEngine, text: str, attached: dict[str, str], message: str
) -> None:
    with pytest.raises(PromptError, match=message):
        _parse(text, engine.profile, **attached)


def test_a_model_without_an_adapter_refuses_references(engine: DiffusersEngine) -> None:
    features = replace(engine.profile.features, references=False, label="Flux.1")
    flux = replace(engine.profile, name="flux", features=features)
    with pytest.raises(
        PromptError, match=r"references .* doesn't work on `flux` \(Flux.1\)\. Reference pictures need"
    ):
        _parse(f"a fox --sref {URL}", flux)


# -- a model that takes references as its own picture input (Kontext) ------------------------------------


@pytest.fixture(scope="module")
def kontext(tmp_path_factory: pytest.TempPathFactory) -> DiffusersEngine:
    return DiffusersEngine.load("tiny-kontext", "cpu", cache_dir=tmp_path_factory.mktemp("kontext"))


def _kontext_request(seed: int, *references: Reference) -> GenerationRequest:
    return replace(_request(seed, *references), model="tiny-kontext", width=128, height=128, guidance=3.5)


def test_kontext_takes_a_subject_or_a_blend_as_its_own_input(kontext: DiffusersEngine) -> None:
    features = kontext.profile.features
    assert isinstance(kontext.references, InputReferences)
    assert features.supported()["--oref"] and not features.supported()["--sref"]
    blend_reference = Reference(ReferenceKind.BLEND, 100, (URL, URL), (FIRST, SECOND))
    [plain], [subject], [other], [blend] = (
        _pixels(kontext, _kontext_request(4, *references))
        for references in ((), (_subject(100, FIRST),), (_subject(100, SECOND),), (blend_reference,))
    )
    assert plain.shape == subject.shape == blend.shape == (128, 128, 3)
    # the picture is the model's input (random tiny weights pass little of it through: small, but there)
    assert not np.array_equal(plain, subject) and not np.array_equal(subject, other)
    assert not np.array_equal(subject, blend)
    [[image]] = kontext.run_batch(
        [_kontext_request(4, _subject(100, FIRST))], [None], lambda *_: True, PICTURES
    )
    assert f"References: subject ×100: {FIRST[:10]}" in (read_parameters(image.png) or "")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"a fox --sref {URL}", "A style reference .* doesn't work on `tiny-kontext` .* a subject"),
        (f"a fox --oref {URL} --ow 300", r"`--ow` \(its picture input has no weight\) doesn't work"),
    ],
)
def test_kontext_refuses_a_style_or_a_weight(kontext: DiffusersEngine, text: str, message: str) -> None:
    with pytest.raises(PromptError, match=message):
        _parse(text, replace(kontext.profile, name="tiny-kontext"))


def test_kontext_takes_one_picture_image_or_subject(kontext: DiffusersEngine) -> None:
    context = ParseContext(
        replace(kontext.profile, name="tiny-kontext"),
        lambda t: len(t.split()) + 2,
        lambda: 1,
        source_image="f" * 64,
    )
    with pytest.raises(PromptError, match="give `image` or a subject picture"):
        parse_prompt(f"a fox --oref {URL}", PromptOptions(), context)


# -- Flux.1 through Flux Redux -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flux(tmp_path_factory: pytest.TempPathFactory) -> DiffusersEngine:
    return DiffusersEngine.load("tiny-flux", "cpu", cache_dir=tmp_path_factory.mktemp("flux-redux"))


def _flux_request(seed: int, *references: Reference) -> GenerationRequest:
    return replace(_request(seed, *references), model="tiny-flux", width=128, height=128, guidance=3.5)


def test_flux_takes_references_through_redux(flux: DiffusersEngine) -> None:
    adapter = flux.references
    assert isinstance(adapter, ReduxReferences) and not adapter.loaded
    assert flux.profile.features.supported()["--sref"] and flux.profile.features.supported()["--oref"]
    [plain], [off], [styled], [both] = (
        _pixels(flux, _flux_request(4, *references))
        for references in (
            (),
            (_style(0, FIRST),),
            (_style(100, FIRST),),
            (_style(100, FIRST), _subject(300, SECOND)),
        )
    )
    np.testing.assert_array_equal(off, plain)  # weight 0: no tokens added, the plain call
    # the picture's tokens reach the transformer (random tiny weights pass little of them through)
    assert adapter.loaded and not np.array_equal(styled, plain) and not np.array_equal(both, styled)
    computed = adapter.embeds_computed
    _pixels(flux, _flux_request(5, _style(100, FIRST)))
    assert adapter.embeds_computed == computed  # the same picture: its tokens from the cache
    one, two = _flux_request(3, _style(100, FIRST)), _flux_request(4, _style(100, SECOND, THIRD))
    for batched, single in zip(_pixels(flux, one, two), _pixels(flux, one) + _pixels(flux, two), strict=True):
        assert np.abs(batched - single).max() <= 1  # one call, each image its own tokens
    weighted = replace(_flux_request(6, _style(100, FIRST)), prompt="a (red:1.3) fox", prompt_windows=1)
    [[image]] = flux.run_batch([weighted], [None], lambda *_: True, PICTURES)  # after the weighted encoder
    assert f"References: style ×100: {FIRST[:10]}" in (read_parameters(image.png) or "")


def test_flux_fill_takes_references_through_redux_on_every_picture_it_redraws(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    fill = DiffusersEngine.load("tiny-flux-fill", "cpu", cache_dir=tmp_path_factory.mktemp("fill-redux"))
    assert isinstance(fill.references, ReduxReferences)
    request = replace(_flux_request(4), model="tiny-flux-fill")
    [plain], [off], [styled] = (
        _pixels(fill, replace(request, references=references))
        for references in ((), (_style(0, FIRST),), (_style(100, FIRST),))
    )
    np.testing.assert_array_equal(off, plain)  # weight 0: the plain call
    assert not np.array_equal(styled, plain)  # the masked call (a blank canvas redrawn) takes the tokens
    assert fill.references.embeds_computed == 1


# -- SD 3 through its IP-Adapter (one slot) ---------------------------------------------------------------


@pytest.fixture(scope="module")
def sd3(tmp_path_factory: pytest.TempPathFactory) -> DiffusersEngine:
    return DiffusersEngine.load("tiny-sd3", "cpu", cache_dir=tmp_path_factory.mktemp("sd3-ip"))


def _sd3_request(seed: int, *references: Reference) -> GenerationRequest:
    return replace(_request(seed, *references), model="tiny-sd3")


def test_sd3_takes_a_reference_through_its_ip_adapter(sd3: DiffusersEngine) -> None:
    adapter = sd3.references
    assert isinstance(adapter, TransformerReferenceAdapter) and not adapter.loaded
    [plain], [off], [styled], [subject] = (
        _pixels(sd3, _sd3_request(4, *references))
        for references in ((), (_style(0, FIRST),), (_style(100, FIRST),), (_subject(100, SECOND),))
    )
    np.testing.assert_array_equal(off, plain)  # weight 0: no embeddings, the plain call
    assert adapter.loaded and np.abs(styled - plain).mean() > 1
    assert not np.array_equal(subject, styled)  # another picture (every block takes either kind)
    [after] = _pixels(sd3, _sd3_request(4))
    np.testing.assert_array_equal(after, plain)  # loaded, it leaves plain jobs alone
    computed = adapter.embeds_computed
    one, two = _sd3_request(3, _style(100, FIRST)), _sd3_request(4, _style(100, SECOND, THIRD))
    assert adapter.embeds_computed == computed
    for batched, single in zip(_pixels(sd3, one, two), _pixels(sd3, one) + _pixels(sd3, two), strict=True):
        assert np.abs(batched - single).max() <= 1  # one call, each image its own embedding
    assert adapter.embeds_computed == computed + 1  # THIRD is new; FIRST and SECOND cached


def test_sd3_takes_one_reference_kind_at_a_time(sd3: DiffusersEngine) -> None:
    profile = replace(sd3.profile, name="tiny-sd3")
    with pytest.raises(
        PromptError, match="A style and a subject reference together doesn't work on `tiny-sd3`"
    ):
        _parse(f"a fox --sref {URL} --oref {URL}2", profile)
    assert _parse(f"a fox --sref {URL}", profile).references[0].kind is ReferenceKind.STYLE


def test_sd35_large_has_instantx_adapter_with_its_siglip_by_default() -> None:
    large = recognise_sd3("StableDiffusion3Pipeline", {"transformer": {"num_layers": SD35_LARGE_BLOCKS}})
    medium = recognise_sd3("StableDiffusion3Pipeline", {"transformer": {"num_layers": 24}})
    assert large is not None and large.reference_adapter == SD35_LARGE_IP_ADAPTER
    assert medium is not None and medium.reference_adapter is None
    spec = parse_adapter(SD35_LARGE_IP_ADAPTER.describe())  # MODELS' `ref=` writes it back
    assert spec == SD35_LARGE_IP_ADAPTER and spec.encoder == "google/siglip-so400m-patch14-384"
