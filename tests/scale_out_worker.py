"""One bot process of the scale-out test: the real `JobRunner`, `ClaimSource` and `PostgresStore`,
with a `RayBackend` that JOINS a Serve app another process deployed on a running Ray cluster, and an
outbox that prints what it posts.

    python -m tests.scale_out_worker RAY_ADDRESS APP DATABASE_URL OUTDIR WORKER_ID [--tag N] [--capacity N]

It speaks JSON lines on stdout (`ready`, `delivered`, `told`, `closed`; each with `t`, a monotonic
time) and closes cleanly on `quit` (or end of input) on stdin.

`StandInFactory` (the replicas' engine: a fixed time per step, small valid PNGs, no model) lives here
so that the deploying test and the replicas import it from one light module; the bot's modules are
imported only in `main`.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import io
import logging
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from generation.backends.protocol import GeneratedImage
from generation.pipelines.contract import BatchInterrupted, Engine, StepCallback
from generation.prompts.request import GenerationRequest, ModelProfile

if TYPE_CHECKING:
    from generation.backends.ray_driver import RayBackend

PROFILE = ModelProfile(name="stand-in", native_size=64, default_steps=2, default_guidance=5.0)
BATCH_CAP = 4


def request(seed: int) -> GenerationRequest:
    """A one-image request the stand-in engine runs in two steps."""
    return GenerationRequest(
        prompt="a fox", width=64, height=64, steps=2, guidance=5.0, seeds=(seed,), model="stand-in"
    )


class StandInEngine:
    """A stand-in GPU: `step_s` per step per batch, up to `BATCH_CAP` images a batch, 8×8 PNGs. A
    prompt containing `HANG` hangs its step for good, as a wedged GPU kernel would (no callback)."""

    HANG = "[hang]"

    profile = PROFILE

    def __init__(self, step_s: float) -> None:
        self.step_s = step_s

    def count_tokens(self, text: str) -> int:
        """Whitespace words plus begin/end tokens."""
        return len(text.split()) + 2

    def max_batch_images(self, request: GenerationRequest) -> int:
        """The fixed batch cap."""
        return BATCH_CAP

    def run_batch(
        self,
        requests: Sequence[GenerationRequest],
        sources: Sequence[bytes | None],
        on_step: StepCallback,
        pictures: Mapping[str, bytes] | None = None,
    ) -> list[list[GeneratedImage]]:
        """`step_s` per step, then one small picture per seed."""
        from PIL import Image

        total = requests[0].steps
        if any(self.HANG in r.prompt for r in requests):
            threading.Event().wait()  # never returns: only killing the replica ends it
        for step in range(1, total + 1):
            time.sleep(self.step_s)  # the stand-in's compute time, not a wait for work
            if not on_step(step, total, lambda _i: b""):
                raise BatchInterrupted(f"stopped after step {step}")

        def png(seed: int) -> bytes:
            buf = io.BytesIO()
            Image.new("RGB", (8, 8), (seed % 256, 80, 160)).save(buf, format="PNG")
            return buf.getvalue()

        return [[GeneratedImage(png(s), s, r.width, r.height) for s in r.seeds] for r in requests]


@dataclass(frozen=True)
class StandInFactory:
    """Picklable factory of `StandInEngine` for the replicas."""

    step_s: float = 0.005

    def __call__(self) -> Engine:
        return StandInEngine(self.step_s)


class NoSources:
    """Source images are never needed (text-to-image only)."""

    def get(self, digest: str) -> bytes:
        raise KeyError(digest)


def stand_in_backend(app_name: str, replicas: int = 2, **options: Any) -> RayBackend:
    """A RayBackend deploying (or joining) `replicas` stand-in replicas as the Serve app `app_name`."""
    from generation.backends.ray_driver import RayBackend

    return RayBackend(
        "stand-in",
        "cpu",
        replicas=replicas,
        image_store=NoSources(),
        engine_factory=StandInFactory(),
        replica_cpus=0.5,
        app_name=app_name,
        **options,
    )


async def main(args: argparse.Namespace) -> None:
    import ray

    from generation.media.image_store import ImageStore
    from jobs.claims import ClaimSource
    from jobs.runner import JobRunner
    from storage.interface import Limits
    from storage.pg_signals import pg_signals_for
    from storage.postgres import open_pg_store
    from tests.dispatch_worker import PrintingOutbox, dump_tasks, emit

    unlimited = Limits(images_per_hour=None, images_per_day=None, max_queued=None, cooldown_seconds=0.0)
    # Our own connection, so Ray's log forwarding stays off this process's stdout (the JSON lines).
    ray.init(address=args.ray_address, log_to_driver=False, logging_level=logging.WARNING)
    store = await open_pg_store(args.url, unlimited, max_size=4)
    images = ImageStore(Path(args.outdir))
    backend = stand_in_backend(args.app)
    await backend.start()
    outbox = PrintingOutbox(args.tag, replica_of=backend.replica_of)
    source = ClaimSource(
        store, signals=pg_signals_for(store), worker_id=args.worker, capacity=args.capacity, poll_s=1.0
    )
    runner = JobRunner(store, backend, images, outbox, source=source, edit_interval_s=0.0)
    await runner.resume()
    emit("ready", joined=not backend.deployed_here)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, dump_tasks)  # a hung test can ask where it is
    faulthandler.register(signal.SIGUSR2, all_threads=True)
    try:
        while True:
            line = (await loop.run_in_executor(None, sys.stdin.readline)).split()
            if not line or line[0] == "quit":
                break
        emit("phase", name="waiting")
        for job_id in outbox.delivered:  # let posted results be recorded before closing
            await runner.wait(job_id)
    finally:
        emit("phase", name="runner")
        await runner.close()
        emit("phase", name="backend")
        await backend.close()
        emit("phase", name="store")
        await store.close()
        emit("phase", name="ray")
        ray.shutdown()
        emit("closed")


if __name__ == "__main__":
    from testkit.worker_process import worker_parser

    asyncio.run(main(worker_parser("ray_address", "app", capacity=4).parse_args()))
