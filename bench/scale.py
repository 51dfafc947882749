"""`python -m bench scale`: RayBackend on a local Ray cluster with stand-in GPU replicas.

Each replica's engine (`SleepEngine`) takes a fixed time per denoising step per batch, whatever the
batch holds (as a GPU roughly does up to its batch cap), and makes no picture: what is measured is
the scheduler and Ray around it. Replicas reserve no CPU (`replica_cpus=0`), so 8 fit on 2 cores:
they only sleep.

For 1, 2, 4 and 8 replicas (one deployment each): many users' one-image jobs, enough for about
`--batches` full batches per replica, all submitted at once and each followed (events read) as the
bot does. Figures:
- `images_per_s` by replicas, `ideal_images_per_s` (replicas × cap ÷ batch time) and
  `scaling_efficiency_8` = images/s at 8 ÷ (8 × images/s at 1);
- `dispatch_overhead_ms`: time in RayBackend's own scheduling code (picking batches, reading stream
  messages, settling jobs) per job, the worst over the replica counts (`..._by_replicas` for each);
  `loop_cpu_ms_per_job`: all CPU of the event loop's thread per job (Ray's handle code included);
  `idle_ms_per_batch`: replica time not spent in batches, per batch (dispatch round trips, ramp-up);
- fairness at 1 and 8 replicas: a heavy user queues fifty `--heavy-n`-image jobs; once the first batch
  runs, a light user submits one one-image job. `fair_wait_ratio` = the light job's wait ÷ the time to
  drain the heavy user's fifty (1 replica); `fair_wait_batches` = the light wait in batch durations
  (≈ 2 is the floor: the batch running when it arrives, then its own). `fair_wait_ratio_n1`: the same
  at 1 replica with one-image heavy jobs (8 per batch, so the fifty drain in 7 batches: the ratio
  cannot go below ≈ 2/7 however fair the queue is).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench.config import BenchSettings
from bench.report import report
from generation.backends.protocol import GeneratedImage
from generation.pipelines.contract import BatchInterrupted, Engine, StepCallback
from generation.prompts.request import GenerationRequest, ModelProfile

PROFILE = ModelProfile(name="sleep", native_size=512, default_steps=10, default_guidance=7.5)
PNG = b"\x89PNG\r\n\x1a\n"  # not a picture: nothing downstream decodes it here


class SleepEngine:
    """A stand-in GPU: `step_s` per step per batch, up to `cap` images per batch, no model."""

    profile = PROFILE

    def __init__(self, step_s: float, cap: int) -> None:
        self.step_s = step_s
        self.cap = cap

    def count_tokens(self, text: str) -> int:
        """Whitespace words plus begin/end tokens."""
        return len(text.split()) + 2

    def max_batch_images(self, request: GenerationRequest) -> int:
        """The fixed batch cap."""
        return self.cap

    def run_batch(
        self,
        requests: Sequence[GenerationRequest],
        sources: Sequence[bytes | None],
        on_step: StepCallback,
        pictures: Mapping[str, bytes] | None = None,
    ) -> list[list[GeneratedImage]]:
        """Sleep `step_s` per step (the behaviour being stood in for), reporting each step."""
        total = requests[0].steps
        for step in range(1, total + 1):
            time.sleep(self.step_s)
            if not on_step(step, total, lambda _i: b""):
                raise BatchInterrupted(f"stopped after step {step}")
        return [[GeneratedImage(PNG, s, r.width, r.height) for s in r.seeds] for r in requests]


@dataclass(frozen=True)
class SleepFactory:
    """Picklable factory of `SleepEngine` for the replicas."""

    step_s: float
    cap: int

    def __call__(self) -> Engine:
        return SleepEngine(self.step_s, self.cap)


class _NoImages:
    def get(self, digest: str) -> bytes:
        raise KeyError(digest)


def request(seed: int, steps: int, count: int = 1) -> GenerationRequest:
    """A txt2img request of `count` images at the stand-in's native size."""
    return GenerationRequest(
        "a red fox in the snow", 512, 512, steps, 7.5, tuple(range(seed, seed + count)), "sleep"
    )


async def _follow(handle: Any) -> float:
    async for _event in handle.events():
        pass
    await handle.result()
    return time.perf_counter()


@dataclass
class Config:
    """The workload."""

    step_s: float
    steps: int
    cap: int
    batches: int  # full batches per replica in the throughput run
    users: int
    heavy_n: int
    max_ongoing: int = 1

    @property
    def batch_s(self) -> float:
        return self.step_s * self.steps


async def throughput(backend: Any, replicas: int, cfg: Config) -> dict[str, float]:
    """All jobs at once from `cfg.users` users; images/s and the scheduler's cost per job."""
    jobs = replicas * cfg.cap * cfg.batches
    before = backend.stats.scheduler_s, backend.stats.batches
    cpu, start = time.thread_time(), time.perf_counter()
    handles = [
        backend.submit(f"t{replicas}-{i}", f"user{i % cfg.users}", request(i, cfg.steps)) for i in range(jobs)
    ]
    ends = await asyncio.gather(*(_follow(h) for h in handles))
    elapsed, loop_cpu = max(ends) - start, time.thread_time() - cpu
    batches = backend.stats.batches - before[1]
    return {
        "images_per_s": jobs / elapsed,
        "ideal_images_per_s": replicas * cfg.cap / cfg.batch_s,
        "dispatch_overhead_ms": (backend.stats.scheduler_s - before[0]) / jobs * 1000,
        "loop_cpu_ms_per_job": loop_cpu / jobs * 1000,
        "idle_ms_per_batch": (elapsed * replicas - batches * cfg.batch_s) / batches * 1000,
    }


async def fairness(backend: Any, replicas: int, cfg: Config, heavy_n: int) -> dict[str, float]:
    """The heavy user's fifty `heavy_n`-image jobs, then (once the first batch runs) the light user's one."""
    start = time.perf_counter()
    tag = f"{replicas}-{heavy_n}"
    heavy = [
        backend.submit(f"h{tag}-{i}", "heavy", request(1000 + 4 * i, cfg.steps, heavy_n)) for i in range(50)
    ]
    heavy_done = [asyncio.create_task(_follow(h)) for h in heavy]
    async for event in heavy[0].events():
        if type(event).__name__ == "Progress":
            break
    light_start = time.perf_counter()
    light = backend.submit(f"l{tag}", "light", request(7, cfg.steps))
    light_end = await _follow(light)
    heavy_end = max(await asyncio.gather(*heavy_done))
    light_wait = light_end - light_start
    return {"ratio": light_wait / (heavy_end - start), "batches": light_wait / cfg.batch_s}


async def run(counts: Sequence[int], cfg: Config) -> dict[str, Any]:
    """Deploy each replica count in turn and measure."""
    import ray

    from generation.backends.ray_driver import RayBackend

    ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    by: dict[int, dict[str, float]] = {}
    fair: dict[int, dict[str, float]] = {}
    try:
        for replicas in counts:
            backend = RayBackend(
                "sleep",
                "cpu",
                replicas=replicas,
                image_store=_NoImages(),
                job_timeout_s=600.0,
                engine_factory=SleepFactory(cfg.step_s, cfg.cap),
                replica_cpus=0.0,
                max_ongoing=cfg.max_ongoing,
                app_name=f"bench-scale-{replicas}",
            )
            await backend.start()
            try:
                await throughput(backend, replicas, cfg.__class__(**{**cfg.__dict__, "batches": 1}))  # warm
                by[replicas] = await throughput(backend, replicas, cfg)
                if replicas in (counts[0], counts[-1]):
                    fair[replicas] = await fairness(backend, replicas, cfg, cfg.heavy_n)
                if replicas == counts[0] and cfg.heavy_n != 1:
                    one = await fairness(backend, replicas, cfg, 1)
                    fair[0] = one
            finally:
                await backend.close()
    finally:
        ray.shutdown()

    def per(key: str, digits: int = 2) -> dict[str, float]:
        return {str(r): round(v[key], digits) for r, v in by.items()}

    first, last = counts[0], counts[-1]
    ips = {r: v["images_per_s"] for r, v in by.items()}
    return {
        "replicas": list(counts),
        "step_ms": round(cfg.step_s * 1000, 1),
        "steps": cfg.steps,
        "batch_cap": cfg.cap,
        "users": cfg.users,
        "max_ongoing": cfg.max_ongoing,
        "images_per_s": per("images_per_s"),
        "ideal_images_per_s": per("ideal_images_per_s"),
        f"scaling_efficiency_{last}": round(ips[last] / (last / first * ips[first]), 3),
        "dispatch_overhead_ms": round(max(v["dispatch_overhead_ms"] for v in by.values()), 3),
        "dispatch_overhead_ms_by_replicas": per("dispatch_overhead_ms", 3),
        "loop_cpu_ms_per_job": per("loop_cpu_ms_per_job", 3),
        "idle_ms_per_batch": per("idle_ms_per_batch", 1),
        "heavy_n": cfg.heavy_n,
        "fair_wait_ratio": round(fair[first]["ratio"], 3),
        f"fair_wait_ratio_{last}": round(fair[last]["ratio"], 3),
        "fair_wait_batches": round(fair[first]["batches"], 2),
        f"fair_wait_batches_{last}": round(fair[last]["batches"], 2),
        **({"fair_wait_ratio_n1": round(fair[0]["ratio"], 3)} if 0 in fair else {}),
        "median_images_per_s_per_replica": round(statistics.median(ips[r] / r for r in ips), 2),
    }


def main(argv: list[str], settings: BenchSettings) -> int:
    """CLI entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m bench scale", description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", default="1,2,4,8", help="replica counts, ascending (default 1,2,4,8)")
    parser.add_argument("--step-ms", type=float, default=50.0, help="stand-in time per step (default 50)")
    parser.add_argument("--steps", type=int, default=10, help="steps per job (default 10)")
    parser.add_argument("--cap", type=int, default=8, help="images per batch (default 8)")
    parser.add_argument("--batches", type=int, default=10, help="full batches per replica (default 10)")
    parser.add_argument("--users", type=int, default=40, help="users in the throughput workload")
    parser.add_argument("--heavy-n", type=int, default=4, help="images per heavy-user job (default 4)")
    parser.add_argument("--max-ongoing", type=int, default=1, help="batches per replica at once (default 1)")
    args = parser.parse_args(argv)
    counts = sorted({int(x) for x in args.replicas.split(",")})
    if not counts or counts[0] < 1:
        parser.error("--replicas needs positive counts")
    cfg = Config(
        args.step_ms / 1000, args.steps, args.cap, args.batches, args.users, args.heavy_n, args.max_ongoing
    )
    figures = asyncio.run(run(counts, cfg))
    report("scale", figures, argv, results_path=settings.results_path)
    return 0
