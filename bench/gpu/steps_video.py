"""The GPU run's image-to-video step: Wan 2.1 image-to-video 14B 480P (`bench.archs_video`) built full size
with random weights (`bench.gpu.build_video`), one clip's call timed for a few denoising steps: seconds
per step, the clip's seconds and frames/s extrapolated to the model's own steps, and peak memory."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from PIL import Image

from bench.gpu.build_dit import parameter_counts, weights_bytes
from bench.gpu.build_video import build_video_pipeline
from bench.gpu.context import Run, bad_images
from bench.gpu.plan import PROMPT
from bench.gpu.records import gpu_clocks
from bench.gpu.timing import StepClock, allocated_gib, peak_memory_gib, reset_peak, sync

NAME = "wan21-i2v-14b-480p"


def wan_i2v(run: Run) -> None:
    """Wan 2.1 image-to-video at 832×480, 81 frames, CFG 5, bf16: a build record (`video_build`) and one
    timed clip call of the plan's `video_steps` steps (`video_clip`), after an untimed one-step call."""
    arch = run.plan.video_arch(NAME)
    dtype = run.dit_dtype
    held_before = allocated_gib(run.device)
    start = time.perf_counter()
    pipe = build_video_pipeline(arch, run.device, dtype)
    sync(run.device)
    run.pipes[NAME] = pipe
    try:
        run.results.write(
            "video_build",
            arch=arch.name,
            pipeline=type(pipe).__name__,
            source=arch.source,
            dtype=str(dtype).removeprefix("torch."),
            build_s=time.perf_counter() - start,
            parameters=parameter_counts(pipe),
            weights_gib=weights_bytes(pipe) / 2**30,
            held_before_gib=held_before,
            shortcuts=list(arch.shortcuts),
        )
        picture = Image.fromarray(
            np.random.default_rng(0).integers(0, 256, (arch.height, arch.width, 3), dtype=np.uint8)
        )

        def call(steps: int, clock: StepClock | None = None) -> Any:
            return pipe(
                image=picture,
                prompt=PROMPT,
                width=arch.width,
                height=arch.height,
                num_frames=arch.frames,
                num_inference_steps=steps,
                guidance_scale=arch.guidance,
                max_sequence_length=arch.max_sequence_length,
                generator=run.generators(1)[0],
                output_type="np",
                callback_on_step_end=clock,
            ).frames

        call(1)  # warm: first kernels, allocator, attention backends
        weights = allocated_gib(run.device)
        reset_peak(run.device)
        clock = StepClock(run.device)
        steps = run.plan.video_steps
        sync(run.device)
        began = time.perf_counter()
        frames = call(steps, clock)
        sync(run.device)
        call_s = time.perf_counter() - began
        steps_per_s = clock.steps_per_s()
        assert steps_per_s is not None  # video_steps is at least 2
        bad = bad_images(frames[0])  # each frame an image
        clip_s = call_s + (arch.steps - steps) / steps_per_s  # the model's own steps at the measured rate
        run.results.write(
            "video_clip",
            arch=arch.name,
            dtype=str(dtype).removeprefix("torch."),
            width=arch.width,
            height=arch.height,
            frames=arch.frames,
            fps=arch.fps,
            guidance=arch.guidance,
            timed_steps=steps,
            model_steps=arch.steps,
            call_s=call_s,
            step_s=1.0 / steps_per_s,
            clip_s=clip_s,
            frames_per_s=arch.frames / clip_s,
            video_s_per_s=arch.frames / arch.fps / clip_s,
            peak_memory_gib=peak_memory_gib(run.device),
            weights_gib=weights,
            clocks=gpu_clocks(),
            nan_images=bad["nan_images"],
            black_images=bad["black_images"],
        )
    finally:
        run.drop(NAME)
