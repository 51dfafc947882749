"""One bot process of the multi-process claim tests: the real `JobRunner`, `ClaimSource`,
`PostgresStore` and `GenerationService`, over a fake engine and an outbox that prints what it posts.

    python -m tests.dispatch_worker URL OUTDIR WORKER_ID [--capacity N] [--lease S] [--step-s S] [--hang]

It speaks JSON lines on stdout (`ready`, `started` when the backend gets a job, `delivered`, `told`,
`submitted`, `advanced`, `closed`; each with `t`, a monotonic time comparable across processes) and
reads commands on stdin, one a line:

- `submit GUILD OWNER COUNT PREFIX`: reserve COUNT one-image jobs `PREFIX-0…` through the runner;
- `advance SECONDS`: move this process's clock on (lease expiry without waiting) and reclaim now;
- `quit` (or end of input): close cleanly.

`--hang` makes the engine never finish a batch (a process to SIGKILL mid-work).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from generation.backends.local import GenerationService
from generation.backends.protocol import GeneratedImage
from generation.media.image_store import ImageStore
from generation.pipelines.contract import BatchInterrupted, StepCallback
from generation.prompts.request import GenerationRequest, ModelProfile
from jobs.claims import ClaimSource
from jobs.delivery import ResultPost
from jobs.runner import JobRunner
from storage.interface import JobRecord, Limits, NewJob, Reservation
from storage.pg_signals import pg_signals_for
from storage.postgres import open_pg_store
from testkit.worker_process import worker_parser

PROFILE = ModelProfile(name="fake", native_size=64, default_steps=2, default_guidance=5.0)
UNLIMITED = Limits(images_per_hour=None, images_per_day=None, max_queued=None, cooldown_seconds=0.0)


def dump_tasks() -> None:
    """Print every asyncio task's stack to stderr."""
    for task in asyncio.all_tasks():
        task.print_stack(file=sys.stderr)


def emit(event: str, **fields: Any) -> None:
    """One JSON line on stdout."""
    print(json.dumps({"event": event, "t": time.monotonic(), **fields}), flush=True)


def tiny_png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (seed % 256, 80, 160)).save(buf, format="PNG")
    return buf.getvalue()


def request(seed: int) -> GenerationRequest:
    return GenerationRequest(
        prompt="a fox", width=64, height=64, steps=2, guidance=5.0, seeds=(seed,), model="fake"
    )


class FakeEngine:
    """Takes `step_s` per step (the stand-in for the GPU), or never finishes (`hang`) until stopped."""

    profile = PROFILE

    def __init__(self, step_s: float, hang: bool) -> None:
        self.step_s = step_s
        self.hang = hang
        self._never = threading.Event()

    def count_tokens(self, text: str) -> int:
        return len(text.split()) + 2

    def max_batch_images(self, request: GenerationRequest) -> int:
        return 1

    def close(self) -> None:
        self._never.set()

    def run_batch(
        self,
        requests: Sequence[GenerationRequest],
        sources: Sequence[bytes | None],
        on_step: StepCallback,
        pictures: Mapping[str, bytes] | None = None,
    ) -> list[list[GeneratedImage]]:
        total = requests[0].steps
        step = 0
        while step < total:
            self._never.wait(max(self.step_s, 0.05) if self.hang else self.step_s)  # the compute time
            if not self.hang:
                step += 1
            if not on_step(step, total, lambda i: b""):
                raise BatchInterrupted()
        return [[GeneratedImage(tiny_png(s), s, r.width, r.height) for s in r.seeds] for r in requests]


class PrintingService(GenerationService):
    """The local backend, saying when it receives a job."""

    def submit(self, job_id: str, owner: str, request: GenerationRequest) -> Any:
        emit("started", job=job_id)
        return super().submit(job_id, owner, request)


class PrintingOutbox:
    """Posts nothing anywhere: prints each post with a message id unique across processes (and, given
    `replica_of`, the Ray replica that made the job's images)."""

    def __init__(self, tag: int, replica_of: Callable[[str], str | None] | None = None) -> None:
        self._next = tag * 1_000_000
        self._replica_of = replica_of
        self.delivered: list[str] = []

    async def show_progress(self, job: JobRecord, text: str, preview_png: bytes | None) -> None:
        return None

    async def post_result(self, job: JobRecord, post: ResultPost, *, via_token: bool) -> tuple[int, int]:
        self._next += 1
        self.delivered.append(job.job_id)
        extra = {} if self._replica_of is None else {"replica": self._replica_of(job.job_id)}
        emit("delivered", job=job.job_id, owner=job.owner_id, message=self._next, **extra)
        return self._next, job.channel_id

    async def tell_owner(self, job: JobRecord, text: str, *, via_token: bool, private: bool) -> None:
        emit("told", job=job.job_id, text=text)

    async def direct_message(self, job: JobRecord, text: str) -> bool:
        emit("told", job=job.job_id, text=text)
        return True

    async def channel_is_nsfw(self, channel_id: int) -> bool:
        return False

    def upload_limit(self, guild_id: int) -> int:
        return 8 * 1024 * 1024


async def main(args: argparse.Namespace) -> None:
    offset = [0.0]

    def clock() -> float:
        return time.time() + offset[0]

    store = await open_pg_store(args.url, UNLIMITED, max_size=4)
    images = ImageStore(Path(args.outdir))
    engine = FakeEngine(args.step_s, args.hang)
    service = PrintingService(lambda: engine, images, max_batch=1, watchdog_grace_s=1.0)
    await service.start()
    outbox = PrintingOutbox(args.tag)
    source = ClaimSource(
        store,
        signals=pg_signals_for(store),
        worker_id=args.worker,
        capacity=args.capacity,
        lease_s=args.lease,
        poll_s=args.poll,
        clock=clock,
    )
    runner = JobRunner(store, service, images, outbox, source=source, clock=clock, edit_interval_s=0.0)
    await runner.resume()
    emit("ready", worker=source.worker_id)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, dump_tasks)  # a hung test can ask where it is
    try:
        while True:
            line = (await loop.run_in_executor(None, sys.stdin.readline)).split()
            if not line or line[0] == "quit":
                break
            if line[0] == "submit":
                guild, owner, count, prefix = int(line[1]), int(line[2]), int(line[3]), line[4]
                granted = 0
                for i in range(count):
                    req = request(i)
                    job = NewJob(f"{prefix}-{i}", guild, 100, owner, req.to_json(), req.count)
                    granted += isinstance(await runner.submit(job, req, ()), Reservation)
                emit("submitted", granted=granted)
            elif line[0] == "advance":
                offset[0] += float(line[1])
                source.reclaim_now()
                emit("advanced")
        for job_id in outbox.delivered:  # let posted results be recorded before closing
            await runner.wait(job_id)
    finally:
        await runner.close()
        await service.close()
        await store.close()
        emit("closed")


if __name__ == "__main__":
    parser = worker_parser(capacity=2)
    parser.add_argument("--lease", type=float, default=30.0)
    parser.add_argument("--poll", type=float, default=1.0)
    parser.add_argument("--step-s", type=float, default=0.0)
    parser.add_argument("--hang", action="store_true")
    asyncio.run(main(parser.parse_args()))
