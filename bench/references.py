"""`python -m bench service --references`: style references (`--sref`) on `tiny` with its tiny IP-Adapter,
or with `--only tiny-flux` on the tiny Flux.1 dev with its tiny Flux Redux.

The model loaded with `DiffusersEngine.load` (a model of this process's own: loading the adapter changes
its UNet), `--size` px, `--steps` steps, `GUIDANCE[model]` (CFG 7.5 on `tiny`, Flux's embedded 3.5);
every reference a style reference of one picture at weight 100 (`Reference(STYLE, 100, ...)`), each
picture a `--size` px PNG in a `MemoryImages` store. In order:

- **plain_before_adapter_s**: one plain request through `DiffusersEngine.run_batch` before any reference
  (the median over `--rounds` of the mean of `CALLS_PER_ROUND` calls).
- **adapter_load_s**: the first reference call ever, timed alone: it loads the adapter (Redux on Flux: its
  pipeline's `from_pretrained`; on `tiny` the IP-Adapter through diffusers'
  `load_ip_adapter`, two slots over one image encoder), encodes its picture and generates;
  `adapter_load_only_s` is the part of it spent in `ReferenceAdapter.load`.
- **The cost of a reference**: in each of `--rounds` rounds, back to back and alternating which goes
  first, the same request (prompt, seed) without a reference and with a style reference whose picture
  is already encoded (so this is the adapter's attention, not the encoder: that is the next figure), each
  the mean of `CALLS_PER_ROUND` calls. `plain_s` and `reference_s` are the medians, `reference_cost_ratio`
  the median of the per-round ratios reference / plain with a 95% CI (`bench.stats.median_ci95`).
  After the adapter is loaded a plain call passes zero embeddings at scale 0 (its pixels are the bare
  model's): `plain_s` against `plain_before_adapter_s` shows what that costs (not interleaved).
- **The encoder cache**: `ENCODER_PAIRS` pairs per round of one request with a picture never seen and
  the same request with a picture seen before (alternating which goes first); `encoder_ms_per_picture`
  is the median of the per-pair differences new − cached (with its 95% CI): decoding the PNG, the CLIP
  preprocessing and the image encoder, which a cached picture skips.
- **Batched against one at a time**: `--jobs` reference jobs of distinct pictures and seeds submitted at
  once through the real `GenerationService` (its default batching: one pipeline call for the lot, each
  image its own embedding) against the same jobs through a service with `max_batch=1`, both on this
  engine, alternating which goes first in each round; the pictures are read from the service's image
  store as the bot's are. Every pass has pictures never seen (the same pictures bar one pixel, that
  pass's mark), so both pay the encoder once per picture, as new members' pictures do. `batched_s` and
  `sequential_s` are the medians; `batched_speedup` the median of the per-round ratios sequential /
  batched, with a 95% CI. `batched_calls_per_pass` is the most pipeline calls (`run_batch`) a batched
  pass took (1 up to `CPU_MAX_BATCH_IMAGES`, 8, jobs), `sequential_calls_per_pass` the fewest a
  one-at-a-time pass took (`--jobs`).
- **The counters** (`ReferenceAdapter.embeds_computed` / `embeds_cached`): their change over each phase
  against what it must be (`embeds`), including `sequence`: `2 × --jobs` jobs over `--jobs` distinct new
  pictures (each twice) at once through the batching service, so computed == `--jobs` and cached ==
  `--jobs`. `embeds_exact` says every phase matched; the benchmark fails if one does not.
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from bench.service_run import run_service
from bench.stats import median_ci95
from generation.prompts.references import Reference, ReferenceKind
from generation.prompts.request import GenerationRequest
from generation.scheduling.job_state import MemoryImages

MODEL = "tiny"
GUIDANCE = {"tiny": 7.5, "tiny-flux": 3.5}  # the models measured, each with its adapter: IP-Adapter, Redux
WEIGHT = 100  # --sw's default
ORIGIN = "https://cdn.discordapp.com/attachments/1/2/reference.png"  # where a picture came from (named only)
CALLS_PER_ROUND = 3  # engine calls per kind per round, their mean one figure (a tiny call takes ~40 ms)
ENCODER_PAIRS = 4  # new/cached pairs per round


class Pictures:
    """Distinct smooth pictures as PNGs, each kept in `images`: `pattern` picks the picture, `mark` (one
    pixel) makes a copy of it that hashes apart, so its embedding is not cached."""

    def __init__(self, images: MemoryImages, size: int) -> None:
        self.images = images
        self.size = size
        self._next = 0

    def make(self, pattern: int, mark: int = 0) -> str:
        """The picture's sha256, its PNG added to the store."""
        import numpy as np
        from PIL import Image

        yy, xx = np.mgrid[0 : self.size, 0 : self.size]
        channels = [128 + 90 * np.sin((xx + 11 * pattern + 5 * c) / 9 + yy / (7 + c)) for c in range(3)]
        pixels = np.stack(channels, axis=-1).astype(np.uint8)
        pixels[0, 0] = (mark % 256, mark // 256 % 256, mark // 65536 % 256)
        buffer = io.BytesIO()
        Image.fromarray(pixels, "RGB").save(buffer, "PNG")
        return self.images.add(buffer.getvalue())

    def fresh(self) -> str:
        """A picture never made before."""
        self._next += 1
        return self.make(10_000 + self._next)


def _request(
    size: int, steps: int, seed: int, picture: str | None = None, model: str = MODEL
) -> GenerationRequest:
    """A one-image request on `model`; with `picture`, a style reference of it at weight `WEIGHT`."""
    references = () if picture is None else (Reference(ReferenceKind.STYLE, WEIGHT, (ORIGIN,), (picture,)),)
    return GenerationRequest(
        prompt=f"a red fox in the snow, take {seed}",
        width=size,
        height=size,
        steps=steps,
        guidance=GUIDANCE[model],
        seeds=(seed,),
        model=model,
        references=references,
    )


class Counters:
    """Each phase's change of the adapter's `embeds_computed` / `embeds_cached` against what it must be."""

    def __init__(self) -> None:
        self.adapter: Any = None  # the engine's ReferenceAdapter
        self.phases: dict[str, dict[str, int]] = {}

    def _now(self) -> tuple[int, int]:
        return (self.adapter.embeds_computed, self.adapter.embeds_cached) if self.adapter else (0, 0)

    def start(self) -> tuple[int, int]:
        """The counters now (pass to `check`)."""
        return self._now()

    def check(self, phase: str, before: tuple[int, int], computed: int, cached: int) -> None:
        """Record the phase's deltas since `before` and the expected ones."""
        now = self._now()
        self.phases[phase] = {
            "computed": now[0] - before[0],
            "cached": now[1] - before[1],
            "expected_computed": computed,
            "expected_cached": cached,
        }

    @property
    def exact(self) -> bool:
        """Whether every phase's deltas were the expected ones."""
        return all(
            p["computed"] == p["expected_computed"] and p["cached"] == p["expected_cached"]
            for p in self.phases.values()
        )


def timed(call: Callable[[], object], repeats: int = 1) -> float:
    """Mean seconds of `repeats` calls."""
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - start) / repeats


def interleaved(
    rounds: int, kinds: Sequence[str], one: Callable[[str, int], float]
) -> dict[str, list[float]]:
    """`one(kind, round)` for every kind in every round, the order of `kinds` reversed every other round."""
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    for round_index in range(rounds):
        order = list(kinds) if round_index % 2 == 0 else list(reversed(kinds))
        for kind in order:
            times[kind].append(one(kind, round_index))
    return times


def ratio_figures(name: str, numerators: Sequence[float], denominators: Sequence[float]) -> dict[str, Any]:
    """The median of the per-round ratios and its 95% CI."""
    ratios = [a / b for a, b in zip(numerators, denominators, strict=True)]
    low, high = median_ci95(ratios)
    return {name: round(statistics.median(ratios), 3), f"{name}_ci95": [round(low, 3), round(high, 3)]}


async def run(
    jobs: int, rounds: int, size: int, steps: int, cache_dir: Path, model: str = MODEL
) -> dict[str, Any]:
    """Run the measurements on `model` (one of `GUIDANCE`) and return the figures (raises if the
    counters are not exact)."""
    import torch

    from generation.backends.local import GenerationService
    from generation.pipelines.engine import DiffusersEngine
    from generation.pipelines.ip_adapters import ReferenceAdapter
    from generation.pipelines.redux import ReduxReferences

    if model not in GUIDANCE:
        raise ValueError(f"--references measures {', '.join(GUIDANCE)}, not {model}")
    request = partial(_request, model=model)
    start = time.perf_counter()
    engine = DiffusersEngine.load(model, "cpu", cache_dir=cache_dir)
    load_s = time.perf_counter() - start
    adapter = engine.references
    if not isinstance(adapter, (ReferenceAdapter, ReduxReferences)):
        raise RuntimeError(f"{model} has no reference adapter")
    threads = torch.get_num_threads()
    images = MemoryImages()
    pictures = Pictures(images, size)
    counters = Counters()

    def call(*requests: GenerationRequest) -> None:
        pics = {digest: images.get(digest) for r in requests for digest in r.reference_images}
        engine.run_batch(list(requests), [None] * len(requests), lambda *_: True, pics)

    # -- plain, before the adapter --------------------------------------------------------------------
    plain = request(size, steps, 7)
    timed(lambda: call(plain), 2)  # warm: first calls, thread pools, allocator
    before = [timed(lambda: call(plain), CALLS_PER_ROUND) for _ in range(rounds)]

    # -- the first reference ever: loads the adapter ---------------------------------------------------
    load_only: list[float] = []
    load = adapter.load

    def timed_load() -> None:
        started = time.perf_counter()
        load()
        load_only.append(time.perf_counter() - started)

    adapter.load = timed_load  # type: ignore[method-assign]  # timed where `applied` calls it
    counters.adapter = adapter
    mark = counters.start()
    styled = request(size, steps, 7, pictures.fresh())
    try:
        first_s = timed(lambda: call(styled))
    finally:
        del adapter.load  # the class's own again
    if not adapter.loaded:
        raise RuntimeError("the first reference call did not load the adapter")
    counters.check("first_call", mark, 1, 0)

    # -- the cost of a reference (its picture cached) -------------------------------------------------
    mark = counters.start()
    timed(lambda: call(styled), 2)  # warm the adapter's path
    cost = interleaved(
        rounds,
        ["plain", "reference"],
        lambda kind, _r: timed(lambda: call(plain if kind == "plain" else styled), CALLS_PER_ROUND),
    )
    counters.check("cost", mark, 0, 2 + rounds * CALLS_PER_ROUND)

    # -- the encoder cache: a new picture against one seen before --------------------------------------
    mark = counters.start()
    seen = request(size, steps, 11, pictures.fresh())
    call(seen)  # its picture encoded once; every later call finds it cached
    differences: list[float] = []
    new_times: list[float] = []
    cached_times: list[float] = []
    for pair in range(rounds * ENCODER_PAIRS):
        new = request(size, steps, 11, pictures.fresh())
        if pair % 2 == 0:
            new_s, cached_s = timed(partial(call, new)), timed(partial(call, seen))
        else:
            cached_s, new_s = timed(partial(call, seen)), timed(partial(call, new))
        new_times.append(new_s)
        cached_times.append(cached_s)
        differences.append(new_s - cached_s)
    pairs = rounds * ENCODER_PAIRS
    counters.check("encoder", mark, 1 + pairs, pairs)

    # -- batched against one at a time, through the service --------------------------------------------
    def factory() -> Any:
        torch.set_num_threads(threads)  # the worker's intra-op threads as this thread's
        return engine

    services = {
        "sequential": GenerationService(factory, images, job_timeout_s=600.0, max_batch=1),
        "batched": GenerationService(factory, images, job_timeout_s=600.0),
    }
    passes = 0

    def pass_requests() -> list[GenerationRequest]:
        """`jobs` requests, picture i the same pattern each pass, marked with the pass: never cached."""
        nonlocal passes
        passes += 1
        return [request(size, steps, 1000 + i, pictures.make(i, mark=passes)) for i in range(jobs)]

    calls = 0  # pipeline calls of the engine by the services (the worker's `run_batch`)
    run_batch = engine.run_batch

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return run_batch(*args, **kwargs)

    engine.run_batch = counted  # type: ignore[method-assign]
    for service in services.values():
        await service.start()
    try:
        mark = counters.start()
        for kind, service in services.items():  # warm: the worker thread's first calls
            await run_service(service, pass_requests()[:2], f"warm-{kind}")
        times: dict[str, list[float]] = {"batched": [], "sequential": []}
        pass_calls: dict[str, list[int]] = {"batched": [], "sequential": []}
        for round_index in range(rounds):
            order = ["batched", "sequential"] if round_index % 2 == 0 else ["sequential", "batched"]
            for kind in order:
                calls = 0
                one = await run_service(services[kind], pass_requests(), f"{kind}{round_index}")
                times[kind].append(one.elapsed_s)
                pass_calls[kind].append(calls)
        counters.check("passes", mark, 2 * min(jobs, 2) + 2 * rounds * jobs, 0)

        mark = counters.start()
        distinct = [pictures.fresh() for _ in range(jobs)]
        sequence = [request(size, steps, 2000 + i, distinct[i % jobs]) for i in range(2 * jobs)]
        await run_service(services["batched"], sequence, "sequence")
        counters.check("sequence", mark, jobs, jobs)
    finally:
        for service in services.values():
            await service.close()
        del engine.run_batch  # the class's own again

    if not counters.exact:
        raise RuntimeError(f"the adapter's embedding counters are not the expected ones: {counters.phases}")
    low, high = median_ci95(differences)
    figures: dict[str, Any] = {
        "model": model,
        "adapter": type(adapter).__name__,
        "jobs": jobs,
        "rounds": rounds,
        "size": size,
        "steps": steps,
        "guidance": GUIDANCE[model],
        "reference_weight": WEIGHT,
        "torch_threads": threads,
        "load_s": round(load_s, 3),
        "plain_before_adapter_s": round(statistics.median(before), 4),
        "adapter_load_s": round(first_s, 4),
        "adapter_load_only_s": round(load_only[0], 4) if load_only else None,
        "plain_s": round(statistics.median(cost["plain"]), 4),
        "reference_s": round(statistics.median(cost["reference"]), 4),
        **ratio_figures("reference_cost_ratio", cost["reference"], cost["plain"]),
        "new_picture_s": round(statistics.median(new_times), 4),
        "cached_picture_s": round(statistics.median(cached_times), 4),
        "encoder_ms_per_picture": round(statistics.median(differences) * 1000, 3),
        "encoder_ms_per_picture_ci95": [round(low * 1000, 3), round(high * 1000, 3)],
        "encoder_pairs": pairs,
        "batched_s": round(statistics.median(times["batched"]), 4),
        "sequential_s": round(statistics.median(times["sequential"]), 4),
        **ratio_figures("batched_speedup", times["sequential"], times["batched"]),
        "batched_calls_per_pass": max(pass_calls["batched"]),
        "sequential_calls_per_pass": min(pass_calls["sequential"]),
        "batched_ms_per_job": round(statistics.median(times["batched"]) * 1000 / jobs, 3),
        "sequential_ms_per_job": round(statistics.median(times["sequential"]) * 1000 / jobs, 3),
        "embeds_computed": adapter.embeds_computed,
        "embeds_cached": adapter.embeds_cached,
        "embeds": counters.phases,
        "embeds_exact": counters.exact,
    }
    return figures
