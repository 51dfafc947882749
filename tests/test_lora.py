"""LoRA styles: `<lora:name:w>` parsed out of prompts, adapters built locally for the `tiny` model and
applied through diffusers' PEFT integration, the base model's pictures exactly back afterwards, and
`/loras` and a LoRA job through the real discord.py client."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from generation.media.compose import read_parameters
from generation.pipelines.engine import DiffusersEngine
from generation.pipelines.lora import lora_names
from generation.prompts.errors import PromptError
from generation.prompts.loras import extract_loras
from testkit.tiny_lora import build_tiny_lora
from tests.bot_harness import BotWorld
from tests.fixtures_generation import tiny_request

pytest_plugins = ["tests.fixtures_generation"]


@pytest.fixture
def own_tiny(tiny_cache_dir: Path) -> Any:
    """A tiny model of this test's own: loading adapters changes a pipeline's modules in place."""
    from generation.pipelines.loading import load_pipeline

    return load_pipeline("tiny", "cpu", cache_dir=tiny_cache_dir)


def _pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_lora_tags_leave_the_prompt_and_name_the_adapters() -> None:
    text, loras = extract_loras("a fox <lora:Ink:0.8> in snow <LORA:film>", ["film", "ink"])
    assert text == "a fox in snow" and loras == (("film", 1.0), ("ink", 0.8))
    for bad, says in [
        ("a <lora:oil>", "no LoRA called `oil`"),
        ("a <lora:ink:lots>", "must be a number"),
        ("a <lora:ink:3>", "between -2 and 2"),
        ("a <lora:ink> <lora:ink:0.5>", "given twice"),
    ]:
        with pytest.raises(PromptError, match=says):
            extract_loras(bad, ["film", "ink"])


def test_a_lora_changes_the_picture_and_the_base_model_comes_back_exactly(
    own_tiny: Any, tmp_path: Path
) -> None:
    tiny_model = own_tiny
    build_tiny_lora(tiny_model, tmp_path, "ink", seed=1)
    build_tiny_lora(tiny_model, tmp_path, "film", seed=2)
    assert lora_names(tmp_path) == ["film", "ink"]
    engine = DiffusersEngine(tiny_model, lora_dir=tmp_path)

    def picture(**changes: Any) -> np.ndarray:
        [[image]] = engine.run_batch([tiny_request(seeds=(4,), **changes)], [None], lambda *_: True)
        return _pixels(image.png)

    base = picture()
    ink = picture(loras=(("ink", 1.0),))
    assert np.abs(ink - base).max() > 0
    assert np.array_equal(picture(), base)  # the adapter is off again: the very same picture
    assert np.array_equal(picture(loras=(("ink", 1.0),)), ink) and engine.loras.loaded == {"ink"}  # cached
    both = picture(loras=(("film", 0.5), ("ink", 1.0)))
    assert not np.array_equal(both, ink)
    assert np.array_equal(picture(), base)


def test_a_missing_lora_file_fails_the_batch_with_its_name(own_tiny: Any, tmp_path: Path) -> None:
    tiny_model = own_tiny
    from generation.pipelines.contract import BatchFailed

    engine = DiffusersEngine(tiny_model, lora_dir=tmp_path)
    with pytest.raises(BatchFailed, match="'gone' is not installed"):
        engine.run_batch([tiny_request(loras=(("gone", 1.0),))], [None], lambda *_: True)


async def test_loras_through_the_real_client(tmp_path: Path, own_tiny: Any) -> None:
    tiny_model = own_tiny
    folder = tmp_path / "loras"
    build_tiny_lora(tiny_model, folder, "ink", seed=1)
    async with BotWorld.open(tmp_path / "world", tiny_model) as world:
        world.extra_settings = {"lora_dir": folder}
        await world.start_bot()
        listed = await world.wait_ephemeral(
            world.server.invoke("loras", {}, guild=world.guild, channel=world.channel, member=world.bob)
        )
        assert "`ink`" in listed.content
        result = await world.wait_result(world.imagine("a fox <lora:ink:0.7> --n 1 --seed 3"))
        parameters = read_parameters(result.attachments[0].data) or ""
        assert parameters.startswith("a fox <lora:ink:0.7>")
        refused = await world.wait_ephemeral(world.imagine("a fox <lora:oil>"))
        assert "no LoRA called `oil`" in refused.content
