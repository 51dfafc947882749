"""The GPU run's steps through the project's own code: the service (scheduler, batching, worker thread,
PNGs) under concurrent requests against plain diffusers one at a time, and the `OPTIMISE` variants as
`DiffusersEngine.load` applies them."""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import time
from typing import Any

from bench.gpu.context import Run, measure_call
from bench.gpu.plan import PROMPT
from bench.gpu.timing import OverLimit, free, peak_memory_gib, reset_peak, within
from generation.pipelines.options import OptimiseOptions, parse_optimise
from generation.prompts.request import GenerationRequest


class _NoImages:
    def get(self, digest: str) -> bytes:
        raise KeyError(digest)


async def _closed_loop(run: Run, options: OptimiseOptions) -> dict[str, Any]:
    """`service_clients` clients, each submitting its next request when its last one finished: one
    untimed round (new batch shapes), then `service_rounds` timed rounds."""
    from generation.backends.local import GenerationService
    from generation.pipelines.engine import DiffusersEngine

    arch = run.plan.arch("sd15")
    folder, _ = run.folder("sd15")
    clients = run.plan.service_clients

    def factory() -> DiffusersEngine:
        return DiffusersEngine.load(str(folder), run.device, cache_dir=None, options=options)

    start = time.perf_counter()
    service = GenerationService(factory, _NoImages(), job_timeout_s=3600.0)
    await service.start()
    load_s = time.perf_counter() - start
    seeds = itertools.count(1)

    async def one(owner: str) -> None:
        seed = next(seeds)
        request = GenerationRequest(
            prompt=PROMPT,
            width=arch.size,
            height=arch.size,
            steps=arch.steps,
            guidance=arch.guidance,
            seeds=(seed,),
            model=arch.name,
        )
        await service.submit(f"job{seed}", owner, request).result()

    async def round_trip(total: int) -> float:
        jobs = iter(range(total))

        async def client(k: int) -> None:
            for _ in jobs:
                await one(f"owner{k}")

        begin = time.perf_counter()
        await asyncio.gather(*(client(k) for k in range(clients)))
        return time.perf_counter() - begin

    try:
        warmup_s = await round_trip(clients)
        reset_peak(run.device)
        total = clients * run.plan.service_rounds
        elapsed = await round_trip(total)
    finally:
        await service.close()
        free(run.device)
    return {
        "clients": clients,
        "images": total,
        "images_per_s": total / elapsed,
        "load_s": load_s,
        "warmup_round_s": warmup_s,
        "peak_memory_gib": peak_memory_gib(run.device),
    }


def service(run: Run) -> None:
    """The service with `service_clients` concurrent requests vs plain diffusers one at a time (the
    batch-1 figure of `sd15_batch`, same run): images/s and their ratio."""
    figures = asyncio.run(_closed_loop(run, OptimiseOptions()))
    plain = run.figures.get("sd15_b1")
    if plain is None:  # sd15_batch did not run: measure plain batch 1 here
        plain = measure_call(run, run.pipes.get("sd15") or run.pipe("sd15"), run.plan.arch("sd15"), 1)[
            "images_per_s"
        ]
    run.results.write(
        "service",
        plain_one_at_a_time_images_per_s=plain,
        service_vs_plain=figures["images_per_s"] / plain,
        **figures,
    )


def variant_names() -> list[str]:
    """The `OPTIMISE` variants to measure, most useful first; torch.compile last (its warm-up is long),
    xformers only where it imports."""
    names = ["none", "channels_last", "fuse_qkv", "channels_last,fuse_qkv"]
    if importlib.util.find_spec("xformers") is not None:
        names.append("xformers")
    return [*names, "compile"]


def _measure_variant(run: Run, name: str) -> dict[str, Any]:
    from diffusers.utils.torch_utils import is_compiled_module

    from generation.pipelines.engine import DiffusersEngine

    folder, _ = run.folder("sd15")
    start = time.perf_counter()
    engine = DiffusersEngine.load(str(folder), run.device, cache_dir=None, options=parse_optimise(name))
    load_s = time.perf_counter() - start  # with compile: the compile and warm-up over four shapes
    pipe = engine.model.text2img
    unet = pipe.unet
    compiled = is_compiled_module(unet)  # optimise() compiles on CUDA only
    inner = getattr(unet, "_orig_mod", unet)
    processors = {type(p).__name__ for p in getattr(inner, "attn_processors", {}).values()}
    figures = measure_call(run, pipe, run.plan.arch("sd15"), run.plan.edit_batch)
    del engine, pipe, unet, inner
    free(run.device)
    return {
        "load_and_warmup_s": load_s,
        "compiled": compiled,
        "attention": sorted(processors),
        **figures,
    }


def variants(run: Run) -> None:
    """Each `OPTIMISE` variant loaded as the bot loads it, at the edit batch size: images/s, load time
    (warm-up included), peak memory. The compile variant is tried only with `compile_limit_s` of budget
    left, and abandoned (the run ends) if its warm-up and timing take longer."""
    for name in variant_names():
        limit = run.budget.remaining()
        if name == "compile":
            if run.budget.remaining() < run.plan.compile_limit_s:
                run.results.write(
                    "variant",
                    "skipped",
                    optimise=name,
                    reason=f"{run.budget.remaining():.0f} s left, under the {run.plan.compile_limit_s:.0f} s "
                    "limit for its warm-up",
                )
                continue
            limit = run.plan.compile_limit_s
        try:
            figures = within(max(limit, 1.0), lambda n=name: _measure_variant(run, n))  # type: ignore[misc]
        except OverLimit as over:
            run.results.write("variant", "skipped", optimise=name, reason=f"warm-up and timing {over}")
            raise
        run.results.write("variant", optimise=name, **figures)
