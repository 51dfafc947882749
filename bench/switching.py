"""`python -m bench service --switching`: what switching models and LoRA adapter sets costs, on the
`tiny` model (CPU), through the real `GenerationService` and `EnginePool`.

Models, for `--rounds` rounds of `--jobs` one-image jobs (one job per pipeline call, distinct owners):
- **one**: every job on one model;
- **two**: jobs alternating between two models (`MODELS=a=tiny,b=tiny`), both kept loaded: the pool
  routes each batch to its model's engine;
- **two_one_fits**: the same with a memory budget (`MODEL_MEMORY_GB`) of 1.5 measured models, so
  the pool holds one and a switch unloads one model and loads the other from disk.
Each round runs the three in a rotating order; `*_vs_one_pct` are medians of the per-round ratios.
`switches_per_job` is the pool's loads after warm-up per job; `load_ms` the median time of one
tiny model load (`DiffusersEngine.load`), `tiny_engine_mib` the measured size of one pool engine.

Adapters, on one engine with two tiny LoRAs (peft, `testkit.tiny_lora`), one request a call:
- jobs with no adapter, with the same adapter each time, and alternating between two adapters;
- `adapter_switch_ms`: one `LoraAdapters.applied` on and off (set the adapter set, then disable)
  alternating between the two sets, with no pipeline call: the switch alone; `adapter_load_ms`: the
  first use of an adapter (reading it from disk into the pipeline).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from generation.prompts.request import GenerationRequest

MODEL_KINDS = ("one", "two", "two_one_fits")
ADAPTER_KINDS = ("none", "same", "alternating")


class _NoImages:
    def get(self, digest: str) -> bytes:
        raise KeyError(digest)


async def _through(service: Any, requests: Sequence[GenerationRequest], tag: str) -> float:
    start = time.perf_counter()
    handles = [service.submit(f"{tag}-{i}", f"owner{i}", r) for i, r in enumerate(requests)]
    await asyncio.gather(*(h.result() for h in handles))
    return time.perf_counter() - start


def _median_pct(times: dict[str, list[float]], kind: str, base: str) -> float:
    ratios = [a / b for a, b in zip(times[kind], times[base], strict=True)]
    return round((statistics.median(ratios) - 1.0) * 100, 2)


async def models_figures(requests: Sequence[GenerationRequest], rounds: int, cache: Path) -> dict[str, Any]:
    """Images/s on one model, two resident models interleaved, and two with room for one."""
    from generation.backends.local import GenerationService
    from generation.model_set import ModelChoice, ModelSet
    from generation.pipelines.engine import DiffusersEngine
    from generation.pipelines.engine_pool import EnginePool, engine_bytes

    load_times: list[float] = []

    def load(choice: ModelChoice) -> Any:
        start = time.perf_counter()
        engine = DiffusersEngine.load(choice.source, "cpu", cache_dir=cache)
        load_times.append(time.perf_counter() - start)
        return engine

    size = engine_bytes(load(ModelChoice("probe", "tiny")))
    pools = {
        "one": EnginePool(ModelSet.parse("a=tiny"), load),
        "two": EnginePool(ModelSet.parse("a=tiny,b=tiny"), load),
        "two_one_fits": EnginePool(ModelSet.parse("a=tiny,b=tiny"), load, budget_bytes=int(size * 1.5)),
    }
    jobs = {
        "one": [replace(r, model="a") for r in requests],
        "two": [replace(r, model="ab"[i % 2]) for i, r in enumerate(requests)],
    }
    jobs["two_one_fits"] = jobs["two"]

    def factory(pool: EnginePool) -> Callable[[], EnginePool]:
        return lambda: pool

    services = {
        kind: GenerationService(factory(pool), _NoImages(), job_timeout_s=600.0, max_batch=1)
        for kind, pool in pools.items()
    }
    for service in services.values():
        await service.start()
    try:
        for kind, service in services.items():
            await _through(service, jobs[kind][:4], f"warm-{kind}")
        loads_before = {kind: len(pool.loads) for kind, pool in pools.items()}
        times: dict[str, list[float]] = {kind: [] for kind in MODEL_KINDS}
        for index in range(rounds):
            order = MODEL_KINDS[index % 3 :] + MODEL_KINDS[: index % 3]
            for kind in order:
                times[kind].append(await _through(services[kind], jobs[kind], f"{kind}{index}"))
        resident = len(pools["two"].loaded)
    finally:
        for service in services.values():
            await service.close()
    count = len(requests)
    switches = (len(pools["two_one_fits"].loads) - loads_before["two_one_fits"]) / (count * rounds)
    return {
        **{f"{kind}_images_per_s": round(count / statistics.median(times[kind]), 2) for kind in MODEL_KINDS},
        "two_vs_one_pct": _median_pct(times, "two", "one"),
        "two_one_fits_vs_one_pct": _median_pct(times, "two_one_fits", "one"),
        "switches_per_job": round(switches, 2),
        "resident_after_two": resident,
        "load_ms": round(statistics.median(load_times) * 1000, 1),
        "tiny_engine_mib": round(size / 2**20, 2),
    }


def adapter_figures(requests: Sequence[GenerationRequest], rounds: int, cache: Path) -> dict[str, Any]:
    """Images/s without, with one and alternating between two adapters; the switch alone."""
    from generation.pipelines.engine import DiffusersEngine
    from generation.pipelines.loading import load_pipeline
    from testkit.tiny_lora import build_tiny_lora

    with tempfile.TemporaryDirectory(prefix="bench-lora-") as tmp:
        folder = Path(tmp)
        model = load_pipeline("tiny", "cpu", cache_dir=cache)
        build_tiny_lora(model, folder, "ink", seed=1)
        build_tiny_lora(model, folder, "film", seed=2)
        engine = DiffusersEngine(model, lora_dir=folder)
        pipe = model.text2img
        sets = ((("ink", 1.0),), (("film", 0.8),))
        first_loads = []
        for adapters in sets:
            start = time.perf_counter()
            with engine.loras.applied(pipe, adapters):
                pass
            first_loads.append(time.perf_counter() - start)
        jobs = {
            "none": list(requests),
            "same": [replace(r, loras=sets[0]) for r in requests],
            "alternating": [replace(r, loras=sets[i % 2]) for i, r in enumerate(requests)],
        }

        def run(batch: Sequence[GenerationRequest]) -> float:
            start = time.perf_counter()
            for request in batch:
                engine.run_batch([request], [None], lambda *_: True)
            return time.perf_counter() - start

        run(jobs["alternating"][:4])  # warm
        times: dict[str, list[float]] = {kind: [] for kind in ADAPTER_KINDS}
        for index in range(rounds):
            for kind in ADAPTER_KINDS[index % 3 :] + ADAPTER_KINDS[: index % 3]:
                times[kind].append(run(jobs[kind]))
        switches = []
        for index in range(200):
            start = time.perf_counter()
            with engine.loras.applied(pipe, sets[index % 2]):
                pass
            switches.append(time.perf_counter() - start)
    count = len(requests)
    return {
        **{
            f"adapters_{kind}_images_per_s": round(count / statistics.median(times[kind]), 2)
            for kind in ADAPTER_KINDS
        },
        "adapters_same_vs_none_pct": _median_pct(times, "same", "none"),
        "adapters_alternating_vs_same_pct": _median_pct(times, "alternating", "same"),
        "adapter_switch_ms": round(statistics.median(switches) * 1000, 3),
        "adapter_load_ms": round(statistics.median(first_loads) * 1000, 1),
    }


def run(requests: Sequence[GenerationRequest], rounds: int, cache: Path) -> dict[str, Any]:
    """Both measurements, with the run's shape."""
    first = requests[0]
    figures: dict[str, Any] = {
        "jobs": len(requests),
        "rounds": rounds,
        "size": first.width,
        "steps": first.steps,
    }
    figures |= asyncio.run(models_figures(requests, rounds, cache))
    figures |= adapter_figures(requests, rounds, cache)
    return figures
