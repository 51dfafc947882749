"""`python -m bench service --edits`: edit jobs through the real `GenerationService` on `tiny`.

For each of Zoom Out 2x and Vary (Subtle): `--jobs` one-image edit jobs of distinct pictures and
seeds (as many members clicking at once), through a service with batching on (its default cap)
against one with one job per pipeline call, alternating which runs first in each of `--rounds`
rounds. The figure is the median of the per-round ratios sequential / batched (with a 95% CI).
Also: the bytes of weights the `from_pipe` inpainting and image-to-image pipelines add to the
loaded model (0 when they share its modules, as they should)."""

from __future__ import annotations

import io
import statistics
from pathlib import Path
from typing import Any

from bench.edits import pictures
from bench.service_run import run_service
from bench.stats import median_ci95
from generation.media.canvas import SizeCap, canvas_size
from generation.prompts.edits import Direction, EditKind, EditSpec, edit_spec
from generation.prompts.request import GenerationRequest, edit_of
from generation.scheduling.job_state import MemoryImages

KINDS: dict[str, EditSpec] = {
    "zoom_out_2x": edit_spec(EditKind.ZOOM_OUT, factor=2),
    "vary_subtle": edit_spec(EditKind.VARY_SUBTLE),
    "pan_left": edit_spec(EditKind.PAN, direction=Direction.LEFT),
}


def edit_requests(
    spec: EditSpec, jobs: int, size: int, steps: int, images: MemoryImages, native: int
) -> list[GenerationRequest]:
    """`jobs` one-image edits of `spec`, each of its own picture and seed."""
    out = []
    for i, picture in enumerate(pictures(jobs, size)):
        buffer = io.BytesIO()
        picture.save(buffer, "PNG")
        parent = GenerationRequest(
            prompt=f"a fox in the snow, take {i}",
            width=size,
            height=size,
            steps=steps,
            guidance=7.5,
            seeds=(i,),
            model="tiny",
        )
        shape = canvas_size(spec, picture.size, SizeCap.for_native(native))
        out.append(edit_of(parent, spec, images.add(buffer.getvalue()), shape, (1000 + i,)))
    return out


async def run(jobs: int, rounds: int, size: int, steps: int, cache_dir: Path) -> dict[str, Any]:
    """Run the comparison and return the figures."""
    import torch

    from generation.backends.local import GenerationService
    from generation.pipelines.engine import DiffusersEngine
    from generation.pipelines.inpaint import added_weight_bytes
    from generation.pipelines.loading import load_pipeline

    model = load_pipeline("tiny", "cpu", cache_dir=cache_dir)
    engine = DiffusersEngine(model)
    pipes = engine.edit_pipelines()  # what the engine uses for edits, made once
    threads = torch.get_num_threads()

    def factory() -> Any:
        torch.set_num_threads(threads)  # the worker thread gets this thread's torch threads
        return engine

    images = MemoryImages()
    figures: dict[str, Any] = {"jobs": jobs, "rounds": rounds, "size": size, "steps": steps}
    figures["from_pipe_added_bytes"] = added_weight_bytes(model.text2img, pipes.inpaint) + added_weight_bytes(
        model.text2img, pipes.img2img
    )
    services = {
        "sequential": GenerationService(factory, images, job_timeout_s=600.0, max_batch=1),
        "batched": GenerationService(factory, images, job_timeout_s=600.0),
    }
    for service in services.values():
        await service.start()
    try:
        for name, spec in KINDS.items():
            requests = edit_requests(spec, jobs, size, steps, images, model.profile.native_size)
            for kind, service in services.items():  # warm-up: first calls, allocator, thread pools
                await run_service(service, requests[:2], f"warm-{name}-{kind}")
            times: dict[str, list[float]] = {"sequential": [], "batched": []}
            for round_index in range(rounds):
                order = ["batched", "sequential"] if round_index % 2 == 0 else ["sequential", "batched"]
                for kind in order:
                    one = await run_service(services[kind], requests, f"{name}-{kind}{round_index}")
                    times[kind].append(one.elapsed_s)
            ratios = [s / b for s, b in zip(times["sequential"], times["batched"], strict=True)]
            low, high = median_ci95(ratios)
            figures[f"{name}_batched_speedup"] = round(statistics.median(ratios), 3)
            figures[f"{name}_batched_speedup_ci95"] = [round(low, 3), round(high, 3)]
            figures[f"{name}_batched_s"] = round(statistics.median(times["batched"]), 4)
            figures[f"{name}_sequential_s"] = round(statistics.median(times["sequential"]), 4)
            figures[f"{name}_size"] = f"{requests[0].width}x{requests[0].height}"
    finally:
        for service in services.values():
            await service.close()
    return figures
