"""The Ray Serve deployment behind `generation.ray_backend`: one replica = one loaded engine.

Each replica builds its engine once (`engine_factory()`, e.g. `DiffusersEngine(load_pipeline(...))`)
and runs one batch at a time on its own engine thread (pipelines are not thread-safe). The driver's
scheduler sends a whole batch as ONE streaming call, `run(BatchCall)`, which yields:

1. `ReplicaStarted(replica)`: the replica's actor name (the driver logs it; tests kill it);
2. `StepDone(step, total, previews)` after every denoising step, previews throttled per job;
3. `BatchDone(outcomes)`: per request, its images or a failure message.

Stopping: the pipeline runs in a thread, so cancelling the call (`DeploymentResponseGenerator.cancel()`,
which reaches this coroutine as `asyncio.CancelledError`) sets a per-batch stop flag that the step
callback checks: the pipeline stops at its next step. The per-job time limit is checked there too.
`OutOfMemory` splits the batch in halves and retries, as the local service does.

Only the engine factory imports torch/diffusers, inside the replica process.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import ray
from ray import serve

from generation.backend import GeneratedImage
from generation.engine_api import BatchInterrupted, Engine, OutOfMemory, PreviewFn
from generation.request import GenerationRequest, ModelProfile

log = logging.getLogger(__name__)

EngineFactory = Callable[[], Engine]
"""Builds the replica's engine; must pickle (a module-level function or a small dataclass)."""

Outcome = tuple[GeneratedImage, ...] | str
"""A request's images, or the message of the `JobFailed` it ends with."""


class TokenCounter(Protocol):
    """What the driver needs for `count_tokens`: a picklable object with this one method."""

    def count_tokens(self, text: str) -> int:
        """Tokens of `text`, begin/end included."""
        ...


@dataclass(frozen=True)
class DiffusersFactory:
    """The real engine factory: `DiffusersEngine(load_pipeline(model_id, device, cache_dir=...))`."""

    model_id: str
    device: str
    cache_dir: Path | None = None

    def __call__(self) -> Engine:
        from generation.engine import DiffusersEngine
        from generation.models import load_pipeline

        return DiffusersEngine(load_pipeline(self.model_id, self.device, cache_dir=self.cache_dir))


@dataclass(frozen=True)
class TokenizerCounter:
    """A `TokenCounter` over a Hugging Face tokenizer (pickled from a replica to the driver)."""

    tokenizer: Any

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` as the tokenizer counts them, begin/end included."""
        return len(self.tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"])


# -- messages -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchCall:
    """One batch of requests with equal `batch_key()`; `sources[i]` is request i's source bytes."""

    batch_id: str
    requests: tuple[GenerationRequest, ...]
    sources: tuple[bytes | None, ...]
    timeout_s: float
    preview_interval_s: float = 0.5


@dataclass(frozen=True)
class ReplicaStarted:
    """The batch reached a replica: its actor name (in Ray's `serve` namespace)."""

    replica: str


@dataclass(frozen=True)
class StepDone:
    """Step `step` of `total` finished for the requests in `previews` (request index → preview or None)."""

    step: int
    total: int
    previews: dict[int, bytes | None] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchDone:
    """The batch ended: one outcome per request of the call."""

    outcomes: tuple[Outcome, ...]


ReplicaMessage = ReplicaStarted | StepDone | BatchDone


# -- the engine thread's work ---------------------------------------------------------------------


def run_call(
    engine: Engine, call: BatchCall, stop: threading.Event, emit: Callable[[StepDone], None]
) -> list[Outcome]:
    """Run `call` on `engine` (in the engine's thread): per-step progress through `emit`, the stop flag
    and the time limit checked at every step, OutOfMemory split in halves. Never raises."""
    deadline = time.monotonic() + call.timeout_s
    timeout_message = f"took longer than {call.timeout_s:g} s"
    outcomes: list[Outcome] = ["generation failed: not run"] * len(call.requests)

    def run_group(indices: Sequence[int]) -> None:
        if stop.is_set():
            _set(indices, "cancelled")
            return
        if time.monotonic() > deadline:
            _set(indices, timeout_message)
            return
        last_preview: dict[int, float] = {}
        timed_out = False

        def on_step(step: int, total: int, preview: PreviewFn) -> bool:
            nonlocal timed_out
            if stop.is_set():
                return False
            now = time.monotonic()
            if now > deadline:
                timed_out = True
                return False
            previews: dict[int, bytes | None] = {}
            for local, index in enumerate(indices):
                png: bytes | None = None
                if step < total and now - last_preview.get(index, -math.inf) >= call.preview_interval_s:
                    last_preview[index] = now
                    try:
                        png = preview(local)
                    except Exception:
                        log.exception("preview failed")
                previews[index] = png
            emit(StepDone(step, total, previews))
            return True

        try:
            out = engine.run_batch(
                [call.requests[i] for i in indices], [call.sources[i] for i in indices], on_step
            )
        except OutOfMemory:
            if len(indices) == 1:
                _set(indices, "ran out of GPU memory")
                return
            half = len(indices) // 2
            run_group(indices[:half])
            run_group(indices[half:])
            return
        except BatchInterrupted:
            _set(indices, timeout_message if timed_out else "cancelled")
            return
        except Exception as exc:
            log.exception("generation batch %s failed", call.batch_id)
            _set(indices, f"generation failed: {type(exc).__name__}")
            return
        if len(out) != len(indices):
            _set(indices, "generation failed: wrong number of results")
            return
        for index, images in zip(indices, out, strict=True):
            outcomes[index] = tuple(images)

    def _set(indices: Sequence[int], message: str) -> None:
        for i in indices:
            outcomes[i] = message

    run_group(list(range(len(call.requests))))
    return outcomes


def token_counter_of(engine: Engine) -> TokenCounter:
    """A picklable counter for the driver: the model's tokenizer, or the engine itself (stand-ins)."""
    model = getattr(engine, "model", None)
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is not None:
        return TokenizerCounter(tokenizer)
    return engine


# -- the deployment -------------------------------------------------------------------------------

_END = object()


@serve.deployment(name="ImagineReplica", graceful_shutdown_timeout_s=2, health_check_period_s=2)
class ImagineReplica:
    """A Serve replica owning one engine; see the module docstring for its streaming protocol."""

    def __init__(self, engine_factory: EngineFactory) -> None:
        self._engine = engine_factory()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="engine")  # one batch at a time
        context = ray.get_runtime_context()
        self.name = context.get_actor_name() or context.get_actor_id() or "replica"

    def profile(self) -> ModelProfile:
        """The loaded model's profile."""
        return self._engine.profile

    def token_counter(self) -> TokenCounter:
        """Something the driver can count tokens with, without loading the model."""
        return token_counter_of(self._engine)

    def max_batch_images(self, request: GenerationRequest) -> int:
        """The engine's batch cap for this shape (free device memory on GPUs)."""
        return self._engine.max_batch_images(request)

    async def run(self, call: BatchCall) -> AsyncIterator[ReplicaMessage]:
        """Stream one batch: `ReplicaStarted`, `StepDone` per step, then `BatchDone`."""
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[object] = asyncio.Queue()
        stop = threading.Event()

        def emit(message: StepDone) -> None:
            loop.call_soon_threadsafe(inbox.put_nowait, message)

        yield ReplicaStarted(self.name)
        work = loop.run_in_executor(self._thread, run_call, self._engine, call, stop, emit)
        work.add_done_callback(lambda _f: inbox.put_nowait(_END))
        try:
            while (message := await inbox.get()) is not _END:
                assert isinstance(message, StepDone)
                yield message
            yield BatchDone(tuple(work.result()))
        finally:
            stop.set()  # cancelled (or the caller went away): the pipeline stops at its next step
