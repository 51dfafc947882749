"""`python -m bench service --video`: Animate clips on `tiny-video` through the real `GenerationService`.

`tiny-video` (a tiny Wan image-to-video model: 64×48, 9 frames at 16 fps, 4 steps on the CPU) loaded
with `VideoEngine.load` as the bot loads `VIDEO_MODEL`; `--jobs` Animate requests (`animate_of`, low
motion) of distinct pictures and seeds. In each of `--rounds` rounds, back to back and alternating
which goes first:

- **engine**: the clips as `VideoEngine.run_batch` of one request at a time (the model call, the
  first frame set to the picture, the H.264 encode with its parameters): what the worker calls;
- **service**: the same requests submitted at once through `GenerationService` (its default batching,
  each job's events read as the bot reads them), the pictures in its source-image store.

`frames_per_s` is the clip's frames over the service's seconds per clip (the median over the rounds),
`engine_frames_per_s` the same for the engine alone, and `service_overhead_pct` the median of the
per-round ratios service / engine (with a 95% CI). Then, on the decoded frames of one clip:
`encode_s_per_video_s`, the seconds `encode_mp4` takes per second of video (the median of `--rounds`
encodes; the engine's share of a clip that is not the model); and the MP4 against upload limits:
Discord's default 10 MiB (the project falls back to 8 MiB, `jobs.delivery.DEFAULT_UPLOAD_LIMIT`, where
an interaction does not say), 64 KiB, and `tight`, 90% of the clip's own bytes, which makes
`fit_mp4_bytes` re-encode it (the tiny clip is a few KB, under both others, which it returns as is).
Each limit's bytes before and after, whether the result is under the limit, whether it was re-encoded,
its size and frames, and the milliseconds `fit_mp4_bytes` took.

Batched against one-by-one clip jobs is not measured: `VideoEngine` makes one clip per pipeline call
(`max_batch_images` is 1: each clip starts from its own picture, and an image-to-video call takes one),
so the service's batching has nothing to put together; a "batched" pass would be the sequential one
again. `engine` against `service` is the comparison that means something here.
"""

from __future__ import annotations

import io
import statistics
import time
from pathlib import Path
from typing import Any

from bench.service_run import run_service
from bench.stats import median_ci95
from generation.prompts.request import GenerationRequest, animate_of
from generation.prompts.video import Motion
from generation.scheduling.job_state import MemoryImages

MODEL = "tiny-video"
DISCORD_LIMIT = 10 * 2**20  # Discord's default per-file upload limit
SMALL_LIMIT = 64 * 2**10
TIGHT_SHARE = 0.9  # the `tight` limit: this share of the clip's own bytes (forces a re-encode)
ENCODE_REPEATS = 5  # encodes per round, their mean one figure (a tiny clip encodes in milliseconds)


def clip_requests(jobs: int, images: MemoryImages, size: tuple[int, int]) -> list[GenerationRequest]:
    """`jobs` Animate requests, each of its own picture (of `size`, kept in `images`) and seed."""
    from bench.edits import pictures

    width, height = size
    requests = []
    for i, picture in enumerate(pictures(jobs, max(size))):
        buffer = io.BytesIO()
        picture.crop((0, 0, width, height)).save(buffer, "PNG")
        parent = GenerationRequest(
            prompt=f"a fox in the snow, take {i}",
            width=width,
            height=height,
            steps=20,
            guidance=7.5,
            seeds=(i,),
            model="tiny",
        )
        requests.append(
            animate_of(
                parent,
                source_hash=images.add(buffer.getvalue()),
                size=size,
                motion=Motion.LOW,
                video_model=MODEL,
                seed=3000 + i,
            )
        )
    return requests


def run_engine(engine: Any, requests: list[GenerationRequest], images: MemoryImages) -> tuple[float, bytes]:
    """Seconds for `engine.run_batch` of one request at a time, and the last clip's MP4."""
    mp4 = b""
    start = time.perf_counter()
    for request in requests:
        assert request.source_image is not None
        [[clip]] = engine.run_batch([request], [images.get(request.source_image)], lambda *_: True)
        mp4 = clip.png
    return time.perf_counter() - start, mp4


def encode_seconds(frames: Any, fps: float) -> float:
    """Mean seconds of one `encode_mp4` of `frames` over `ENCODE_REPEATS` encodes."""
    from generation.media.video import encode_mp4

    start = time.perf_counter()
    for _ in range(ENCODE_REPEATS):
        encode_mp4(frames, fps)
    return (time.perf_counter() - start) / ENCODE_REPEATS


def fit_figures(mp4: bytes, limit: int) -> dict[str, Any]:
    """`fit_mp4_bytes(mp4, limit)`: bytes before and after, under the limit, re-encoded, its size."""
    from generation.media.video import VideoTooLarge, fit_mp4_bytes, probe_mp4

    start = time.perf_counter()
    try:
        fitted = fit_mp4_bytes(mp4, limit)
    except VideoTooLarge as exc:
        return {"limit_bytes": limit, "before_bytes": len(mp4), "too_large": str(exc)}
    elapsed = time.perf_counter() - start
    info = probe_mp4(fitted)
    return {
        "limit_bytes": limit,
        "before_bytes": len(mp4),
        "after_bytes": len(fitted),
        "under_limit": len(fitted) <= limit,
        "reencoded": fitted is not mp4,
        "size": f"{info.width}x{info.height}",
        "frames": info.frames,
        "fit_ms": round(elapsed * 1000, 2),
    }


async def run(jobs: int, rounds: int, cache_dir: Path) -> dict[str, Any]:
    """Run the measurements on `tiny-video` and return the figures."""
    import torch

    from generation.backends.local import GenerationService
    from generation.media.video import decode_frames, probe_mp4
    from generation.pipelines.video_engine import VideoEngine

    start = time.perf_counter()
    engine = VideoEngine.load(MODEL, MODEL, "cpu", cache_dir=cache_dir)
    load_s = time.perf_counter() - start
    family = engine.family
    threads = torch.get_num_threads()

    def factory() -> Any:
        torch.set_num_threads(threads)  # the worker's intra-op threads as the engine loop's
        return engine

    images = MemoryImages()
    requests = clip_requests(jobs, images, (family.width, family.height))
    service = GenerationService(factory, images, job_timeout_s=600.0)
    await service.start()
    times: dict[str, list[float]] = {"engine": [], "service": []}
    encodes: list[float] = []
    try:
        _, mp4 = run_engine(engine, requests[:1], images)  # warm: first calls, thread pools, allocator
        await run_service(service, requests[:1], "warm-video")
        info = probe_mp4(mp4)
        frames = decode_frames(mp4)
        encode_seconds(frames, info.fps)  # warm the encoder too
        for round_index in range(rounds):
            order = ["engine", "service"] if round_index % 2 == 0 else ["service", "engine"]
            for kind in order:
                if kind == "engine":
                    elapsed, mp4 = run_engine(engine, requests, images)
                    times[kind].append(elapsed)
                else:
                    one = await run_service(service, requests, f"video{round_index}")
                    times[kind].append(one.elapsed_s)
            encodes.append(encode_seconds(frames, info.fps))
    finally:
        await service.close()
    info = probe_mp4(mp4)
    video_s = info.frames / info.fps
    clip_s = {kind: statistics.median(values) / jobs for kind, values in times.items()}
    ratios = [s / e for s, e in zip(times["service"], times["engine"], strict=True)]
    limits = {"10mib": DISCORD_LIMIT, "64kib": SMALL_LIMIT, "tight": int(len(mp4) * TIGHT_SHARE)}
    fits = {name: fit_figures(mp4, limit) for name, limit in limits.items()}
    encode_s = statistics.median(encodes)
    return {
        "model": MODEL,
        "jobs": jobs,
        "rounds": rounds,
        "torch_threads": threads,
        "load_s": round(load_s, 3),
        "size": f"{info.width}x{info.height}",
        "frames": info.frames,
        "fps": info.fps,
        "steps": family.steps,
        "video_s": round(video_s, 4),
        "clip_s": round(clip_s["service"], 4),
        "frames_per_s": round(info.frames / clip_s["service"], 2),
        "engine_clip_s": round(clip_s["engine"], 4),
        "engine_frames_per_s": round(info.frames / clip_s["engine"], 2),
        "service_overhead_pct": round((statistics.median(ratios) - 1.0) * 100, 2),
        "service_overhead_pct_ci95": [round((r - 1.0) * 100, 2) for r in median_ci95(ratios)],
        "encode_ms": round(encode_s * 1000, 3),
        "encode_s_per_video_s": round(encode_s / video_s, 5),
        "mp4_bytes": len(mp4),
        "mp4_kbit_per_s": round(len(mp4) * 8 / video_s / 1000, 1),
        "fits_every_limit": all(f.get("under_limit", False) for f in fits.values()),
        "fit": fits,
    }
