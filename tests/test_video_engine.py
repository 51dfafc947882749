"""`VideoEngine` behind the worker's `EnginePool` (Animate): the tiny Wan image-to-video model
(`tiny-video`: 64×48, 9 frames at 16 fps, 4 steps) loaded on first use through `load_engines`, its
clips as H.264 MP4s carrying their parameters, a clip starting on its picture, seeds and motion,
Extend, progress and stopping, batches, eviction against the image model, and SAFETY=require.

Clips are compared decoded, never as bytes: libx264 is not bit-reproducible at small sizes
(`generation.media.video`). Two clips are "the same" when their decoded frames differ by under
`SAME` levels on average; on this machine repeated runs (20 measured) gave identical bytes, so the
allowance only absorbs an encoder that varies. Clips of another seed or motion differ by 1.3 and
0.5-0.7 levels on average (the tiny model's random weights move little), so `DIFFERENT` is 0.3.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from generation.backends.protocol import GeneratedImage
from generation.media.video import decode_frames, encode_mp4, probe_mp4
from generation.model_set import ModelSet
from generation.pipelines.contract import BatchInterrupted, PreviewFn
from generation.pipelines.engine_pool import EnginePool, load_engines
from generation.pipelines.safety_options import SafetyOptions
from generation.pipelines.video_engine import TINY_VIDEO_STEPS, VideoEngine
from generation.prompts.request import GenerationRequest, Mode, animate_of, extend_of
from generation.prompts.video import Motion
from tests.fixtures_generation import tiny_request, tiny_source_png

VIDEO = "tiny-video"
SOURCE_SIZE = (96, 64)  # a 3:2 picture: the clip (4:3, 64×48) crops its sides
SAME = 1.0  # mean absolute difference (levels) under which two decoded clips are the same clip
DIFFERENT = 0.3  # ... over which they are different clips (see the module docstring)
# The clip's first frame against the picture fit to its size: the H.264 (CRF 23, yuv420p) round trip
# of that very picture, encoded alone, costs 0.9-1.2 levels on average (`FIRST_FRAME_BOUND` is checked
# against it below); a crop 2 px off centre costs 2.0 and a stretch instead of a crop 6.5.
FIRST_FRAME_BOUND = 2.0
# Extend re-encodes the first clip's frames: a second generation of H.264 loss, 1.5 levels on average
# (at most 2.0 on one frame) measured. The tiny model's clips of other seeds are as close (~1.4) past
# their first frame, so a clip it could not have made shows the frames are kept, not redrawn (~56 off).
REENCODED_BOUND = 3.0


def always(_step: int, _total: int, _preview: PreviewFn) -> bool:
    return True


def mean_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference in 8-bit levels (no wrapping)."""
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def png_of(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def grey_picture(width: int, height: int) -> Image.Image:
    """A grey picture with structure (a horizontal ramp, a bright block off centre), so a crop, a
    stretch or a shift shows; grey, so yuv420p's halved chroma loses nothing and the H.264 round trip
    is small (a coloured block's chroma edges cost up to 38 levels per pixel)."""
    ramp = np.linspace(30, 220, width, dtype=np.float32)[None, :] + np.zeros((height, 1), np.float32)
    ramp[height // 4 : height // 2, width // 4 : width // 2] = 250
    return Image.fromarray(np.repeat(ramp[..., None], 3, axis=2).astype(np.uint8))


def animate_request(
    *, seed: int = 5, motion: Motion = Motion.HIGH, of_job: str | None = "job-1"
) -> GenerationRequest:
    """Animate of a `SOURCE_SIZE` picture made by the tiny image model's request."""
    return animate_of(
        tiny_request(),
        source_hash="ab" * 32,  # any hash: the source bytes are handed to run_batch
        size=SOURCE_SIZE,
        motion=motion,
        video_model=VIDEO,
        seed=seed,
        of_job=of_job,
    )


def one_clip(pool: EnginePool, request: GenerationRequest, source: bytes) -> GeneratedImage:
    results = pool.run_batch([request], [source], always)
    assert len(results) == 1 and len(results[0]) == 1
    return results[0][0]


def video_engine_of(pool: EnginePool) -> VideoEngine:
    engine = pool.engine_for(VIDEO)
    assert isinstance(engine, VideoEngine)
    return engine


@dataclass(frozen=True)
class Started:
    """A pool and what it held right after `load_engines` returned."""

    pool: EnginePool
    loaded: tuple[str, ...]
    catalog: tuple[str, ...]
    loads: tuple[str, ...]


def start_pool(
    cache: Path, safety: SafetyOptions | None = None, budget_gb: float | None = None
) -> EnginePool:
    engine = load_engines(
        ModelSet.single("tiny"),
        "cpu",
        cache_dir=cache,
        options=None,
        safety=safety,
        memory_budget_gb=budget_gb,
        video_model=VIDEO,
    )
    assert isinstance(engine, EnginePool)
    return engine


@pytest.fixture(scope="module")
def started(tiny_cache_dir: Path) -> Iterator[Started]:
    """The worker's pool: the tiny image model, and `tiny-video` as VIDEO_MODEL (SAFETY default)."""
    pool = start_pool(tiny_cache_dir)
    yield Started(pool, pool.loaded, tuple(pool.catalog()), tuple(pool.loads))
    pool.close()


@pytest.fixture(scope="module")
def pool(started: Started) -> EnginePool:
    return started.pool


@pytest.fixture(scope="module")
def source_png() -> bytes:
    return tiny_source_png(size=SOURCE_SIZE)


@pytest.fixture(scope="module")
def clip(pool: EnginePool, source_png: bytes) -> GeneratedImage:
    """Seed 5, high motion, of the plain 96×64 picture: made once."""
    return one_clip(pool, animate_request(), source_png)


@pytest.fixture(scope="module")
def clip_frames(clip: GeneratedImage) -> np.ndarray:
    return decode_frames(clip.png)


# -- loading on first use, and the clip's file -------------------------------------------------------


def test_the_video_model_loads_on_first_animate_and_makes_one_h264_clip(
    started: Started, source_png: bytes
) -> None:
    pool = started.pool
    assert started.loaded == ("tiny",)  # not probed at start
    assert started.loads == ("tiny",)
    assert started.catalog == ("tiny",)
    request = animate_request(seed=5, of_job="job-1")
    assert request.mode is Mode.ANIMATE and request.model == VIDEO

    results = pool.run_batch([request], [source_png], always)

    assert VIDEO in pool.loaded and pool.loads.count(VIDEO) == 1
    assert tuple(pool.catalog()) == ("tiny",)  # Animate's model is never offered to `--model`
    assert pool.max_batch_images(request) == 1  # one clip per call
    assert len(results) == 1 and len(results[0]) == 1
    clip = results[0][0]
    family = video_engine_of(pool).family
    size = family.size_for(*SOURCE_SIZE)
    assert size == (64, 48)
    assert clip.media == "mp4" and clip.seed == 5 and clip.nsfw is False
    assert (clip.width, clip.height) == size
    info = probe_mp4(clip.png)
    assert (info.codec, info.pix_fmt) == ("h264", "yuv420p")
    assert info.frames == 9 == family.frames
    assert info.fps == 16.0 == family.fps
    assert (info.width, info.height) == size
    lines = info.comment.splitlines()
    assert lines[0] == "a red fox in the snow"
    fields = lines[1].split(", ")
    assert "Seed: 5" in fields and "Model: tiny-video" in fields
    assert f"Steps: {TINY_VIDEO_STEPS}" in fields and "Size: 64x48" in fields
    assert lines[-1] == "Video: 9 frames at 16 fps, animate (high motion) of job job-1"


def test_the_clip_starts_on_its_picture_fit_to_the_clip(pool: EnginePool) -> None:
    picture = grey_picture(*SOURCE_SIZE)
    clip = one_clip(pool, animate_request(seed=3), png_of(picture))
    frames = decode_frames(clip.png)
    size = (clip.width, clip.height)
    fit = np.asarray(ImageOps.fit(picture, size, Image.Resampling.LANCZOS))
    stretched = np.asarray(picture.resize(size, Image.Resampling.LANCZOS))
    round_trip = decode_frames(encode_mp4(fit[None], 16))[0]  # the encoder's own loss on this picture

    error = mean_diff(frames[0], fit)
    assert mean_diff(round_trip, fit) < FIRST_FRAME_BOUND
    assert error < FIRST_FRAME_BOUND, error  # measured 1.2
    assert mean_diff(frames[0], stretched) > 2 * FIRST_FRAME_BOUND  # cropped, not stretched
    assert mean_diff(frames[-1], frames[0]) > 10  # it moves (measured ~60)


# -- seeds and motion --------------------------------------------------------------------------------


def test_a_seed_makes_the_same_clip_and_another_seed_or_motion_another(
    pool: EnginePool, source_png: bytes, clip_frames: np.ndarray
) -> None:
    again = decode_frames(one_clip(pool, animate_request(seed=5), source_png).png)
    other_seed = decode_frames(one_clip(pool, animate_request(seed=6), source_png).png)
    low = decode_frames(one_clip(pool, animate_request(seed=5, motion=Motion.LOW), source_png).png)

    assert mean_diff(again, clip_frames) < SAME  # measured 0 (the same bytes)
    assert mean_diff(other_seed, clip_frames) > DIFFERENT  # measured 1.3
    assert mean_diff(low, clip_frames) > DIFFERENT  # measured 0.5-0.7
    assert mean_diff(low[0], clip_frames[0]) < SAME  # both start on the picture


# -- Extend ------------------------------------------------------------------------------------------


def test_extend_continues_the_clip_and_keeps_its_frames(
    pool: EnginePool, clip: GeneratedImage, clip_frames: np.ndarray
) -> None:
    request = extend_of(animate_request(), source_hash="cd" * 32, seed=7, of_job="job-2")
    assert request.video is not None and request.video.extend

    extended = one_clip(pool, request, clip.png)

    info = probe_mp4(extended.png)
    assert info.frames == 9 + 9 - 1  # the new clip's first frame repeats the old one's last
    assert (info.width, info.height) == (extended.width, extended.height) == (clip.width, clip.height)
    assert info.fps == 16.0 and extended.media == "mp4" and extended.seed == 7
    assert info.comment.splitlines()[-1] == "Video: 17 frames at 16 fps, extend (high motion) of job job-2"
    frames = decode_frames(extended.png)
    assert frames.shape == (17, clip.height, clip.width, 3)
    for index in range(9):  # re-encoded: a second generation of H.264 loss, nothing more
        assert mean_diff(frames[index], clip_frames[index]) < REENCODED_BOUND, index
    # then it goes on from the last frame rather than holding it (measured 16 levels off at most)
    assert max(mean_diff(frame, clip_frames[-1]) for frame in frames[9:]) > 5


def test_extend_keeps_the_frames_of_the_clip_it_is_given(pool: EnginePool) -> None:
    """A clip the model could not have made (a grey picture sliding right): the tiny model's own
    frames are ~56 levels from it, so keeping it is told apart from redrawing it."""
    still = np.asarray(grey_picture(64, 48))
    made = np.stack([np.roll(still, 3 * index, axis=1) for index in range(9)])
    given = encode_mp4(made, 16)
    given_frames = decode_frames(given)
    request = extend_of(animate_request(motion=Motion.LOW), source_hash="ef" * 32, seed=8, of_job="job-4")

    extended = one_clip(pool, request, given)

    frames = decode_frames(extended.png)
    assert frames.shape == (17, 48, 64, 3) and (extended.width, extended.height) == (64, 48)
    for index in range(9):
        assert mean_diff(frames[index], given_frames[index]) < REENCODED_BOUND, index  # measured < 0.6
    assert min(mean_diff(frame, given_frames[-1]) for frame in frames[9:]) > 10  # the model's own


# -- progress and stopping ---------------------------------------------------------------------------


def test_each_step_is_reported_with_a_still_and_false_stops_the_clip(
    pool: EnginePool, source_png: bytes
) -> None:
    engine = video_engine_of(pool)
    assert engine.family.steps == TINY_VIDEO_STEPS == 4
    heard: list[tuple[int, int]] = []
    stills: list[bytes] = []

    def listen(step: int, total: int, preview: PreviewFn) -> bool:
        heard.append((step, total))
        stills.append(preview(0))
        return True

    pool.run_batch([animate_request(seed=11)], [source_png], listen)
    assert heard == [(step, TINY_VIDEO_STEPS) for step in range(1, TINY_VIDEO_STEPS + 1)]
    for still in stills:
        assert still.startswith(b"\x89PNG\r\n\x1a\n")
        with Image.open(io.BytesIO(still)) as opened:
            assert opened.format == "PNG" and max(opened.size) <= 128

    stopped: list[int] = []

    def stop_at_two(step: int, _total: int, _preview: PreviewFn) -> bool:
        stopped.append(step)
        return step < 2

    with pytest.raises(BatchInterrupted):
        pool.run_batch([animate_request(seed=11)], [source_png], stop_at_two)
    assert stopped == [1, 2]
    assert one_clip(pool, animate_request(seed=11), source_png).media == "mp4"  # the engine goes on


# -- batches -----------------------------------------------------------------------------------------


def test_a_batch_of_two_clips_equals_each_clip_alone(
    pool: EnginePool, clip: GeneratedImage, clip_frames: np.ndarray, source_png: bytes
) -> None:
    first, second = animate_request(seed=5), animate_request(seed=9, of_job="job-3")
    assert first.batch_key() == second.batch_key()
    grey = png_of(grey_picture(*SOURCE_SIZE))

    results = pool.run_batch([first, second], [source_png, grey], always)

    assert [len(images) for images in results] == [1, 1]
    second_alone = one_clip(pool, second, grey)
    for (together,), alone, alone_frames in (
        (results[0], clip, clip_frames),
        (results[1], second_alone, decode_frames(second_alone.png)),
    ):
        assert (together.seed, together.width, together.height) == (alone.seed, alone.width, alone.height)
        assert (together.media, together.nsfw) == (alone.media, alone.nsfw)
        assert probe_mp4(together.png).comment == probe_mp4(alone.png).comment
        assert mean_diff(decode_frames(together.png), alone_frames) < SAME
    assert mean_diff(decode_frames(results[0][0].png), decode_frames(results[1][0].png)) > 10


# -- eviction ----------------------------------------------------------------------------------------


def test_animate_evicts_the_image_model_when_only_one_fits_and_back(
    pool: EnginePool, tiny_cache_dir: Path, source_png: bytes
) -> None:
    video_engine_of(pool)  # both measured
    sizes = sorted(pool.sizes[name] for name in ("tiny", VIDEO))
    budget = sizes[1] + sizes[0] // 2  # the larger fits, not both (tiny ~4.4 MB, tiny-video ~0.3 MB)
    assert sizes[1] < budget < sum(sizes)
    small = start_pool(tiny_cache_dir, budget_gb=budget / 2**30)
    try:
        assert small.loaded == ("tiny",) and small.evictions == []

        clip = one_clip(small, animate_request(), source_png)

        assert clip.media == "mp4"
        assert small.evictions == ["tiny"] and small.loaded == (VIDEO,)
        images = small.run_batch([tiny_request()], [None], always)
        assert len(images[0]) == 1 and images[0][0].media == "png"
        with Image.open(io.BytesIO(images[0][0].png)) as opened:
            assert opened.size == (64, 64)
        assert small.evictions == ["tiny", VIDEO] and small.loaded == ("tiny",)
        assert small.loads == ["tiny", VIDEO, "tiny"]

        again = one_clip(small, animate_request(), source_png)  # loaded again, the same clip

        assert small.evictions == ["tiny", VIDEO, "tiny"] and small.loaded == (VIDEO,)
        assert mean_diff(decode_frames(again.png), decode_frames(clip.png)) < SAME
    finally:
        small.close()


# -- SAFETY ------------------------------------------------------------------------------------------


def test_safety_require_flags_every_clip_and_the_default_none(
    tiny_cache_dir: Path, source_png: bytes, clip: GeneratedImage
) -> None:
    assert clip.nsfw is False  # SAFETY's default ("model"): the tiny video model has no checker
    # "tiny": the built-in standalone checker for the image model (nothing from the hub).
    required = start_pool(tiny_cache_dir, safety=SafetyOptions("require", "tiny"))
    try:
        grey = png_of(grey_picture(*SOURCE_SIZE))
        results = required.run_batch(
            [animate_request(seed=5), animate_request(seed=9)], [source_png, grey], always
        )
        assert [[image.nsfw for image in images] for images in results] == [[True], [True]]
        assert all(images[0].media == "mp4" for images in results)
    finally:
        required.close()
