"""Timing on CUDA or the CPU: synchronised clocks, warm-ups excluded, medians of several runs; peak
memory; the measured bf16 matmul rate; running a step under a time limit."""

from __future__ import annotations

import gc
import resource
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

T = TypeVar("T")


def is_cuda(device: str) -> bool:
    """True for `cuda` and `cuda:N`."""
    return device.startswith("cuda")


def sync(device: str) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if is_cuda(device):
        torch.cuda.synchronize(device)


def free(device: str) -> None:
    """Collect garbage and return cached blocks to the driver."""
    gc.collect()
    if is_cuda(device):
        torch.cuda.empty_cache()


def reset_peak(device: str) -> None:
    """Start a new peak-memory window (CUDA only; the CPU's peak RSS cannot be reset)."""
    if is_cuda(device):
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device: str) -> float:
    """Peak allocated CUDA memory since the last reset; on the CPU the process's peak RSS."""
    if is_cuda(device):
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def allocated_gib(device: str) -> float | None:
    """CUDA memory held by tensors now (the weights, between runs); None on the CPU."""
    return torch.cuda.memory_allocated(device) / 2**30 if is_cuda(device) else None


@dataclass(frozen=True)
class Timing:
    """Seconds of each timed run (warm-ups excluded) and their median."""

    runs: list[float]

    @property
    def median(self) -> float:
        """The median run, in seconds."""
        return statistics.median(self.runs)


def timed(fn: Callable[[], Any], device: str, *, warmup: int, runs: int) -> Timing:
    """Run `fn` `warmup` times untimed, then `runs` times, each between two device synchronisations."""
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(runs):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        seconds.append(time.perf_counter() - start)
    return Timing(seconds)


class StepClock:
    """A `callback_on_step_end` that records when each denoising step ended (device synchronised)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.marks: list[float] = []

    def __call__(self, _pipe: Any, _step: int, _timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        sync(self.device)
        self.marks.append(time.perf_counter())
        return tensors

    def steps_per_s(self) -> float | None:
        """Median rate between consecutive step ends (the first step's start is not seen)."""
        gaps = [b - a for a, b in zip(self.marks, self.marks[1:], strict=False)]
        return 1.0 / statistics.median(gaps) if gaps else None


def matmul_rate(device: str, n: int, seconds: float = 1.0) -> float:
    """Measured dense bf16 FLOP/s: an n×n by n×n product on random data, repeated for about `seconds`."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        torch.matmul(a, b)
    sync(device)
    done, start = 0, time.perf_counter()
    while True:
        for _ in range(10):
            torch.matmul(a, b)
        done += 10
        sync(device)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return 2.0 * n**3 * done / elapsed


class OverLimit(Exception):
    """A step did not finish within its time limit (it may still be running on its thread)."""


def within(limit_s: float, fn: Callable[[], T]) -> T:
    """`fn()` on a daemon thread, waited for at most `limit_s` seconds (a compile cannot be stopped from
    outside: past the limit the caller records that and ends the run). Its exception is re-raised."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name="bench-limited", daemon=True)
    thread.start()
    thread.join(limit_s)
    if thread.is_alive():
        raise OverLimit(f"not done within {limit_s:.0f} s")
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value
