"""`python -m bench service`: the cost of the generation service on the CPU, on the `tiny` model.

In one process, for `--rounds` rounds:
- **bare**: the same `--jobs` requests as plain pipeline calls in a loop (`pipe(prompt, ...)`, one
  generator per image), as a user would run them;
- **engine**: the same requests through `DiffusersEngine.run_batch` one at a time (adds PNG
  encoding with parameters): what the service's worker itself calls;
- **service**: the requests submitted at once through `GenerationService` with `max_batch=1` (one
  job per pipeline call, so the comparison with `bare` is like for like), distinct owners and seeds,
  each job's events read by its own task as the bot does;
- **batched**: the same through the service with batching on (its default cap), reported apart.

`--prompts` measures something else: the weighted and long-prompt path against the plain one
(`bench.prompt_cost`); `--switching` the cost of switching models and LoRA adapter sets
(`bench.switching`); `--edits` batched edit jobs against one per call (`bench.service_edits`);
`--families` every family's tiny model through the service against bare calls (`bench.families`);
`--edits --families` the edit comparison on each family's tiny model (`bench.service_edits`);
`--video` Animate clips on `tiny-video`: frames/s, encode time per second of video, the MP4 against
upload limits (`bench.video`).
`--references` style references on `tiny`: a reference's cost, the encoder cache, batched reference
jobs against one at a time (`bench.references`).

The timed rounds carry no instrumentation. After them, one more `service` and one more `batched`
pass (of at least 40 jobs) run with a ticker coroutine that wakes every 5 ms and records how late it
woke: that is the event-loop stall (the gateway heartbeat and Discord acknowledgements wait that
long). The ticker itself costs the worker some GIL time, so it stays out of the passes compared.
`overhead_pct` compares `service` with `bare`: the median of the per-round ratios, with a 95%
confidence interval for it (`overhead_pct_ci95`); `overhead_pct_fastest_runs` compares the fastest
run of each (interference on a shared machine only ever adds time). Each round runs
the two back to back (alternating which goes first), so that slow drift of a shared machine hits
both alike: many short rounds rather than a few long ones.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.config import BenchSettings
from bench.plain import plain_call
from bench.report import report
from bench.service_run import ServiceRun, Ticker, run_service
from bench.stats import median_ci95
from generation.prompts.request import GenerationRequest

STALL_JOBS = 40


class _NoImages:
    """The service's source-image store: txt2img only, so nothing is ever read."""

    def get(self, digest: str) -> bytes:
        raise KeyError(digest)


def make_requests(count: int, size: int, steps: int, guidance: float, model: str) -> list[GenerationRequest]:
    """`count` one-image txt2img requests with distinct prompts and seeds."""
    return [
        GenerationRequest(
            prompt=f"a red fox in the snow, picture {i}",
            width=size,
            height=size,
            steps=steps,
            guidance=guidance,
            seeds=(1000 + i,),
            model=model,
        )
        for i in range(count)
    ]


def run_bare(model: Any, requests: Sequence[GenerationRequest]) -> float:
    """Seconds for plain pipeline calls, one request at a time."""
    start = time.perf_counter()
    for r in requests:
        plain_call(model.text2img, r)
    return time.perf_counter() - start


def run_engine(engine: Any, requests: Sequence[GenerationRequest]) -> float:
    """Seconds for `engine.run_batch` of one request at a time (no service around it)."""
    start = time.perf_counter()
    for r in requests:
        engine.run_batch([r], [None], lambda _step, _total, _preview: True)
    return time.perf_counter() - start


async def run(jobs: int, rounds: int, size: int, steps: int, cache_dir: Path) -> dict[str, Any]:
    """Run the comparison and return the figures."""
    import torch

    from generation.backends.local import GenerationService
    from generation.pipelines.engine import DiffusersEngine
    from generation.pipelines.loading import load_pipeline

    model = load_pipeline("tiny", "cpu", cache_dir=cache_dir)
    engine = DiffusersEngine(model)
    guidance = 7.5
    requests = make_requests(jobs, size, steps, guidance, "tiny")
    threads = torch.get_num_threads()  # as load_pipeline set it for this thread

    def factory() -> Any:
        # torch's intra-op thread count is per thread: give the worker the bare loop's, like for like
        # (in the bot, load_pipeline runs in the worker and sets it there).
        torch.set_num_threads(threads)
        return engine

    # Two long-lived services, as the bot keeps one: one job per pipeline call, and batching on.
    services = {
        "service": GenerationService(factory, _NoImages(), job_timeout_s=600.0, max_batch=1),
        "batched": GenerationService(factory, _NoImages(), job_timeout_s=600.0),
    }
    for service in services.values():
        await service.start()
    try:
        warm = make_requests(4, size, steps, guidance, "tiny")  # first calls, thread pools, allocator
        run_bare(model, warm)
        run_engine(engine, warm)
        for kind, service in services.items():
            await run_service(service, warm, f"warm-{kind}")

        fixed_costs = measure_fixed_costs(model, requests[0])
        idle = Ticker()
        idle.start()
        await asyncio.sleep(0.5)  # idle loop: the ticker's own floor
        await idle.stop()

        times: dict[str, list[float]] = {"bare": [], "engine": [], "service": [], "batched": []}
        service_runs: list[ServiceRun] = []  # loop CPU and events of the one-job-per-call passes
        for round_index in range(rounds):
            # bare and service back to back, first one then the other, so drift of the machine hits
            # both alike; then the two others.
            pair = ["bare", "service"] if round_index % 2 == 0 else ["service", "bare"]
            for kind in [*pair, "engine", "batched"]:
                if kind == "bare":
                    times[kind].append(run_bare(model, requests))
                elif kind == "engine":
                    times[kind].append(run_engine(engine, requests))
                else:
                    one = await run_service(services[kind], requests, f"{kind}{round_index}")
                    times[kind].append(one.elapsed_s)
                    if kind == "service":
                        service_runs.append(one)
        # At least STALL_JOBS jobs per stall pass: some hundreds of ticks, so p99 is not just the max.
        stall_requests = make_requests(max(jobs, STALL_JOBS), size, steps, guidance, "tiny")
        stalls = {
            kind: await run_service(service, stall_requests, f"stalls-{kind}", measure_stalls=True)
            for kind, service in services.items()
        }
    finally:
        for service in services.values():
            await service.close()

    def ratios(kind: str, base: str) -> list[float]:
        return [a / b for a, b in zip(times[kind], times[base], strict=True)]

    def ratio_pct(kind: str, base: str) -> float:
        return round((statistics.median(ratios(kind, base)) - 1.0) * 100, 2)

    def stall_figures(kind: str, prefix: str) -> dict[str, float]:
        ticker = stalls[kind].ticker
        assert ticker is not None
        return ticker.figures(prefix)

    def per_job_ms(values: Sequence[float]) -> float:
        return round(statistics.median(values) * 1000 / jobs, 3)

    return {
        "jobs": jobs,
        "rounds": rounds,
        "size": size,
        "steps": steps,
        "guidance": guidance,
        "torch_threads": threads,
        "bare_jobs_per_s": round(jobs / statistics.median(times["bare"]), 2),
        "engine_jobs_per_s": round(jobs / statistics.median(times["engine"]), 2),
        "service_jobs_per_s": round(jobs / statistics.median(times["service"]), 2),
        "batched_jobs_per_s": round(jobs / statistics.median(times["batched"]), 2),
        "overhead_pct": ratio_pct("service", "bare"),
        "overhead_vs_engine_pct": ratio_pct("service", "engine"),
        "engine_vs_bare_pct": ratio_pct("engine", "bare"),
        "batched_vs_bare_pct": ratio_pct("batched", "bare"),
        "overhead_pct_fastest_runs": round((min(times["service"]) / min(times["bare"]) - 1.0) * 100, 2),
        "overhead_pct_ci95": [round((r - 1.0) * 100, 2) for r in median_ci95(ratios("service", "bare"))],
        "overhead_pct_by_round": [round((r - 1.0) * 100, 2) for r in ratios("service", "bare")],
        "bare_ms_per_job": per_job_ms(times["bare"]),
        "service_ms_per_job": per_job_ms(times["service"]),
        "loop_cpu_ms_per_job": per_job_ms([one.loop_cpu_s for one in service_runs]),
        "preview_ms": fixed_costs["preview_ms"],
        "png_encode_ms": fixed_costs["png_encode_ms"],
        "events_per_job": round(sum(one.events for one in service_runs) / (jobs * rounds), 2),
        **stall_figures("service", "loop_stall"),
        **stall_figures("batched", "batched_loop_stall"),
        **idle.figures("idle_loop_lateness"),
    }


def measure_fixed_costs(model: Any, request: GenerationRequest) -> dict[str, float]:
    """Milliseconds for one progress preview and one result PNG at the request's size: work the
    service's worker does per job that the bare loop does not."""
    import numpy as np

    from generation.media.compose import encode_png
    from generation.pipelines.preview import preview_png

    image = model.text2img(
        prompt=request.prompt, width=request.width, height=request.height, num_inference_steps=1
    ).images[0]
    latents = np.random.default_rng(0).standard_normal((4, request.height // 8, request.width // 8))
    start = time.perf_counter()
    for _ in range(10):
        preview_png(latents.astype(np.float32), model.family.preview)
    preview_s = (time.perf_counter() - start) / 10
    start = time.perf_counter()
    for _ in range(10):
        encode_png(image, request, request.seeds[0], sampler="Euler")
    encode_s = (time.perf_counter() - start) / 10
    return {"preview_ms": round(preview_s * 1000, 3), "png_encode_ms": round(encode_s * 1000, 3)}


def main(argv: list[str], settings: BenchSettings) -> int:
    """CLI entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m bench service", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, help="requests per run (default 10; --video: 2; --references: 8)")
    parser.add_argument(
        "--rounds", type=int, help="repetitions of every variant (default 40; --video: 5; --references: 10)"
    )
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    parser.add_argument("--steps", type=int, default=4, help="denoising steps (default 4)")
    parser.add_argument(
        "--prompts",
        action="store_true",
        help="instead: the weighted and long-prompt path against the plain one (bench/prompt_cost.py)",
    )
    parser.add_argument(
        "--switching",
        action="store_true",
        help="instead: two models interleaved against one, and LoRA adapter switches (bench/switching.py)",
    )
    parser.add_argument(
        "--edits",
        action="store_true",
        help="instead: batched against one-by-one edit jobs (zoom, vary, pan) on tiny, or with --families "
        "on each family's tiny model (bench/service_edits.py)",
    )
    parser.add_argument(
        "--families",
        action="store_true",
        help="instead: every family's tiny model through the service against bare calls (bench/families.py)",
    )
    parser.add_argument(
        "--video",
        action="store_true",
        help="instead: Animate clips on tiny-video: frames/s, encode time, upload limits (bench/video.py)",
    )
    parser.add_argument(
        "--references",
        action="store_true",
        help="instead: style references on tiny (or --only tiny-flux: Flux Redux): their cost, the encoder "
        "cache, batched against one by one (bench/references.py)",
    )
    parser.add_argument(
        "--only",
        default="",
        help="with --families (or --edits --families): these tiny model ids (comma-separated); with "
        "--references: the one model (tiny or tiny-flux)",
    )
    args = parser.parse_args(argv)
    if args.video and (args.edits or args.prompts or args.switching or args.families):
        parser.error("--video goes alone")
    if args.references and (args.video or args.edits or args.prompts or args.switching or args.families):
        parser.error("--references goes alone")
    if args.jobs is None:
        args.jobs = 2 if args.video else 8 if args.references else 10
    if args.rounds is None:
        args.rounds = 5 if args.video else 10 if args.references else 40
    if args.jobs < 1 or args.rounds < 1:
        parser.error("--jobs and --rounds must be at least 1")
    cache = settings.cache_dir()  # the tiny model, built there once
    variant = next(
        (
            name
            for name in ("edits", "prompts", "switching", "families", "video", "references")
            if getattr(args, name)
        ),
        None,
    )
    if args.edits and args.families:
        variant = "edits-families"
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    if only and variant not in ("families", "edits-families", "references"):
        parser.error("--only goes with --families or --references")
    if variant == "references" and len(only) > 1:
        parser.error("--references measures one model")
    if variant is None:
        figures = asyncio.run(run(args.jobs, args.rounds, args.size, args.steps, cache))
    elif variant == "families":
        from bench import families

        figures = asyncio.run(families.run(args.jobs, args.rounds, cache, only))
    elif variant == "edits":
        from bench import service_edits

        figures = asyncio.run(service_edits.run(args.jobs, args.rounds, args.size, args.steps, cache))
    elif variant == "edits-families":
        from bench import service_edits

        figures = asyncio.run(service_edits.run_families(args.jobs, args.rounds, cache, only))
    elif variant == "video":
        from bench import video

        figures = asyncio.run(video.run(args.jobs, args.rounds, cache))
    elif variant == "references":
        from bench import references

        model = only[0] if only else references.MODEL
        figures = asyncio.run(references.run(args.jobs, args.rounds, args.size, args.steps, cache, model))
    else:
        from bench import prompt_cost, switching

        requests = make_requests(args.jobs, args.size, args.steps, 7.5, "tiny")
        variant_run = prompt_cost.run if variant == "prompts" else switching.run
        figures = variant_run(requests, args.rounds, cache)
    name = "service" if variant is None else f"service-{variant}"
    if variant == "references" and only and only[0] != "tiny":
        name = f"{name}-{only[0]}"  # its own section: the IP-Adapter's figures stay
    report(name, figures, argv, results_path=settings.results_path)
    return 0
