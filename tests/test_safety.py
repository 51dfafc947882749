"""SAFETY=model|require|off on the real tiny model, which ships no checker: `require` loads the
standalone `tiny` checker (diffusers' StableDiffusionSafetyChecker, made locally, flagging every
picture) through `from_pretrained`, and the bot then posts nothing outside age-restricted channels;
an unloadable checker under `require` flags everything; `model` and `off` leave tiny unscreened."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from generation.pipelines.engine import DiffusersEngine
from generation.pipelines.loading import load_pipeline
from generation.pipelines.safety import (
    choose_check,
    flag_everything,
    load_standalone_check,
)
from generation.pipelines.safety_options import SafetyOptions
from testkit.answers import is_result
from tests.bot_harness import BotWorld, T
from tests.fixtures_generation import tiny_request
from tests.test_engine import StepLog


@pytest.fixture(scope="module")
def required_model(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """tiny with SAFETY=require and the tiny checker."""
    cache = tmp_path_factory.mktemp("safety-cache")
    return load_pipeline("tiny", "cpu", cache_dir=cache, safety=SafetyOptions("require", "tiny"))


def test_require_loads_the_standalone_checker_for_a_model_without_one(required_model: Any) -> None:
    engine = DiffusersEngine(required_model)
    assert required_model.safety_check is not None and required_model.safety_check is not flag_everything
    assert engine.profile.has_safety_checker
    [images] = engine.run_batch([tiny_request(seeds=(1, 2))], [None], StepLog())
    assert [image.nsfw for image in images] == [True, True]  # the tiny checker flags everything


@pytest.mark.parametrize("model_id", ["tiny-flux", "tiny-sd3", "tiny-pixart"])
def test_require_screens_every_familys_pictures(tiny_cache_dir: Path, model_id: str) -> None:
    model = load_pipeline(model_id, "cpu", cache_dir=tiny_cache_dir, safety=SafetyOptions("require", "tiny"))
    engine = DiffusersEngine(model)
    assert engine.profile.has_safety_checker
    native = engine.profile.native_size
    request = tiny_request(model=model_id, width=native, height=native, steps=2, seeds=(1, 2))
    [images] = engine.run_batch([request], [None], StepLog())
    assert [image.nsfw for image in images] == [True, True]  # the tiny checker flags everything


def test_model_and_off_leave_tiny_unscreened(tiny_cache_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        for mode in ("model", "off"):
            model = load_pipeline("tiny", "cpu", cache_dir=tiny_cache_dir, safety=SafetyOptions(mode))
            assert model.safety_check is None and not model.profile.has_safety_checker
            [[image]] = DiffusersEngine(model).run_batch([tiny_request()], [None], StepLog())
            assert not image.nsfw
    assert "SAFETY=require adds one" in caplog.text and "SAFETY=off" in caplog.text


def test_off_drops_even_a_models_own_checker(tmp_path: Path) -> None:
    own = load_standalone_check("tiny", "cpu", torch.float32, None, tmp_path)
    assert choose_check(own, SafetyOptions("model"), "m", lambda: flag_everything) is own
    assert choose_check(own, SafetyOptions("require"), "m", lambda: flag_everything) is own
    assert choose_check(own, SafetyOptions("off"), "m", lambda: flag_everything) is None


def test_require_without_a_loadable_checker_flags_everything(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = str(tmp_path / "no-checker-here")
    with caplog.at_level(logging.WARNING):
        model = load_pipeline("tiny", "cpu", cache_dir=tmp_path, safety=SafetyOptions("require", missing))
    assert model.safety_check is flag_everything
    assert "posted only in age-restricted channels" in caplog.text and missing in caplog.text


def test_bad_safety_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="SAFETY must be one of model, require, off"):
        SafetyOptions("sometimes")


async def test_the_bot_posts_screened_pictures_only_in_age_restricted_channels(
    tmp_path: Path, required_model: Any
) -> None:
    async with BotWorld.open(tmp_path, required_model) as world:
        await world.start_bot()
        plain = world.imagine("a tower --steps 2")
        after_dark = world.imagine("a tower --steps 2", channel=world.nsfw)
        result = await world.wait_result(after_dark)
        assert result.attachments and result.attachments[0].filename.startswith("SPOILER_")
        told = await world.wait_ephemeral(plain, timeout=T)
        assert "safety checker flagged" in told.content
        assert not is_result(plain.original)
        (entry,) = [e for e in await world.store.ledger(world.guild.id, world.alice.id) if e.refunded]
        assert entry.images == 1


async def test_without_a_loadable_checker_the_member_is_told_the_pictures_were_not_screened(
    tmp_path: Path,
) -> None:
    missing = str(tmp_path / "no-checker-here")
    model = load_pipeline("tiny", "cpu", cache_dir=tmp_path, safety=SafetyOptions("require", missing))
    assert not model.profile.has_safety_checker  # nothing screens: every picture counts as flagged
    async with BotWorld.open(tmp_path / "world", model) as world:
        await world.start_bot()
        plain = world.imagine("a tower --steps 2")
        told = await world.wait_ephemeral(plain, timeout=T)
        assert "couldn't be screened" in told.content and "flagged" not in told.content
        assert not is_result(plain.original)
        job_id = next(iter(await world.store.ledger(world.guild.id, world.alice.id))).job_id
        job = await world.store.get_job(job_id)
        assert job is not None and job.refunded and "not screened" in (job.error or "")
