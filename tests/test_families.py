"""Every model family on its tiny model (built from configs, loaded through `from_pretrained`): it is
recognised from its pipeline and configs, and every feature of PRODUCT.md "Every model family" either
acts (changes the pixels or the PNG's parameters) or is refused before anything runs, naming the model.
No exception, no flag silently ignored."""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from generation.families.features import Guidance
from generation.media.compose import read_parameters
from generation.pipelines.engine import DiffusersEngine
from generation.prompts.command import parse_command
from generation.prompts.errors import PromptError
from generation.prompts.request import GenerationRequest, Mode, PromptOptions
from tests.fixtures_generation import png_pixels, same_within_rounding, tiny_source_png

pytest_plugins = ["tests.fixtures_generation"]

# model id → (family, native size, guidance kind, image-to-image, samplers it takes)
FAMILIES: dict[str, tuple[str, int, Guidance, bool, tuple[str, ...]]] = {
    "tiny": ("sd", 64, Guidance.CLASSIC, True, ("euler", "ddim", "dpmpp_2m_karras", "heun")),
    "tiny-sdxl": ("sdxl", 64, Guidance.CLASSIC, True, ("euler", "euler_a", "unipc")),
    "tiny-sd3": ("sd3", 64, Guidance.CLASSIC, True, ("euler", "euler_a", "dpmpp_2m", "unipc")),
    "tiny-flux": ("flux", 128, Guidance.EMBEDDED, True, ("euler", "dpmpp_2m", "unipc")),
    "tiny-flux-schnell": ("flux", 128, Guidance.NONE, True, ("euler", "unipc")),
    "tiny-kontext": ("flux-kontext", 128, Guidance.EMBEDDED, True, ("euler", "unipc")),
    "tiny-flux-fill": ("flux-fill", 128, Guidance.EMBEDDED, True, ("euler", "euler_a")),
    "tiny-qwen": ("qwen-image", 128, Guidance.TRUE_CFG, True, ("euler", "unipc")),
    "tiny-pixart": ("pixart", 256, Guidance.CLASSIC, False, ("euler", "dpmpp_2m")),
    "tiny-aura": ("generic", 64, Guidance.CLASSIC, False, ()),
}


@pytest.fixture(scope="module")
def engines(tiny_cache_dir: Path) -> Iterator[Callable[[str], DiffusersEngine]]:
    """A family's engine by model id, loaded on first use and kept for the module."""
    loaded: dict[str, DiffusersEngine] = {}

    def get(model_id: str) -> DiffusersEngine:
        if model_id not in loaded:
            loaded[model_id] = DiffusersEngine.load(model_id, "cpu", cache_dir=tiny_cache_dir)
        return loaded[model_id]

    yield get
    loaded.clear()


def parse(engine: DiffusersEngine, text: str, source: str | None = None) -> GenerationRequest:
    seeds = itertools.count(11)
    (request,) = parse_command(
        text,
        PromptOptions(),
        engine.profile,
        count_tokens=engine.count_tokens,
        random_seed=lambda: next(seeds),
        source_image=source,
    )
    return request


def draw(engine: DiffusersEngine, request: GenerationRequest, source: bytes | None = None) -> bytes:
    ((image,),) = engine.run_batch([request], [source], lambda *_: True)
    assert png_pixels(image.png).std() > 0.5  # a picture, not a flat (or NaN-black) field
    return image.png


def differs(a: bytes, b: bytes) -> bool:
    return bool(np.abs(png_pixels(a) - png_pixels(b)).max() > 0)


BASE = "a red fox in the snow --steps 2 --n 1 --seed 5"


@pytest.mark.parametrize("model_id", list(FAMILIES))
def test_the_family_is_recognised_from_the_pipeline_and_its_defaults_come_from_the_model(
    engines: Callable[[str], DiffusersEngine], model_id: str
) -> None:
    family, native, guidance, image, _samplers = FAMILIES[model_id]
    engine = engines(model_id)
    features = engine.profile.features
    assert (features.family, engine.profile.native_size, features.guidance) == (family, native, guidance)
    fills = engine.family.fills(engine.model.text2img)  # an inpainting model redraws pictures itself
    assert features.image is image and (engine.model.img2img is not None or fills) is image
    request = parse(engine, BASE)
    assert (request.width, request.height) == (native, native)
    assert request.width % features.size_step == 0
    png = draw(engine, request)
    text = read_parameters(png) or ""
    assert f"Model: {model_id}" in text and f"Size: {native}x{native}" in text
    if guidance is Guidance.NONE:
        assert request.guidance == 0.0


@pytest.mark.parametrize("model_id", list(FAMILIES))
def test_the_token_limit_is_the_longest_encoders(
    engines: Callable[[str], DiffusersEngine], model_id: str
) -> None:
    engine = engines(model_id)
    limit = engine.profile.token_limit
    if model_id not in ("tiny", "tiny-sdxl", "tiny-qwen", "tiny-aura"):
        assert limit > 77  # T5 reads far more than CLIP's 77
    assert engine.count_tokens("a red fox") <= limit
    with pytest.raises(PromptError, match="over this model's limit"):
        parse(engine, "fox " * (4 * limit))  # past it (and past SD's weighted windows too)


@pytest.mark.parametrize("model_id", list(FAMILIES))
def test_cfg_and_negative_act_or_are_refused(
    engines: Callable[[str], DiffusersEngine], model_id: str
) -> None:
    engine = engines(model_id)
    features = engine.profile.features
    base = draw(engine, parse(engine, BASE))
    if features.guidance is Guidance.NONE:
        with pytest.raises(PromptError, match=f"`--cfg`.*doesn't work on `{model_id}`"):
            parse(engine, f"{BASE} --cfg 5")
    else:
        assert differs(base, draw(engine, parse(engine, f"{BASE} --cfg 9")))
    if features.negative:
        negative = parse(engine, f"{BASE} --no blurry, text")
        assert negative.true_cfg == features.true_cfg_for(pushed_away=True)
        assert differs(base, draw(engine, negative))
    else:
        with pytest.raises(PromptError, match=f"doesn't work on `{model_id}`"):
            parse(engine, f"{BASE} --no blurry")


@pytest.mark.parametrize("model_id", list(FAMILIES))
def test_samplers_run_as_named_or_are_refused_with_the_list(
    engines: Callable[[str], DiffusersEngine], model_id: str
) -> None:
    engine = engines(model_id)
    offered = engine.profile.features.samplers
    assert set(FAMILIES[model_id][4]) <= set(offered)
    for name in FAMILIES[model_id][4]:
        png = draw(engine, parse(engine, f"{BASE} --sampler {name}"))
        assert "Sampler: " in (read_parameters(png) or "")
    refused = next((n for n in ("ddim", "heun", "euler") if n not in offered), None)
    if refused is not None:
        with pytest.raises(PromptError, match="doesn't work on this model"):
            parse(engine, f"{BASE} --sampler {refused}")


@pytest.mark.parametrize("model_id", ["tiny-sd3", "tiny-flux", "tiny-qwen"])
def test_a_flow_models_samplers_from_a_picture_are_the_ones_its_picture_calls_take(
    engines: Callable[[str], DiffusersEngine], model_id: str
) -> None:
    engine = engines(model_id)
    source = tiny_source_png(size=(engine.profile.native_size,) * 2)
    with pytest.raises(PromptError, match=r"`--sampler` unipc doesn't work from a picture.*euler, euler_a"):
        parse(engine, f"{BASE} --sampler unipc", source="ab" * 32)
    euler_a = draw(engine, parse(engine, f"{BASE} --sampler euler_a", source="ab" * 32), source)
    assert "Sampler: Euler a" in (read_parameters(euler_a) or "")
    # a variation keeps its parent's sampler: one the call can't run from a picture gives way to the
    # model's own, and the PNG says which ran
    parent = parse(engine, f"{BASE} --sampler unipc")
    variation = replace(parent, mode=Mode.VARIATION, strength=0.6, source_image="ab" * 32)
    text = read_parameters(draw(engine, variation, source)) or ""
    assert f"Sampler: {engine.sampler}," in text and "UniPC" not in text


@pytest.mark.parametrize("model_id", list(FAMILIES))
def test_tile_chaos_stop_and_image_act_or_are_refused(
    engines: Callable[[str], DiffusersEngine], model_id: str
) -> None:
    engine = engines(model_id)
    features = engine.profile.features
    base = draw(engine, parse(engine, BASE))
    for flag, able in (("--tile", features.tile), ("--stop 50", features.stop)):
        if able:
            assert differs(base, draw(engine, parse(engine, f"{BASE} {flag}"))), flag
        else:
            with pytest.raises(PromptError, match=f"doesn't work on `{model_id}`"):
                parse(engine, f"{BASE} {flag}")
    grid = "a red fox --steps 2 --n 2 --seed 5"
    if features.chaos:
        calm, wild = parse(engine, f"{grid} --chaos 0"), parse(engine, f"{grid} --chaos 100")
        calm_pngs = [i.png for i in engine.run_batch([calm], [None], lambda *_: True)[0]]
        wild_pngs = [i.png for i in engine.run_batch([wild], [None], lambda *_: True)[0]]
        assert not differs(*calm_pngs) and differs(*wild_pngs)  # chaos 0: one picture twice
    else:
        with pytest.raises(PromptError, match=f"doesn't work on `{model_id}`"):
            parse(engine, f"{grid} --chaos 50")
    if features.image:
        source = tiny_source_png(size=(engine.profile.native_size,) * 2)
        # 5 steps: at 2, diffusers' int(2 - 2 × 0.6) = 0 skips none and starts from pure noise, where
        # an inpainting model (Flux Fill, its whole picture masked) sees nothing of the source
        five = BASE.replace("--steps 2", "--steps 5")
        request = parse(engine, five, source="ab" * 32)
        assert differs(draw(engine, parse(engine, five)), draw(engine, request, source))
        wide = parse(engine, f"{BASE} --ar 16:9", source="ab" * 32)
        with Image.open(io.BytesIO(draw(engine, wide, source))) as picture:
            assert picture.size == (wide.width, wide.height)  # not the family's default square
    else:
        with pytest.raises(PromptError, match=f"Starting from a picture.*doesn't work on `{model_id}`"):
            parse(engine, BASE, source="ab" * 32)


@pytest.mark.parametrize("model_id", list(FAMILIES))
def test_weights_act_where_encoded_and_are_refused_elsewhere(
    engines: Callable[[str], DiffusersEngine], model_id: str
) -> None:
    engine = engines(model_id)
    if engine.profile.supports_weights:
        plain = draw(engine, parse(engine, BASE))
        assert differs(
            plain, draw(engine, parse(engine, "a (red:1.6) fox in the snow --steps 2 --n 1 --seed 5"))
        )
    else:
        with pytest.raises(PromptError, match="doesn't take prompt weights"):
            parse(engine, "a (red:1.6) fox --steps 2")


@pytest.mark.parametrize("model_id", ["tiny-flux", "tiny-qwen", "tiny-sd3", "tiny-pixart"])
def test_previews_decode_every_familys_latents(
    engines: Callable[[str], DiffusersEngine], model_id: str
) -> None:
    engine = engines(model_id)
    previews: list[bytes] = []

    def on_step(_step: int, _total: int, preview: Any) -> bool:
        previews.append(preview(0))
        return True

    engine.run_batch([parse(engine, BASE)], [None], on_step)
    assert len(previews) == 2 and all(p.startswith(b"\x89PNG") for p in previews)


@pytest.mark.parametrize("model_id", ["tiny", "tiny-sd3", "tiny-flux", "tiny-qwen"])
def test_a_lora_of_the_familys_own_denoiser_acts_and_goes_away(
    engines: Callable[[str], DiffusersEngine], model_id: str, tmp_path: Path
) -> None:
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    engine = engines(model_id)
    component = engine.profile.features.lora
    assert component is not None
    pipe = engine.model.text2img
    denoiser = type(getattr(pipe, component)).from_config(getattr(pipe, component).config)
    denoiser.add_adapter(
        LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_v"], init_lora_weights=False)
    )
    name = f"style-{model_id}"
    layers = {f"{component}_lora_layers": get_peft_model_state_dict(denoiser)}
    type(pipe).save_lora_weights(tmp_path, weight_name=f"{name}.safetensors", **layers)
    with_lora = DiffusersEngine(engine.model, lora_dir=tmp_path)
    base = draw(engine, parse(engine, BASE))
    styled = draw(with_lora, replace(parse(engine, BASE), loras=((name, 1.0),)))
    assert differs(base, styled)
    assert not differs(base, draw(engine, parse(engine, BASE)))  # disabled after the call: as before


def test_the_readmes_model_table_is_the_families_declarations(
    engines: Callable[[str], DiffusersEngine],
) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    table = readme.split("## Model families", 1)[1].split("\n\n")[2]
    header, _rule, *rows = table.strip().splitlines()
    columns = [c.strip().strip("`") for c in header.strip("|").split("|")][2:]
    checked = 0
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        model_id = cells[1].strip("`")
        if model_id == "tiny-aura":  # the generic family's cells say "where its call takes it"
            continue
        engine = engines(model_id)
        supported = {**engine.profile.features.supported(), "weights": engine.profile.supports_weights}
        assert columns == list(supported), columns
        assert [c == "✓" for c in cells[2:]] == list(supported.values()), model_id
        checked += 1
    assert checked == 11


@pytest.mark.parametrize("model_id", ["tiny-sdxl", "tiny-flux"])
def test_compels_encoders_take_long_prompts_and_negative_parts(
    engines: Callable[[str], DiffusersEngine], model_id: str
) -> None:
    engine = engines(model_id)
    long = parse(engine, " ".join(["a red fox"] * 20) + " --steps 2 --n 1 --seed 5")  # past CLIP's 77
    assert engine.count_tokens(long.prompt) > 77
    # SDXL's CLIPs read it in windows; Flux's T5 reads it whole (512 tokens), so diffusers encodes it
    assert (long.prompt_windows >= 2) if model_id == "tiny-sdxl" else long.prompt_windows == 0
    draw(engine, long)
    plain = draw(engine, parse(engine, "cat::2 --steps 2 --n 1 --seed 5"))
    pushed = parse(engine, "cat::2 dog::-1 --steps 2 --n 1 --seed 5")
    assert differs(plain, draw(engine, pushed))  # the negative part pushes away
    batch = [parse(engine, f"a (fox:{w}) --steps 2 --n 1 --seed 5") for w in (0.5, 1.5)]
    together = [i.png for r in engine.run_batch(batch, [None, None], lambda *_: True) for i in r]
    alone = [draw(engine, r) for r in batch]
    assert all(same_within_rounding(a, b) for a, b in zip(together, alone, strict=True))


EDIT_FAMILIES = ["tiny-sd3", "tiny-flux", "tiny-flux-schnell", "tiny-flux-fill", "tiny-qwen"]


@pytest.mark.parametrize("model_id", EDIT_FAMILIES)
def test_every_edit_runs_on_transformer_families_at_its_canvas_size_keeping_pixels(
    engines: Callable[[str], DiffusersEngine], model_id: str
) -> None:
    from generation.media.canvas import SizeCap, canvas_size, prepare_canvas
    from generation.prompts.edits import Direction, EditKind, edit_spec
    from generation.prompts.request import edit_of

    engine = engines(model_id)
    assert engine.profile.features.edits
    cap = SizeCap.for_profile(engine.profile)
    native = engine.profile.native_size
    source = Image.open(io.BytesIO(tiny_source_png(size=(native, native * 3 // 4)))).convert("RGB")
    parent = parse(engine, BASE)
    specs = [
        edit_spec(EditKind.VARY_SUBTLE),
        edit_spec(EditKind.VARY_STRONG),
        edit_spec(EditKind.VARY_REGION, regions=("top",)),
        edit_spec(EditKind.ZOOM_OUT, factor=1.5),
        edit_spec(EditKind.PAN, direction=Direction.LEFT),
        edit_spec(EditKind.MAKE_SQUARE),
        edit_spec(EditKind.UPSCALE_SUBTLE),
    ]
    buffer = io.BytesIO()
    source.save(buffer, "PNG")
    for spec in specs:
        size = canvas_size(spec, source.size, cap)
        assert (
            size[0] % engine.profile.features.size_step == 0
            and size[1] % engine.profile.features.size_step == 0
        )
        request = edit_of(parent, spec, "ab" * 32, size, (7,))
        ((image,),) = engine.run_batch([request], [buffer.getvalue()], lambda *_: True)
        assert (image.width, image.height) == size, spec.describe()
        canvas = prepare_canvas(spec, source, cap, seed=7)
        if canvas.keep is not None:  # the kept pixels come back exactly
            keep = np.asarray(canvas.keep) == 255
            assert np.array_equal(png_pixels(image.png)[keep], np.asarray(canvas.image)[keep]), (
                spec.describe()
            )


@pytest.mark.parametrize("model_id", EDIT_FAMILIES)
def test_the_edit_pipelines_share_the_loaded_weights(
    engines: Callable[[str], DiffusersEngine], model_id: str
) -> None:
    from generation.pipelines.inpaint import added_weight_bytes

    engine = engines(model_id)
    pipes = engine.edit_pipelines()
    base = engine.model.text2img
    assert type(pipes.inpaint).__name__.endswith(("InpaintPipeline", "FillPipeline"))
    assert pipes.fills is engine.family.fills(base)  # Flux Fill is its own inpainting pipeline
    assert added_weight_bytes(base, pipes.img2img) == 0 and added_weight_bytes(base, pipes.inpaint) == 0


def test_kontext_takes_a_picture_through_its_own_input_without_strength(
    engines: Callable[[str], DiffusersEngine],
) -> None:
    engine = engines("tiny-kontext")
    with pytest.raises(PromptError, match="`--strength` doesn't work on `tiny-kontext`"):
        parse(engine, f"{BASE} --strength 0.5", source="ab" * 32)
    request = parse(engine, f"{BASE} --ar 3:2", source="ab" * 32)
    assert request.strength is None  # its PNG claims no denoising strength it never used
    source = tiny_source_png(size=(96, 64))
    png = draw(engine, request, source)
    text = read_parameters(png) or ""
    assert "Denoising strength" not in text and f"Size: {request.width}x{request.height}" in text
    with Image.open(io.BytesIO(png)) as picture:
        assert picture.size == (request.width, request.height)
    assert differs(png, draw(engine, parse(engine, f"{BASE} --ar 3:2")))  # the picture conditions it
    variation = replace(request, mode=Mode.VARIATION, strength=0.6)  # as V1 derives it
    assert "Denoising strength" not in (read_parameters(draw(engine, variation, source)) or "")
