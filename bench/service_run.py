"""One pass of requests through a started `GenerationService` (`run_service`), as the bot drives it,
and the `Ticker` that measures the event loop's stalls meanwhile: what `bench.service` and
`bench.service_edits` both time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.stats import percentile
from generation.prompts.request import GenerationRequest

TICK_S = 0.005


@dataclass
class Ticker:
    """Wakes every `interval` seconds on the loop and records how late each wake-up was."""

    interval: float = TICK_S

    def __post_init__(self) -> None:
        self.lateness: list[float] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin ticking (on the running loop)."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop and wait for the ticker task to end."""
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while not self._stop.is_set():
            before = time.perf_counter()
            await asyncio.sleep(self.interval)  # the measurement itself: how late does this return?
            self.lateness.append(max(0.0, time.perf_counter() - before - self.interval))

    def figures(self, prefix: str) -> dict[str, float]:
        """p50/p99/max lateness in milliseconds."""
        ms = [x * 1000 for x in self.lateness]
        return {
            f"{prefix}_p50_ms": round(percentile(ms, 50), 2),
            f"{prefix}_p99_ms": round(percentile(ms, 99), 2),
            f"{prefix}_max_ms": round(max(ms, default=0.0), 2),
        }


@dataclass
class ServiceRun:
    """One pass of the requests through the service."""

    elapsed_s: float
    ticker: Ticker | None  # the stall measurement, on passes that take one
    events: int  # events read by the jobs' followers
    loop_cpu_s: float  # CPU time of the event loop's thread meanwhile


async def run_service(
    service: Any, requests: Sequence[GenerationRequest], tag: str, *, measure_stalls: bool = False
) -> ServiceRun:
    """Submit every request at once to a started service (distinct owners, job ids prefixed with
    `tag`), follow each job's events, await every result."""
    events_seen = 0

    async def follow(handle: Any) -> None:
        nonlocal events_seen
        async for _event in handle.events():
            events_seen += 1
        await handle.result()

    ticker = Ticker() if measure_stalls else None
    if ticker is not None:
        ticker.start()
    cpu, start = time.thread_time(), time.perf_counter()
    handles = [service.submit(f"{tag}-job{i}", f"owner{i}", r) for i, r in enumerate(requests)]
    await asyncio.gather(*(follow(h) for h in handles))
    elapsed, loop_cpu = time.perf_counter() - start, time.thread_time() - cpu
    if ticker is not None:
        await ticker.stop()
    return ServiceRun(elapsed, ticker, events_seen, loop_cpu)
