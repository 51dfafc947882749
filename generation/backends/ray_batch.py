"""A batch in flight between the `RayBackend` driver and a replica, and the driver's counters."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from generation.scheduling.job_state import Job, SourceImages

log = logging.getLogger(__name__)


@dataclass
class SchedulerStats:
    """Counters for benchmarks and tests: time spent in this module's scheduling code."""

    scheduler_s: float = 0.0  # picking batches, reading stream messages, settling jobs (loop thread)
    batches: int = 0  # streaming calls sent
    jobs_settled: int = 0
    requeued: int = 0  # jobs put back after a broken stream


@dataclass(eq=False)
class Batch:
    """Jobs sent to a replica as one streaming call."""

    jobs: list[Job]
    attempt: int = 1
    replica: str | None = None
    response: Any = None  # DeploymentResponseGenerator while in flight
    stopped: bool = False  # all members cancelled, or abandoned by the watchdog / close()
    requeued: bool = False  # its live jobs went back to the queue in a new batch
    task: asyncio.Task[None] | None = None
    watchdog: asyncio.TimerHandle | None = None
    batch_id: str = field(default="")


async def read_sources(
    jobs: list[Job], images: SourceImages
) -> tuple[list[Job], list[bytes | None], list[Job]]:
    """(jobs that can run, their source images' bytes or None, jobs whose source image is gone), the
    images read off the event loop."""
    live: list[Job] = []
    sources: list[bytes | None] = []
    missing: list[Job] = []
    for job in jobs:
        digest = job.request.source_image
        if digest is None:
            sources.append(None)
            live.append(job)
            continue
        try:
            sources.append(await asyncio.to_thread(images.get, digest))
            live.append(job)
        except Exception:
            log.exception("source image %s of job %s is missing", digest, job.job_id)
            missing.append(job)
    return live, sources, missing
