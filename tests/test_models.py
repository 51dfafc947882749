# mypy: disable-error-code="no-untyped-call,attr-defined"
"""generation.pipelines.loading on the real diffusers pipeline: the tiny model, devices, loading, profiles."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import AutoPipelineForText2Image, StableDiffusionPipeline
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from PIL import Image
from transformers import CLIPConfig, CLIPImageProcessor

from generation.families.sd import SD, SDXL
from generation.pipelines.engine import DiffusersEngine
from generation.pipelines.loading import (
    choose_dtype,
    default_cache_dir,
    is_turbo,
    load_pipeline,
    make_profile,
    resolve_device,
)
from generation.pipelines.tiny import TINY_FOLDER_NAME, build_tiny_model, ensure_tiny_model
from tests.fixtures_generation import tiny_request

pytest_plugins = ["tests.fixtures_generation"]


def _weights(pipe: Any) -> dict[str, torch.Tensor]:
    state = {f"unet.{k}": v for k, v in pipe.unet.state_dict().items()}
    state.update({f"vae.{k}": v for k, v in pipe.vae.state_dict().items()})
    state.update({f"text.{k}": v for k, v in pipe.text_encoder.state_dict().items()})
    return state


def test_tiny_is_saved_in_diffusers_format_and_reloads(tiny_cache_dir: Path) -> None:
    folder = tiny_cache_dir / TINY_FOLDER_NAME
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (folder / part).is_dir(), part
    pipe = AutoPipelineForText2Image.from_pretrained(str(folder))
    assert isinstance(pipe, StableDiffusionPipeline)
    assert pipe.vae_scale_factor == 8
    assert pipe.unet.config.sample_size * pipe.vae_scale_factor == 64
    assert pipe.tokenizer.model_max_length == 77
    assert pipe.safety_checker is None


def test_tiny_weights_follow_the_seed(tiny_cache_dir: Path, tmp_path: Path) -> None:
    cached = AutoPipelineForText2Image.from_pretrained(str(tiny_cache_dir / TINY_FOLDER_NAME))
    build_tiny_model(tmp_path / "same", seed=0)
    build_tiny_model(tmp_path / "other", seed=1)
    same = _weights(AutoPipelineForText2Image.from_pretrained(str(tmp_path / "same")))
    other = _weights(AutoPipelineForText2Image.from_pretrained(str(tmp_path / "other")))
    reference = _weights(cached)
    assert all(torch.equal(reference[k], same[k]) for k in reference)
    assert not torch.equal(reference["unet.conv_in.weight"], other["unet.conv_in.weight"])


def test_ensure_tiny_model_reuses_the_cache_and_leaves_no_temp_folders(tiny_cache_dir: Path) -> None:
    folder = tiny_cache_dir / TINY_FOLDER_NAME
    before = (folder / "model_index.json").stat().st_mtime_ns
    assert ensure_tiny_model(tiny_cache_dir) == folder
    assert (folder / "model_index.json").stat().st_mtime_ns == before
    names = {p.name for p in tiny_cache_dir.iterdir()}  # the other families' tiny models may be there too
    assert TINY_FOLDER_NAME in names and not any(name.startswith(".tiny-") for name in names)


def test_ensure_tiny_model_keeps_a_copy_that_another_process_finished_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import generation.pipelines.tiny as models

    real_build = models.build_tiny_model

    def racing_build(folder: Path, seed: int = 0) -> None:
        real_build(folder, seed)
        real_build(tmp_path / TINY_FOLDER_NAME, seed)  # the other process wins the rename

    monkeypatch.setattr(models, "build_tiny_model", racing_build)
    folder = ensure_tiny_model(tmp_path)
    assert (folder / "model_index.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == [TINY_FOLDER_NAME]


def test_img2img_shares_the_text2img_components(tiny_model: Any) -> None:
    t2i, i2i = tiny_model.text2img, tiny_model.img2img
    assert type(i2i).__name__ == "StableDiffusionImg2ImgPipeline"
    for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert getattr(i2i, name) is getattr(t2i, name), name


def test_tiny_profile(tiny_model: Any) -> None:
    profile = tiny_model.profile
    assert profile.name == "tiny"
    assert profile.native_size == 64
    assert profile.default_steps == 4
    assert profile.max_steps == 50
    assert profile.token_limit == 77
    assert not profile.is_turbo
    assert not profile.has_safety_checker
    assert tiny_model.safety_check is None
    assert tiny_model.family is SD and profile.features.family == "sd"
    assert tiny_model.dtype == torch.float32


def test_a_local_folder_loads_through_the_real_path(
    tiny_cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = str(tiny_cache_dir / TINY_FOLDER_NAME)
    with caplog.at_level("WARNING", logger="generation.pipelines.loading"):
        loaded = load_pipeline(folder, "cpu", cache_dir=None)
    assert loaded.profile.name == folder
    assert loaded.profile.native_size == 64
    assert loaded.profile.default_steps == 30
    assert loaded.profile.default_guidance == 7.5
    assert any("no safety checker" in r.getMessage() for r in caplog.records)


def test_turbo_profiles(tiny_model: Any) -> None:
    pipe = tiny_model.text2img
    sd_turbo = make_profile("stabilityai/sd-turbo", pipe, SD, has_safety_checker=False)
    assert (sd_turbo.is_turbo, sd_turbo.default_steps, sd_turbo.default_guidance) == (True, 1, 0.0)
    assert sd_turbo.max_steps == 8
    xl_turbo = make_profile("stabilityai/sdxl-turbo", pipe, SDXL, has_safety_checker=True)
    assert (xl_turbo.default_steps, xl_turbo.has_safety_checker) == (4, True)
    xl = make_profile("stabilityai/stable-diffusion-xl-base-1.0", pipe, SDXL, has_safety_checker=False)
    assert (xl.is_turbo, xl.default_steps, xl.default_guidance) == (False, 30, 6.0)
    assert is_turbo("x/y", {"timestep_spacing": "trailing", "_class_name": "LCMScheduler"})
    assert not is_turbo("x/y", {"timestep_spacing": "trailing", "_class_name": "EulerDiscreteScheduler"})


def test_resolve_device(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_device(" CPU ") == "cpu"
    for bad in ("tpu", "cuda:x", "gpu0", ""):
        with pytest.raises(ValueError, match="DEVICE"):
            resolve_device(bad)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="MPS"):
        resolve_device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == "mps"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == "cuda"
    assert resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(ValueError, match="only 2"):
        resolve_device("cuda:2")


def test_dtype_and_cache_dir_choice() -> None:
    assert choose_dtype("cpu", "StableDiffusionPipeline") == torch.float32
    assert choose_dtype("mps", None) == torch.float32
    assert default_cache_dir({"IMAGINE_CACHE": "/srv/cache"}) == Path("/srv/cache")
    assert default_cache_dir({}) == Path("~/.cache/imagine").expanduser()


_TINY_CLIP = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2}


def _with_safety_checker(tiny_folder: Path, target: Path, *, flag_everything: bool) -> None:
    """Save the tiny model plus a tiny random StableDiffusionSafetyChecker (as real SD 1.x ships)."""
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    checker = StableDiffusionSafetyChecker(config).eval()
    if flag_everything:  # a concept threshold below any cosine similarity
        checker.concept_embeds_weights.data.fill_(-2.0)
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    base = StableDiffusionPipeline.from_pretrained(str(tiny_folder))
    StableDiffusionPipeline(
        **{k: v for k, v in base.components.items() if k not in ("safety_checker", "feature_extractor")},
        safety_checker=checker,
        feature_extractor=processor,
        requires_safety_checker=True,
    ).save_pretrained(target)


@pytest.mark.parametrize("flag_everything", [False, True])
def test_the_models_own_safety_checker_reports_flags_and_never_blacks_out(
    tiny_cache_dir: Path, tmp_path: Path, flag_everything: bool
) -> None:
    folder = tmp_path / "checked"
    _with_safety_checker(tiny_cache_dir / TINY_FOLDER_NAME, folder, flag_everything=flag_everything)
    loaded = load_pipeline(str(folder), "cpu", cache_dir=None)
    assert loaded.profile.has_safety_checker
    assert loaded.safety_check is not None
    assert loaded.text2img.safety_checker is None  # the pipeline itself never blacks out
    assert loaded.img2img is not None and loaded.img2img.safety_checker is None
    [images] = DiffusersEngine(loaded).run_batch(
        [tiny_request(seeds=(1, 2))], [None], lambda _step, _total, _preview: True
    )
    assert [image.nsfw for image in images] == [flag_everything, flag_everything]
    for image in images:
        with Image.open(io.BytesIO(image.png)) as opened:
            assert np.asarray(opened).max() > 0
