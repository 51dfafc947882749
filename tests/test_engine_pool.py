"""`MODELS` and the worker's `EnginePool` on the real `tiny` model: routing by model name, loading on
first use, least-recently-used eviction by measured size, and a model that fails to load."""

from __future__ import annotations

import asyncio
import hashlib
import io
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from generation.backends.local import GenerationService
from generation.backends.protocol import JobFailed
from generation.families.adapters import NO_REFERENCE_ADAPTER, REDUX, AdapterSpec, parse_adapter
from generation.media.compose import read_parameters
from generation.media.image_store import ImageStore
from generation.model_set import ModelChoice, ModelSet
from generation.pipelines.engine import DiffusersEngine
from generation.pipelines.engine_pool import EnginePool, ModelUnavailable, engine_bytes
from generation.prompts.references import Reference, ReferenceKind
from tests.fixtures_generation import tiny_request

pytest_plugins = ["tests.fixtures_generation"]


def test_models_setting_parses_names_and_sources_the_first_being_the_default() -> None:
    models = ModelSet.parse(" Photo=dreamlike-art/dreamlike-photoreal-2.0, fast = stabilityai/sd-turbo ,")
    assert (
        models.names == ("photo", "fast") and models.default.source == "dreamlike-art/dreamlike-photoreal-2.0"
    )
    assert models.get("FAST") == ModelChoice("fast", "stabilityai/sd-turbo") and models.get("other") is None
    assert ModelSet.single("/models/My Model").get("/models/My Model") is not None


def test_a_model_may_name_its_reference_adapter() -> None:
    models = ModelSet.parse(
        "photo=org/sd15 ref=h94/IP-Adapter:models/ip-adapter_sd15.safetensors,"
        " plain=org/sd15 ref=none, x=org/y"
    )
    assert [c.reference for c in models.choices] == [
        "h94/IP-Adapter:models/ip-adapter_sd15.safetensors",
        "none",
        None,
    ]
    assert parse_adapter(models.choices[0].reference or "") == AdapterSpec(
        "h94/IP-Adapter", "models", "ip-adapter_sd15.safetensors"
    )
    assert parse_adapter("none") is NO_REFERENCE_ADAPTER
    redux = parse_adapter("redux:black-forest-labs/FLUX.1-Redux-dev")
    assert redux == AdapterSpec("black-forest-labs/FLUX.1-Redux-dev", kind=REDUX)
    for bad, message in (
        ("a=org/m ref=h94/IP-Adapter", "is not hub-id-or-folder:subfolder/weights.safetensors"),
        ("a=org/m reference=x", "is not ref=ADAPTER"),
        ("a=", "is not name=hub-id-or-folder"),
    ):
        with pytest.raises(ValueError, match=message):
            ModelSet.parse(bad)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "is empty"),
        ("photo", "is not name=hub-id-or-folder"),
        ("photo=", "is not name=hub-id-or-folder"),
        ("a b=x", "must be 1-32"),
        ("a=x,a=y", "must differ"),
    ],
)
def test_bad_models_settings_are_refused_with_the_reason(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        ModelSet.parse(text)


def _loader(cache: Path, loads: list[str]) -> Any:
    def load(choice: ModelChoice) -> DiffusersEngine:
        loads.append(choice.name)
        return DiffusersEngine.load(choice.source, "cpu", cache_dir=cache)

    return load


def pixels(png: bytes) -> bytes:
    with Image.open(io.BytesIO(png)) as image:
        return image.convert("RGB").tobytes()


def _run(pool: EnginePool, model: str, seed: int = 3) -> bytes:
    [[image]] = pool.run_batch([tiny_request(model=model, seeds=(seed,))], [None], lambda *_: True)
    return image.png


def test_every_model_is_probed_at_start_and_a_batch_runs_on_its_models_engine(tiny_cache_dir: Path) -> None:
    loads: list[str] = []
    pool = EnginePool(ModelSet.parse("first=tiny,second=tiny"), _loader(tiny_cache_dir, loads))
    assert loads == ["first", "second"] and pool.profile.name == "first"  # requests name the model this way
    assert {name: entry.profile.name for name, entry in pool.catalog().items()} == {
        "first": "first",
        "second": "second",
    }
    assert pool.catalog()["second"].counter.count_tokens("a fox") == pool.count_tokens("a fox")
    first = _run(pool, "first")
    second = _run(pool, "second")
    assert loads == ["first", "second"] and pool.loaded == ("first", "second")
    assert pixels(first) == pixels(second)  # the same weights and seed: the picture, from another engine
    assert "Model: second" in (read_parameters(second) or "")
    unets = [pool.engine_for(n).model.text2img.unet for n in ("first", "second")]  # type: ignore[attr-defined]
    assert unets[0] is not unets[1]
    assert pool.profile_of("second") is not None and pool.profile_of("second").name == "second"  # type: ignore[union-attr]
    with pytest.raises(ModelUnavailable, match="no model called 'third'"):
        _run(pool, "third")
    pool.close()
    assert list(pool.loaded) == []


def test_engine_bytes_counts_each_shared_tensor_once(tiny_model: Any) -> None:
    engine = DiffusersEngine(tiny_model)
    parts = [tiny_model.text2img.unet, tiny_model.text2img.vae, tiny_model.text2img.text_encoder]
    expected = sum(t.untyped_storage().nbytes() for m in parts for t in [*m.parameters(), *m.buffers()])
    assert engine_bytes(engine) == expected  # img2img shares them all: not counted again


def test_least_recently_used_models_are_evicted_to_stay_within_the_budget(tiny_cache_dir: Path) -> None:
    loads: list[str] = []
    probe = EnginePool(ModelSet.parse("only=tiny"), _loader(tiny_cache_dir, []))
    size = probe.sizes["only"]
    probe.close()
    pool = EnginePool(
        ModelSet.parse("a=tiny,b=tiny,c=tiny"), _loader(tiny_cache_dir, loads), budget_bytes=int(2.5 * size)
    )
    # probed in order (c's load evicts a), then the default loaded again (evicting b)
    assert (
        pool.evictions == ["a", "b"] and pool.loaded == ("c", "a") and set(pool.catalog()) == {"a", "b", "c"}
    )
    _run(pool, "b")
    assert pool.evictions == ["a", "b", "c"] and pool.loaded == ("a", "b")
    _run(pool, "a")  # a is now the most recently used
    _run(pool, "c")
    assert pool.evictions == ["a", "b", "c", "b"] and pool.loaded == ("a", "c")
    assert loads == ["a", "b", "c", "a", "b", "c"]


def test_a_reference_adapter_loaded_later_is_counted_and_room_made_for_it(tiny_cache_dir: Path) -> None:
    probe = EnginePool(ModelSet.parse("only=tiny"), _loader(tiny_cache_dir, []))
    size = probe.sizes["only"]
    probe.close()
    budget = 2 * size + size // 50  # the two models, with a slack the adapter does not fit in
    pool = EnginePool(ModelSet.parse("a=tiny,b=tiny"), _loader(tiny_cache_dir, []), budget_bytes=budget)
    _run(pool, "b")
    _run(pool, "a")
    assert pool.loaded == ("b", "a") and pool.sizes == {"a": size, "b": size}
    picture = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(picture, "PNG")
    digest = hashlib.sha256(picture.getvalue()).hexdigest()
    style = Reference(ReferenceKind.STYLE, 100, ("https://cdn.discordapp.com/x.png",), (digest,))
    request = tiny_request(model="a", references=(style,))
    pool.run_batch([request], [None], lambda *_: True, {digest: picture.getvalue()})
    # the IP-Adapter (its image encoder and attention layers) now lives in a's pipeline: measured again
    engine: Any = pool.engine_for("a")
    encoder = engine.model.text2img.image_encoder
    grown = pool.sizes["a"] - size
    assert pool.sizes["a"] == engine_bytes(engine)
    assert grown >= sum(p.numel() * p.element_size() for p in encoder.parameters()) and grown > size // 50
    assert list(pool.loaded) == ["a"] and pool.evictions == ["b"]  # both no longer fit the budget


def test_free_device_memory_decides_when_there_is_no_budget(tiny_cache_dir: Path) -> None:
    free = [10**12]
    pool = EnginePool(
        ModelSet.parse("a=tiny,b=tiny"), _loader(tiny_cache_dir, []), free_bytes=lambda: free[0]
    )
    _run(pool, "b")
    assert pool.loaded == ("a", "b")
    free[0] = pool.sizes["a"]  # less than a model's size with headroom: make room before loading
    pool._evict("a", reason="test")  # as after a restart: a known size, not loaded
    _run(pool, "a")
    assert pool.evictions[-1] == "b" and list(pool.loaded) == ["a"]


async def test_a_model_that_fails_to_load_fails_its_jobs_and_the_worker_goes_on(
    tiny_cache_dir: Path, tmp_path: Path
) -> None:
    models = ModelSet.parse(f"good=tiny,broken={tmp_path / 'no-such-model'}")
    service = GenerationService(
        lambda: EnginePool(models, _loader(tiny_cache_dir, [])), ImageStore(tmp_path / "img")
    )
    await service.start()
    try:
        broken = service.submit("j1", "owner", replace(tiny_request(), model="broken"))
        with pytest.raises(JobFailed, match="'broken' could not be loaded"):
            await asyncio.wait_for(broken.result(), 60)
        good = service.submit("j2", "owner", replace(tiny_request(), model="good"))
        result = await asyncio.wait_for(good.result(), 60)
        assert len(result.images) == 1
    finally:
        await service.close()


def test_model_flag_and_option_pick_a_model_by_name() -> None:
    from generation.prompts.command import parse_command
    from generation.prompts.parser import PromptError
    from generation.prompts.request import ModelProfile, PromptOptions

    profile = ModelProfile(name="first", native_size=64, default_steps=4, default_guidance=7.5)

    two = ("first", "second")

    def model_of(text: str, options: PromptOptions | None = None, models: tuple[str, ...] = two) -> str:
        given = options or PromptOptions()
        [request] = parse_command(
            text, given, profile, count_tokens=len, random_seed=lambda: 1, models=models
        )
        return request.model

    assert model_of("a fox") == "first"
    assert model_of("a fox --model SECOND") == "second"
    assert model_of("a fox --model second", PromptOptions(model="first")) == "first"  # the option wins
    assert model_of("a fox --model first", models=()) == "first"  # one model: its own name only
    with pytest.raises(PromptError, match="must be one of first, second, not `third`"):
        model_of("a fox --model third")


async def test_members_pick_a_model_through_the_real_client(tmp_path: Path, tiny_model: Any) -> None:
    from tests.bot_harness import BotWorld

    async with BotWorld.open(tmp_path, tiny_model) as world:
        world.extra_settings = {"models": "first=tiny,second=tiny"}
        await world.start_bot()
        choices = {o["name"]: o for o in world.server.command("imagine")["options"]}["model"]["choices"]
        assert [c["value"] for c in choices] == ["first", "second"]
        flagged = await world.wait_result(world.imagine("a fox --model second --n 1"))
        assert "Model: second" in (read_parameters(flagged.attachments[0].data) or "")
        chosen = await world.wait_result(world.imagine("a fox --n 1", model="first"))
        assert "Model: first" in (read_parameters(chosen.attachments[0].data) or "")
        refused = await world.wait_ephemeral(world.imagine("a fox --model third"))
        assert "must be one of first, second" in refused.content
