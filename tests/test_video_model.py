# mypy: disable-error-code="no-untyped-call"
"""The image-to-video model layer: the tiny video models build and load through diffusers' real
`from_pretrained`, `recognise_video` reads their family, and `animate` makes the promised clip."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import diffusers
import numpy as np
import pytest
import torch
from diffusers import LTXImageToVideoPipeline, WanImageToVideoPipeline, WanPipeline
from PIL import Image, ImageOps

from generation.families.video import LTX, PROMPT_MOTION, SVD, WAN, VideoFamily, recognise_video
from generation.pipelines.tiny import TINY_FOLDER_NAME
from generation.pipelines.tiny_video import (
    TINY_VIDEO_DEFAULTS,
    TINY_VIDEO_IDS,
    build_tiny_video,
    ensure_tiny_video,
)
from generation.pipelines.video_run import (
    NonFiniteVideo,
    VideoInterrupted,
    animate,
    load_video_pipeline,
    preview_png,
)
from tests.fixtures_generation import nan_decoding

Loaded = tuple[Any, VideoFamily]


@pytest.fixture(scope="module")
def video_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder holding both tiny video models."""
    cache = tmp_path_factory.mktemp("video-cache")
    for model_id in TINY_VIDEO_IDS:
        ensure_tiny_video(cache, model_id)
    return cache


@pytest.fixture(scope="module")
def wan(video_cache: Path) -> Loaded:
    return load_video_pipeline(video_cache / TINY_VIDEO_IDS["tiny-video"], "cpu", torch.float32)


@pytest.fixture(scope="module")
def ltx(video_cache: Path) -> Loaded:
    return load_video_pipeline(video_cache / TINY_VIDEO_IDS["tiny-ltx-video"], "cpu", torch.float32)


@pytest.fixture(scope="module")
def wan_clip(wan: Loaded) -> np.ndarray:
    """The tiny Wan's clip of `clip(wan)`'s defaults (seed 1, low motion), made once."""
    return clip(wan)


def picture(width: int, height: int) -> Image.Image:
    """A source picture with some structure (a gradient and a block), so motion has edges to move."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    rgb = np.stack([x + 0 * y, y + 0 * x, np.full((height, width), 90.0, np.float32)], axis=-1)
    rgb[height // 4 : height // 2, width // 4 : width // 2] = (240, 240, 20)
    return Image.fromarray(rgb.astype(np.uint8))


def clip(loaded: Loaded, *, seed: int = 1, steps: int = 2, motion: str = "low", **changes: Any) -> np.ndarray:
    """A clip of the tiny model at its native size and frame count from a 64×48 picture."""
    pipe, family = loaded
    settings: dict[str, Any] = {
        "source": picture(64, 48),
        "prompt": "a cat on a boat",
        "negative": "",
        "width": family.width,
        "height": family.height,
        "frames": family.frames,
        "steps": steps,
        "guidance": family.guidance,
        "motion": motion,
        "seed": seed,
    }
    settings.update(changes)
    return animate(pipe, family, **settings)


# -- building and loading ----------------------------------------------------------------------------


def test_tiny_models_build_once_and_load_through_from_pretrained(
    video_cache: Path, wan: Loaded, ltx: Loaded
) -> None:
    wan_pipe, ltx_pipe = wan[0], ltx[0]
    assert isinstance(ltx_pipe, LTXImageToVideoPipeline)
    assert isinstance(wan_pipe, WanImageToVideoPipeline)
    assert wan[0].image_encoder is None  # Wan 2.2-style: the first frame conditions through the input
    for model_id, folder_name in TINY_VIDEO_IDS.items():
        folder = video_cache / folder_name
        index = folder / "model_index.json"
        built_at = index.stat().st_mtime_ns
        assert ensure_tiny_video(video_cache, model_id) == folder
        assert index.stat().st_mtime_ns == built_at  # not built again
    with pytest.raises(ValueError, match=r"tiny-sdxl.*not a tiny video model"):
        ensure_tiny_video(video_cache, "tiny-sdxl")


def test_a_tiny_model_built_twice_from_one_seed_has_equal_weights(tmp_path: Path, wan: Loaded) -> None:
    build_tiny_video("tiny-video", tmp_path / "again")
    again, _ = load_video_pipeline(tmp_path / "again", "cpu", torch.float32)
    for name in ("transformer", "vae", "text_encoder"):
        ours, theirs = getattr(wan[0], name).state_dict(), getattr(again, name).state_dict()
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours)


# -- the families ------------------------------------------------------------------------------------


def test_recognise_video_reads_the_tiny_wan_family(wan: Loaded) -> None:
    pipe, family = wan
    assert recognise_video(pipe) == family
    assert family.name == WAN
    defaults = TINY_VIDEO_DEFAULTS["tiny-video"]
    assert (family.width, family.height, family.frames, family.fps) == (64, 48, 9, 16)
    assert defaults == {"width": 64, "height": 48, "frames": 9, "fps": 16}
    assert (family.steps, family.guidance) == (50, 5.0)  # the call's own defaults
    assert (family.size_step, family.frame_step) == (16, 4)  # VAE 8 × patch 2; frames 4k+1
    assert [family.snap_frames(n) for n in (1, 5, 6, 7, 81, 82, 83)] == [5, 5, 5, 9, 81, 81, 85]


def test_recognise_video_reads_the_tiny_ltx_family(ltx: Loaded) -> None:
    _pipe, family = ltx
    assert family.name == LTX
    assert (family.width, family.height, family.frames, family.fps) == (96, 64, 17, 25)
    assert (family.steps, family.guidance) == (50, 3.0)
    assert (family.size_step, family.frame_step) == (32, 8)  # VAE 32 (patch 4, three halvings); 8k+1
    assert [family.snap_frames(n) for n in (9, 16, 20, 161)] == [9, 17, 17, 161]


def test_size_for_keeps_the_source_aspect_at_about_the_native_pixels(wan: Loaded, ltx: Loaded) -> None:
    _, w = wan
    _, x = ltx
    assert w.size_for(300, 400) == (48, 64)  # portrait 3:4 at 64×48's pixels
    assert w.size_for(400, 300) == (64, 48)
    assert x.size_for(300, 400) == (64, 96)
    assert x.size_for(640, 480) == (96, 64)
    assert w.size_for(4000, 100) == w.size_for(400, 100)  # beyond 4:1, animated at 4:1
    with pytest.raises(ValueError, match="no aspect"):
        w.size_for(0, 10)


class StableVideoDiffusionPipeline:
    """Duck-typed as SVD (recognised by class name and call): diffusers' real call signature,
    a UNet config of 25 frames (SVD-XT's)."""

    __call__ = diffusers.StableVideoDiffusionPipeline.__call__
    vae_scale_factor = 8
    components: ClassVar[dict[str, Any]] = {
        "unet": SimpleNamespace(config={"num_frames": 25, "sample_size": 96})
    }


def test_svd_is_recognised_from_its_call_and_moves_by_its_motion_bucket() -> None:
    family = recognise_video(StableVideoDiffusionPipeline())
    assert family.name == SVD
    assert (family.width, family.height, family.frames, family.fps) == (1024, 576, 25, 7)
    assert (family.steps, family.guidance, family.size_step, family.frame_step) == (25, 3.0, 8, 1)
    low, high = (
        family.call_arguments("pic", "a cat", "blur", 1024, 576, 25, 20, 2.5, motion, "gen")
        for motion in ("low", "high")
    )
    assert (low["motion_bucket_id"], low["noise_aug_strength"]) == (60, 0.02)
    assert (high["motion_bucket_id"], high["noise_aug_strength"]) == (180, 0.1)
    assert low["max_guidance_scale"] == 2.5 and low["fps"] == 7 and low["num_frames"] == 25
    assert "prompt" not in low and "negative_prompt" not in low and "guidance_scale" not in low


class CogVideoXImageToVideoPipeline:
    """Duck-typed as CogVideoX's image-to-video (no family of its own: the generic one), with
    diffusers' real call signature and CogVideoX 1.0's VAE factors and transformer config."""

    __call__ = diffusers.CogVideoXImageToVideoPipeline.__call__
    vae_scale_factor_spatial = 8
    vae_scale_factor_temporal = 4
    components: ClassVar[dict[str, Any]] = {
        "transformer": SimpleNamespace(config={"patch_size": 2, "sample_width": 90, "sample_height": 60})
    }


def test_other_image_to_video_pipelines_are_read_from_their_call() -> None:
    family = recognise_video(CogVideoXImageToVideoPipeline())
    assert family.name == "generic image-to-video"
    assert (family.width, family.height, family.frames, family.fps) == (720, 480, 49, 8)
    assert (family.steps, family.guidance, family.size_step, family.frame_step) == (50, 6.0, 16, 4)
    high = family.call_arguments("pic", "a cat", "", 720, 480, 49, 20, 6.0, "high", "gen")
    assert high["prompt"] == "a cat" + PROMPT_MOTION["high"][0]
    assert high["negative_prompt"] == PROMPT_MOTION["high"][1]
    assert high["guidance_scale"] == 6.0 and high["num_frames"] == 49


class StableDiffusionImg2ImgPipeline:
    """Duck-typed as SD's image-to-image: takes a picture, makes no frames."""

    __call__ = diffusers.StableDiffusionImg2ImgPipeline.__call__


def test_pipelines_that_do_not_animate_a_picture_are_refused(tiny_cache_dir: Path, wan: Loaded) -> None:
    with pytest.raises(ValueError, match=r"StableDiffusionPipeline cannot animate a picture.*`image`"):
        load_video_pipeline(tiny_cache_dir / TINY_FOLDER_NAME, "cpu", torch.float32)
    parts = wan[0].components
    text_to_video = WanPipeline(
        tokenizer=parts["tokenizer"],
        text_encoder=parts["text_encoder"],
        vae=parts["vae"],
        scheduler=parts["scheduler"],
        transformer=parts["transformer"],
    )
    with pytest.raises(ValueError, match="WanPipeline cannot animate a picture"):
        recognise_video(text_to_video)
    with pytest.raises(ValueError, match="StableDiffusionImg2ImgPipeline is not an image-to-video pipeline"):
        recognise_video(StableDiffusionImg2ImgPipeline())


def test_call_arguments_refuse_sizes_and_frames_the_model_does_not_make(wan: Loaded) -> None:
    _, family = wan
    args = ("pic", "a cat", "", 64, 48, 9, 2, 5.0, "low", None)
    assert family.call_arguments(*args)["num_frames"] == 9
    with pytest.raises(ValueError, match="multiples of 16"):
        family.call_arguments("pic", "a cat", "", 60, 48, 9, 2, 5.0, "low", None)
    with pytest.raises(ValueError, match="4k\\+1 frames: 9, not 10"):
        family.call_arguments("pic", "a cat", "", 64, 48, 10, 2, 5.0, "low", None)
    with pytest.raises(ValueError, match="motion is one of low, high"):
        family.call_arguments("pic", "a cat", "", 64, 48, 9, 2, 5.0, "wild", None)


# -- animating ---------------------------------------------------------------------------------------


def test_animate_makes_the_promised_frames_at_a_snapped_non_square_size(wan: Loaded, ltx: Loaded) -> None:
    source = picture(300, 400)  # portrait
    for pipe, family in (wan, ltx):
        width, height = family.size_for(*source.size)
        frames = family.snap_frames(family.frames + 1)
        assert width != height and frames == family.frames
        video = animate(
            pipe, family, source, "a cat", "", width, height, frames, 2, family.guidance, "high", 3
        )
        assert video.dtype == np.uint8
        assert video.shape == (frames, height, width, 3)
        assert len({video[i].tobytes() for i in range(frames)}) > 1  # the frames are not one still


def test_one_seed_makes_equal_frames_and_another_seed_other_frames(wan: Loaded, wan_clip: np.ndarray) -> None:
    assert np.array_equal(clip(wan, seed=1), wan_clip)
    assert not np.array_equal(clip(wan, seed=2), wan_clip)


def test_motion_changes_the_call_and_the_pixels(wan: Loaded, wan_clip: np.ndarray) -> None:
    _, family = wan
    low = family.call_arguments("pic", "a cat", "blurry", 64, 48, 9, 2, 5.0, "low", None)
    high = family.call_arguments("pic", "a cat", "blurry", 64, 48, 9, 2, 5.0, "high", None)
    assert low["prompt"] == "a cat" + PROMPT_MOTION["low"][0]
    assert high["prompt"] == "a cat" + PROMPT_MOTION["high"][0]
    assert low["negative_prompt"] == "blurry, " + PROMPT_MOTION["low"][1]
    assert high["negative_prompt"] == "blurry, " + PROMPT_MOTION["high"][1]
    assert low["guidance_scale"] == high["guidance_scale"] == 5.0
    assert "frame_rate" not in low and "motion_bucket_id" not in low  # not in Wan's call
    empty = family.call_arguments("pic", "", "", 64, 48, 9, 2, 5.0, "high", None)
    assert empty["prompt"] == PROMPT_MOTION["high"][0].removeprefix(", ")
    assert not np.array_equal(clip(wan, motion="high"), wan_clip)  # `wan_clip`: low motion


def test_ltx_is_told_its_frame_rate(ltx: Loaded) -> None:
    _, family = ltx
    args = family.call_arguments("pic", "a cat", "", 96, 64, 17, 2, 3.0, "low", None)
    assert args["frame_rate"] == 25 and args["num_frames"] == 17 and args["guidance_scale"] == 3.0


def test_on_step_is_called_once_per_step_and_false_stops(wan: Loaded) -> None:
    calls: list[tuple[int, int]] = []

    def every(step: int, total: int) -> bool:
        calls.append((step, total))
        return True

    clip(wan, steps=3, on_step=every)
    assert calls == [(1, 3), (2, 3), (3, 3)]

    stopped: list[tuple[int, int]] = []

    def stop_at_two(step: int, total: int) -> bool:
        stopped.append((step, total))
        return step < 2

    with pytest.raises(VideoInterrupted, match="stopped after step 2 of 3"):
        clip(wan, steps=3, on_step=stop_at_two)
    assert stopped == [(1, 3), (2, 3)]


def test_first_frames_are_the_source_itself(wan: Loaded, wan_clip: np.ndarray) -> None:
    _, family = wan
    video = clip(wan, first_frames=1)  # `clip`'s source: picture(64, 48)
    fitted = ImageOps.fit(picture(64, 48), (family.width, family.height), Image.Resampling.LANCZOS)
    assert np.array_equal(video[0], np.asarray(fitted))
    assert not np.array_equal(wan_clip[0], video[0])  # the model's own first frame is not exact
    assert np.array_equal(video[1:], wan_clip[1:])


def test_non_finite_pixels_raise(wan: Loaded) -> None:
    with nan_decoding(wan[0].vae), pytest.raises(NonFiniteVideo, match="non-finite"):
        clip(wan)


def test_preview_png_is_a_small_still_of_the_source() -> None:
    png = preview_png(picture(640, 480))
    with Image.open(io.BytesIO(png)) as still:
        assert still.format == "PNG"
        assert still.size == (128, 96)
    with Image.open(io.BytesIO(preview_png(picture(50, 40)))) as small:
        assert small.size == (50, 40)  # never enlarged
