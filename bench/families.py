"""`python -m bench service --families`: every model family's tiny model through the service against
the bare pipeline call, and what recognising and setting up a family costs at load.

Per family (`--only` picks some), in one process:
- **load_s**: `load_pipeline` of its tiny model (from the built cache: read, recognise, profile);
- **setup_ms**: the family layer's own share of that, `recognise` plus `make_profile`, median of 20;
- **bare** and **service** rounds, back to back and alternating which goes first: the same `--jobs`
  requests at the model's native size and default steps as plain pipeline calls (the call a user
  makes for the same picture: the family's guidance arguments included), and through
  `GenerationService` with `max_batch=1`. `overhead_pct` is the median of the per-round ratios, with
  its 95% confidence interval.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.service_run import run_service
from bench.stats import median_ci95
from generation.pipelines.source import BUILTIN_MODEL_IDS
from generation.prompts.request import GenerationRequest

SETUP_RUNS = 20


class _NoImages:
    def get(self, digest: str) -> bytes:
        raise KeyError(digest)


def family_requests(profile: Any, jobs: int) -> list[GenerationRequest]:
    """`jobs` one-image requests at the profile's native size, default steps and guidance."""
    side = profile.native_size
    return [
        GenerationRequest(
            prompt=f"a red fox in the snow, picture {i}",
            width=side,
            height=side,
            steps=profile.default_steps,
            guidance=profile.default_guidance,
            seeds=(2000 + i,),
            model=profile.name,
        )
        for i in range(jobs)
    ]


def bare_call(model: Any, request: GenerationRequest) -> Any:
    """The plain pipeline call for `request`, with the arguments its family's pipeline takes."""
    import torch

    kwargs: dict[str, Any] = {
        "prompt": [request.prompt],
        "negative_prompt": [request.negative_prompt],
        "width": request.width,
        "height": request.height,
        "num_inference_steps": request.steps,
        "guidance_scale": request.guidance,
        "generator": torch.Generator("cpu").manual_seed(request.seeds[0]),
    }
    model.family.call_arguments(model.text2img, request, kwargs)
    return model.text2img(**kwargs)


def run_bare(model: Any, requests: Sequence[GenerationRequest]) -> float:
    """Seconds for the plain calls, one request at a time."""
    start = time.perf_counter()
    for request in requests:
        bare_call(model, request)
    return time.perf_counter() - start


def setup_ms(model: Any) -> float:
    """Median milliseconds of recognising the loaded pipeline's family and making its profile."""
    from generation.families.registry import recognise
    from generation.pipelines.loading import make_profile

    times = []
    for _ in range(SETUP_RUNS):
        start = time.perf_counter()
        make_profile(model.model_id, model.text2img, recognise(model.text2img), has_safety_checker=False)
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1000, 3)


async def one_family(model_id: str, jobs: int, rounds: int, cache_dir: Path) -> dict[str, Any]:
    """The figures of one family's tiny model."""
    import torch

    from generation.backends.local import GenerationService
    from generation.pipelines.engine import DiffusersEngine
    from generation.pipelines.loading import load_pipeline

    start = time.perf_counter()
    model = load_pipeline(model_id, "cpu", cache_dir=cache_dir)
    load_s = time.perf_counter() - start
    engine = DiffusersEngine(model)
    threads = torch.get_num_threads()

    def factory() -> Any:
        torch.set_num_threads(threads)  # the worker's intra-op threads as the bare loop's
        return engine

    service = GenerationService(factory, _NoImages(), job_timeout_s=600.0, max_batch=1)
    await service.start()
    requests = family_requests(engine.profile, jobs)
    times: dict[str, list[float]] = {"bare": [], "service": []}
    try:
        run_bare(model, requests[:1])  # warm: first calls, thread pools, allocator
        await run_service(service, requests[:1], f"warm-{model_id}")
        for round_index in range(rounds):
            pair = ["bare", "service"] if round_index % 2 == 0 else ["service", "bare"]
            for kind in pair:
                if kind == "bare":
                    times[kind].append(run_bare(model, requests))
                else:
                    one = await run_service(service, requests, f"{model_id}-{round_index}")
                    times[kind].append(one.elapsed_s)
    finally:
        await service.close()
    ratios = [s / b for s, b in zip(times["service"], times["bare"], strict=True)]
    return {
        "family": engine.profile.features.family,
        "size": engine.profile.native_size,
        "steps": engine.profile.default_steps,
        "load_s": round(load_s, 3),
        "setup_ms": setup_ms(model),
        "bare_ms_per_job": round(statistics.median(times["bare"]) * 1000 / jobs, 1),
        "service_ms_per_job": round(statistics.median(times["service"]) * 1000 / jobs, 1),
        "overhead_pct": round((statistics.median(ratios) - 1.0) * 100, 2),
        "overhead_pct_ci95": [round((r - 1.0) * 100, 2) for r in median_ci95(ratios)],
    }


async def run(jobs: int, rounds: int, cache_dir: Path, only: Sequence[str] = ()) -> dict[str, Any]:
    """Every family's figures (`only`: these model ids), in the order of `BUILTIN_MODEL_IDS`."""
    unknown = set(only) - set(BUILTIN_MODEL_IDS)
    if unknown:
        raise ValueError(f"not a built-in tiny model: {', '.join(sorted(unknown))}")
    chosen = [m for m in BUILTIN_MODEL_IDS if not only or m in only]
    figures = {model_id: await one_family(model_id, jobs, rounds, cache_dir) for model_id in chosen}
    worst = max(f["overhead_pct"] for f in figures.values())
    slowest = max(f["setup_ms"] for f in figures.values())
    return {
        "jobs": jobs,
        "rounds": rounds,
        "worst_overhead_pct": worst,
        "slowest_setup_ms": slowest,
        "families": figures,
    }
