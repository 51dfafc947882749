"""`python -m bench encode`: result PNGs of a batch encoded one after the other vs in parallel.

`DiffusersEngine.run_batch` encodes a batch's images with
`generation.pipelines.engine.encode_images`: each with `generation.media.compose.encode_png`, two or
more at once on a shared thread pool of `generation.pipelines.engine.ENCODE_WORKERS` (min(8, cpu_count))
threads. For `--counts` images of `--size`² RGB
noise (the worst case for PNG filtering), in one run, medians of `--repeats` (the order rotates
each repeat to cancel drift):
- **serial**: `encode_png` in a loop (what the engine did before);
- **pool**: `encode_images`, the engine's own path;
- **processes**: `encode_png` on a `ProcessPoolExecutor` of the same size (spawn; started and warmed
  before timing, so only pickling and the pipe are charged), an alternative for comparison;
- **control**: `zlib.compress` of the images' raw bytes, serial vs threads: how much parallelism the
  machine offers at the moment (other processes may hold its cores).

Every variant must give the same bytes (checked). Pillow's zip encoder (`libImaging/ZipEncode.c`)
releases the GIL while it filters and deflates, so the threads really overlap.
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import os
import statistics
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

from PIL import Image

from bench.config import BenchSettings
from bench.report import report
from generation.media.compose import encode_png
from generation.pipelines.engine import ENCODE_WORKERS, encode_images
from generation.prompts.request import GenerationRequest

SAMPLER = "Euler"


def noise_images(count: int, size: int) -> list[Image.Image]:
    """`count` distinct RGB noise images of `size`×`size`."""
    return [Image.frombytes("RGB", (size, size), os.urandom(size * size * 3)) for _ in range(count)]


def bench_request(size: int, seeds: Sequence[int]) -> GenerationRequest:
    """A request whose parameters go into the PNGs (one seed per image)."""
    return GenerationRequest(
        prompt="a red fox in the snow",
        width=size,
        height=size,
        steps=20,
        guidance=7.5,
        seeds=tuple(seeds),
        model="bench",
    )


def encode_all(
    images: Sequence[Image.Image], request: GenerationRequest, pool: Executor | None
) -> list[bytes]:
    """Each image as `encode_png` makes it (with its seed), in order, serially or on `pool`."""
    seeds = list(request.seeds)
    encode = functools.partial(encode_png, sampler=SAMPLER)  # picklable: workers import no torch
    if pool is None:
        return [encode(image, request, seed) for image, seed in zip(images, seeds, strict=True)]
    return list(pool.map(encode, images, [request] * len(images), seeds))


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def measure(
    count: int, size: int, repeats: int, threads: ThreadPoolExecutor, processes: ProcessPoolExecutor
) -> dict[str, float]:
    """Median wall milliseconds of each variant for `count` images, and the speedups over serial."""
    images = noise_images(count, size)
    raws = [image.tobytes() for image in images]
    request = bench_request(size, range(1, count + 1))
    variants: dict[str, Callable[[], Any]] = {
        "serial": lambda: encode_all(images, request, None),
        "pool": lambda: encode_images(images, [(request, seed) for seed in request.seeds], sampler=SAMPLER),
        "processes": lambda: encode_all(images, request, processes),
        "zlib_serial": lambda: [zlib.compress(raw, 6) for raw in raws],
        "zlib_threads": lambda: list(threads.map(zlib.compress, raws, [6] * len(raws))),
    }
    expected = encode_all(images, request, None)
    times: dict[str, list[float]] = {name: [] for name in variants}
    order = list(variants)
    for repeat in range(repeats):
        shift = repeat % len(order)
        for name in order[shift:] + order[:shift]:
            elapsed, out = _timed(variants[name])
            if not name.startswith("zlib") and out != expected:
                raise AssertionError(f"{name} encoding differs from serial encoding")
            times[name].append(elapsed)
    ms = {name: statistics.median(values) * 1000 for name, values in times.items()}
    prefix = f"n{count}"
    return {
        f"{prefix}_serial_ms": round(ms["serial"], 1),
        f"{prefix}_pool_ms": round(ms["pool"], 1),
        f"{prefix}_processes_ms": round(ms["processes"], 1),
        f"{prefix}_pool_speedup": round(ms["serial"] / ms["pool"], 2),
        f"{prefix}_processes_speedup": round(ms["serial"] / ms["processes"], 2),
        f"{prefix}_zlib_threads_speedup": round(ms["zlib_serial"] / ms["zlib_threads"], 2),
    }


def run(counts: Sequence[int], size: int, repeats: int) -> dict[str, Any]:
    """All the figures for one run."""
    workers = ENCODE_WORKERS
    threads = ThreadPoolExecutor(workers, thread_name_prefix="png")
    processes = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        warm = noise_images(workers, 64)
        warm_request = bench_request(64, range(workers))
        for pool in (threads, processes):  # start every worker before anything is timed
            encode_all(warm, warm_request, pool)
        encode_images(warm, [(warm_request, seed) for seed in warm_request.seeds], sampler=SAMPLER)
        figures: dict[str, Any] = {
            "size": size,
            "counts": list(counts),
            "repeats": repeats,
            "workers": workers,
            "cpu_count": os.cpu_count(),
            "load_avg_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
            "single_encode_ms": round(measure(1, size, repeats, threads, processes)["n1_serial_ms"], 1),
            "identical_bytes": True,  # measure() raises otherwise
        }
        for count in counts:
            figures.update(measure(count, size, repeats, threads, processes))
        return figures
    finally:
        threads.shutdown()
        processes.shutdown()


def main(argv: list[str], settings: BenchSettings) -> int:
    """CLI entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m bench encode", description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="image side in pixels (default 512)")
    parser.add_argument(
        "--counts", type=int, nargs="+", default=[4, 8], help="images per batch (default 4 8)"
    )
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats of each variant (default 7)")
    args = parser.parse_args(argv)
    if args.size < 8 or args.repeats < 1 or any(c < 1 for c in args.counts):
        parser.error("--size ≥ 8; --repeats and --counts ≥ 1")
    report("encode", run(args.counts, args.size, args.repeats), argv, results_path=settings.results_path)
    return 0
