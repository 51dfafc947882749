"""`python -m bench service --edits`: edit jobs through the real `GenerationService` on `tiny`.

For each of Zoom Out 2x, Vary (Subtle) and Pan Left: `--jobs` one-image edit jobs of distinct
pictures and seeds (as many members clicking at once), through a service with batching on (its
default cap) against one with one job per pipeline call, alternating which runs first in each of
`--rounds` rounds. The figure is the median of the per-round ratios sequential / batched (with a 95%
CI). Also: the bytes of weights the `from_pipe` inpainting and image-to-image pipelines add to the
loaded model (0 when they share its modules, as they should).

`--edits --families` (`--only` picks some) runs the same per family, on each built-in tiny model
whose family has the edit buttons: pictures at the model's native size, its default steps and
guidance (`--size` and `--steps` are `tiny`'s), every edit sized by the model's own cap and size step
(`SizeCap.for_profile`, as the engine sizes its canvases). The figures of each model are under
`families`; `from_pipe_added_bytes` is their sum (0 when every family shares its modules)."""

from __future__ import annotations

import io
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.edits import pictures
from bench.service_run import run_service
from bench.stats import median_ci95
from generation.media.canvas import SizeCap, canvas_size
from generation.prompts.edits import Direction, EditKind, EditSpec, edit_spec
from generation.prompts.request import GenerationRequest, ModelProfile, edit_of
from generation.scheduling.job_state import MemoryImages

KINDS: dict[str, EditSpec] = {
    "zoom_out_2x": edit_spec(EditKind.ZOOM_OUT, factor=2),
    "vary_subtle": edit_spec(EditKind.VARY_SUBTLE),
    "pan_left": edit_spec(EditKind.PAN, direction=Direction.LEFT),
}


def edit_requests(
    spec: EditSpec,
    jobs: int,
    parent: GenerationRequest,
    profile: ModelProfile,
    images: MemoryImages,
) -> list[GenerationRequest]:
    """`jobs` one-image edits of `spec`, each of its own picture (of the parent's size) and seed,
    sized as the bot sizes them on `profile`'s model."""
    cap = SizeCap.for_profile(profile)
    out = []
    for i, picture in enumerate(pictures(jobs, parent.width)):
        buffer = io.BytesIO()
        picture.save(buffer, "PNG")
        one = GenerationRequest(
            prompt=f"a fox in the snow, take {i}",
            width=parent.width,
            height=parent.height,
            steps=parent.steps,
            guidance=parent.guidance,
            seeds=(i,),
            model=parent.model,
        )
        shape = canvas_size(spec, picture.size, cap)
        out.append(edit_of(one, spec, images.add(buffer.getvalue()), shape, (1000 + i,)))
    return out


async def measure(engine: Any, jobs: int, rounds: int, parent: GenerationRequest) -> dict[str, Any]:
    """`from_pipe_added_bytes` and each edit kind's figures on `engine` (edits of pictures of the
    parent's size, steps and guidance)."""
    import torch

    from generation.backends.local import GenerationService
    from generation.pipelines.inpaint import added_weight_bytes

    model = engine.model
    pipes = engine.edit_pipelines()  # what the engine uses for edits, made once
    threads = torch.get_num_threads()

    def factory() -> Any:
        torch.set_num_threads(threads)  # the worker thread gets this thread's torch threads
        return engine

    images = MemoryImages()
    figures: dict[str, Any] = {
        "from_pipe_added_bytes": added_weight_bytes(model.text2img, pipes.inpaint)
        + added_weight_bytes(model.text2img, pipes.img2img)
    }
    services = {
        "sequential": GenerationService(factory, images, job_timeout_s=600.0, max_batch=1),
        "batched": GenerationService(factory, images, job_timeout_s=600.0),
    }
    for service in services.values():
        await service.start()
    try:
        for name, spec in KINDS.items():
            requests = edit_requests(spec, jobs, parent, engine.profile, images)
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


def _parent(model_id: str, size: int, steps: int, guidance: float) -> GenerationRequest:
    """The settings every edited picture was made with (its prompt and seed are the edit's own)."""
    return GenerationRequest(
        prompt="a fox in the snow",
        width=size,
        height=size,
        steps=steps,
        guidance=guidance,
        seeds=(0,),
        model=model_id,
    )


async def run(jobs: int, rounds: int, size: int, steps: int, cache_dir: Path) -> dict[str, Any]:
    """Run the comparison on `tiny` and return the figures."""
    from generation.pipelines.engine import DiffusersEngine

    engine = DiffusersEngine.load("tiny", "cpu", cache_dir=cache_dir)
    figures: dict[str, Any] = {"jobs": jobs, "rounds": rounds, "size": size, "steps": steps}
    figures.update(await measure(engine, jobs, rounds, _parent("tiny", size, steps, 7.5)))
    return figures


async def one_family(model_id: str, jobs: int, rounds: int, cache_dir: Path) -> dict[str, Any] | None:
    """The figures of one family's tiny model, at its native size, default steps and guidance; None
    where its family has no edit buttons."""
    from generation.pipelines.engine import DiffusersEngine

    engine = DiffusersEngine.load(model_id, "cpu", cache_dir=cache_dir)
    profile = engine.profile
    if not profile.features.edits:
        return None
    parent = _parent(model_id, profile.native_size, profile.default_steps, profile.default_guidance)
    figures: dict[str, Any] = {
        "family": profile.features.family,
        "size": profile.native_size,
        "size_step": SizeCap.for_profile(profile).unit,
        "steps": profile.default_steps,
        "guidance": profile.default_guidance,
    }
    figures.update(await measure(engine, jobs, rounds, parent))
    return figures


async def run_families(jobs: int, rounds: int, cache_dir: Path, only: Sequence[str] = ()) -> dict[str, Any]:
    """Each family's edit figures (`only`: these model ids; default: every built-in tiny model), in
    the order of `BUILTIN_MODEL_IDS`. A model whose family has no edit buttons is listed under
    `no_edits`; named in `only`, it is an error."""
    from generation.pipelines.source import BUILTIN_MODEL_IDS

    unknown = set(only) - set(BUILTIN_MODEL_IDS)
    if unknown:
        raise ValueError(f"not a built-in tiny model: {', '.join(sorted(unknown))}")
    chosen = [m for m in BUILTIN_MODEL_IDS if not only or m in only]
    families: dict[str, dict[str, Any]] = {}
    no_edits: list[str] = []
    for model_id in chosen:
        one = await one_family(model_id, jobs, rounds, cache_dir)
        if one is None and only:
            raise ValueError(f"{model_id}'s family has no edit buttons")
        if one is None:
            no_edits.append(model_id)
        else:
            families[model_id] = one
    speedups = [f[f"{kind}_batched_speedup"] for f in families.values() for kind in KINDS]
    return {
        "jobs": jobs,
        "rounds": rounds,
        "from_pipe_added_bytes": sum(f["from_pipe_added_bytes"] for f in families.values()),
        "lowest_batched_speedup": min(speedups),
        "no_edits": no_edits,
        "families": families,
    }
