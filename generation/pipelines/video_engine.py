"""`VideoEngine`: the `Engine` contract over an image-to-video model (`VIDEO_MODEL`, "Animate").

One clip per request (a batch of clips runs one call each: their start pictures differ, and an
image-to-video call takes one). A clip starts from its request's picture at the picture's aspect
snapped to the model's sizes, with the model's own frame count, steps and guidance
(`generation.families.video`); an Extend starts from the last frame of the clip it continues
(`VideoSpec.extend`: the source is that MP4) at its size, about `EXTEND_SECONDS` long, and the two are
joined. A clip's first frame is its picture itself (fit to the clip's size), so it starts exactly on
it: the model's own first frame is the picture through the VAE and back, a shade off. Each clip
comes back as an H.264 MP4 (`generation.media.video`) whose `comment` is the picture's `parameters`
text plus a `Video:` line. Progress reports each step with a still of the start picture. Not
thread-safe: the worker thread that owns the model owns its engine.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from generation.backends.protocol import GeneratedImage
from generation.families.features import Features, Guidance
from generation.families.video import VideoFamily
from generation.media.compose import parameters_text
from generation.media.image_store import load_source
from generation.media.video import decode_frames, encode_mp4, join_clips
from generation.pipelines.contract import BatchInterrupted, NonFiniteOutput, OutOfMemory, StepCallback
from generation.pipelines.engine import SAMPLER_NAMES
from generation.pipelines.loading import choose_dtype, resolve_device
from generation.pipelines.source import default_cache_dir
from generation.pipelines.video_run import (
    NonFiniteVideo,
    VideoInterrupted,
    animate,
    load_video_pipeline,
    preview_png,
)
from generation.prompts.request import GenerationRequest, ModelProfile

log = logging.getLogger(__name__)

TINY_VIDEO_STEPS = 4
EXTEND_SECONDS = 4.0  # an Extend adds about this much (never more frames than a clip of its own)


class VideoEngine:
    """Clips from pictures on one loaded image-to-video pipeline."""

    def __init__(
        self, name: str, pipe: Any, family: VideoFamily, *, unscreened_flagged: bool = False
    ) -> None:
        """`unscreened_flagged`: SAFETY=require, and no checker screens a clip: every clip is flagged
        (posted only where flagged pictures may be)."""
        self.name = name
        self.pipeline = pipe
        self.family = family
        self._flag = unscreened_flagged
        scheduler = type(pipe.scheduler).__name__
        self.sampler = SAMPLER_NAMES.get(scheduler, scheduler.removesuffix("Scheduler"))
        self.profile = ModelProfile(
            name=name,
            native_size=round(family.pixels**0.5),
            default_steps=family.steps,
            default_guidance=family.guidance,
            features=Features(
                family="video",
                label=family.name,
                guidance=Guidance.CLASSIC,
                weights=False,
                samplers=(),
                tile=False,
                stop=False,
                chaos=False,
                edits=False,
                strength=False,
                lora=None,
                size_step=family.size_step,
            ),
        )
        self._tokenizer = getattr(pipe, "tokenizer", None)

    @classmethod
    def load(
        cls, name: str, source: str, device: str, *, cache_dir: Path | None, flag_unscreened: bool = False
    ) -> VideoEngine:
        """Load `source` (`tiny-video`/`tiny-ltx-video`, a hub id or a diffusers folder) onto `device`."""
        from generation.pipelines.tiny_video import TINY_VIDEO_IDS, ensure_tiny_video

        folder = source
        if source in TINY_VIDEO_IDS:
            folder = str(ensure_tiny_video(cache_dir or default_cache_dir(), source))
        device = resolve_device(device)
        dtype = choose_dtype(device, None)
        log.info("loading video model %s (%s) on %s", name, source, device)
        pipe, family = load_video_pipeline(folder, device, dtype, cache_dir if folder == source else None)
        if source in TINY_VIDEO_IDS:  # the test models: few steps, as the tiny image models
            family = replace(family, steps=TINY_VIDEO_STEPS)
        log.info(
            "video model %s loaded: %s, %d frames at %d fps", name, family.name, family.frames, family.fps
        )
        return cls(name, pipe, family, unscreened_flagged=flag_unscreened)

    # -- the Engine contract ------------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` by the model's tokenizer (words where it has none)."""
        if self._tokenizer is None:
            return len(text.split())
        return len(self._tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"])

    def max_batch_images(self, request: GenerationRequest) -> int:
        """One clip per call."""
        return 1

    def run_batch(
        self,
        requests: Sequence[GenerationRequest],
        sources: Sequence[bytes | None],
        on_step: StepCallback,
        pictures: Mapping[str, bytes] | None = None,
    ) -> list[list[GeneratedImage]]:
        """One clip per request, in order; see `Engine.run_batch`."""
        results: list[list[GeneratedImage]] = []
        failed: set[int] = set()
        for index, (request, source) in enumerate(zip(requests, sources, strict=True)):
            if source is None or request.video is None:
                raise ValueError("a clip needs its start picture (or clip) and its video settings")
            try:
                results.append([self._clip(request, source, on_step)])
            except NonFiniteVideo as exc:
                log.warning("clip of %s: %s", request.model, exc)
                failed.add(index)
                results.append([])
        if failed:
            raise NonFiniteOutput(frozenset(failed), results)
        return results

    def close(self) -> None:
        """Let go of the pipeline (the pool unloads it)."""
        self.pipeline = None

    # -- one clip ------------------------------------------------------------------------------------

    def _clip(self, request: GenerationRequest, source: bytes, on_step: StepCallback) -> GeneratedImage:
        assert request.video is not None
        family = self.family
        before: np.ndarray | None = None
        if request.video.extend:
            before = decode_frames(source)
            picture = Image.fromarray(before[-1])
            width, height = picture.size
            frames = min(family.frames, family.snap_frames(round(EXTEND_SECONDS * family.fps) + 1))
        else:
            picture = load_source(source)
            width, height = family.size_for(picture.width, picture.height)
            frames = family.frames
        steps = request.steps or family.steps
        guidance = request.guidance or family.guidance
        still = preview_png(picture)

        def report(step: int, total: int) -> bool:
            return on_step(step, total, lambda _index: still)

        try:
            clip = animate(
                self.pipeline,
                family,
                picture,
                request.prompt,
                request.negative_prompt,
                width,
                height,
                frames,
                steps,
                guidance,
                request.video.motion.value,
                request.seeds[0],
                report,
                first_frames=0 if before is not None else 1,  # a clip starts exactly on its picture
            )
        except VideoInterrupted as exc:
            raise BatchInterrupted(str(exc)) from exc
        except RuntimeError as exc:
            if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower():
                raise OutOfMemory(
                    f"out of device memory for a {frames}-frame clip at {width}×{height}"
                ) from exc
            raise
        if before is not None:
            clip = join_clips(before, clip)  # the new clip starts on the old one's last frame
        said = replace(request, width=width, height=height, steps=steps, guidance=guidance)
        comment = "\n".join(
            (
                parameters_text(said, request.seeds[0], sampler=self.sampler),
                f"Video: {len(clip)} frames at {family.fps} fps, {request.video.describe()}"
                + (f" of job {request.video.of_job}" if request.video.of_job else ""),
            )
        )
        mp4 = encode_mp4(clip, family.fps, comment=comment)
        return GeneratedImage(
            png=mp4, seed=request.seeds[0], width=width, height=height, nsfw=self._flag, media="mp4"
        )
