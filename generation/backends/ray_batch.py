"""A batch in flight between the `RayBackend` driver and a replica, and the driver's counters."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from generation.backends.protocol import REFERENCE_GONE, SOURCE_GONE
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
) -> tuple[list[Job], list[bytes | None], list[tuple[Job, str]], dict[str, bytes]]:
    """(jobs that can run, their source images' bytes or None, jobs whose source image or a reference
    picture is gone with why, the reference pictures by hash), the images read off the event loop."""
    live: list[Job] = []
    sources: list[bytes | None] = []
    missing: list[tuple[Job, str]] = []
    pictures: dict[str, bytes] = {}
    for job in jobs:
        digest, why = job.request.source_image, SOURCE_GONE
        try:
            source = None if digest is None else await asyncio.to_thread(images.get, digest)
            why = REFERENCE_GONE
            for reference in job.request.reference_images:
                pictures[reference] = await asyncio.to_thread(images.get, reference)
        except Exception:
            log.exception("a picture of job %s is missing (%s)", job.job_id, why)
            missing.append((job, why))
            continue
        sources.append(source)
        live.append(job)
    return live, sources, missing, pictures
