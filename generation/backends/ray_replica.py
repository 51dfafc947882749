"""The Ray Serve deployment behind `generation.backends.ray_driver`: one replica = one loaded engine.

Each replica builds its engine once (`engine_factory()`, e.g. `DiffusersEngine(load_pipeline(...))`)
and runs one batch at a time on its own engine thread (pipelines are not thread-safe). The driver's
scheduler sends a whole batch as ONE streaming call, `run(BatchCall)`, which yields:

1. `ReplicaStarted(replica)`: the replica's actor name (the driver logs it; tests kill it);
2. `StepDone(step, total, previews)` after denoising steps (throttled per job, see `BatchRun`);
3. `BatchDone(outcomes)`: per request, its images or a failure message.

Stopping: the pipeline runs in a thread, so cancelling the call (`DeploymentResponseGenerator.cancel()`,
which reaches this coroutine as `asyncio.CancelledError`) sets a per-batch stop flag that the step
callback checks: the pipeline stops at its next step. The step checks, the time limit and the
`OutOfMemory` split are `generation.scheduling.batch_run.BatchRun`'s, as in the local service.

Only the engine factory imports torch/diffusers, inside the replica process.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import ray
from ray import serve

from generation.backends.protocol import JobFailed, ModelEntry, TokenCounter
from generation.model_set import ModelSet
from generation.pipelines.contract import Engine, catalog_of, token_counter_of
from generation.pipelines.options import OptimiseOptions
from generation.pipelines.safety_options import SafetyOptions
from generation.prompts.request import GenerationRequest, ModelProfile
from generation.scheduling.batch_run import BatchRun, Outcome, StepDone

log = logging.getLogger(__name__)

EngineFactory = Callable[[], Engine]
"""Builds the replica's engine; must pickle (a module-level function or a small dataclass)."""

ROUTED_MODELS = 16  # model names a replica reports to Serve's router (the pool decides what stays loaded)


@dataclass(frozen=True)
class DiffusersFactory:
    """The real engine factory: `load_engines` on the replica, as the local worker does: one model's
    `DiffusersEngine` (MODEL_ID), or an `EnginePool` over the models of MODELS."""

    model_id: str
    device: str
    cache_dir: Path | None = None
    options: OptimiseOptions | None = None
    safety: SafetyOptions | None = None
    models: ModelSet | None = None  # None: MODEL_ID alone
    memory_budget_gb: float | None = None  # MODEL_MEMORY_GB, for the pool off CUDA
    lora_dir: Path | None = None  # LORA_DIR as the replica's machine sees it
    video_model: str | None = None  # VIDEO_MODEL: loaded on the replica on first use
    edit_model: str | None = None  # EDIT_MODEL: loaded on the replica on first use

    def __call__(self) -> Engine:
        from generation.pipelines.engine_pool import load_engines

        return load_engines(
            self.models or ModelSet.single(self.model_id),
            self.device,
            cache_dir=self.cache_dir,
            options=self.options,
            safety=self.safety,
            memory_budget_gb=self.memory_budget_gb,
            lora_dir=self.lora_dir,
            video_model=self.video_model,
            edit_model=self.edit_model,
        )


# -- messages -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchCall:
    """One batch of requests with equal `batch_key()`; `sources[i]` is request i's source bytes."""

    batch_id: str
    requests: tuple[GenerationRequest, ...]
    sources: tuple[bytes | None, ...]
    timeout_s: float
    pictures: Mapping[str, bytes] = field(default_factory=dict)  # reference pictures by hash
    preview_interval_s: float = 0.5
    progress_interval_s: float = 0.25


@dataclass(frozen=True)
class ReplicaStarted:
    """The batch reached a replica: its actor name (in Ray's `serve` namespace)."""

    replica: str


@dataclass(frozen=True)
class BatchDone:
    """The batch ended: one outcome per request of the call."""

    outcomes: tuple[Outcome, ...]


ReplicaMessage = ReplicaStarted | StepDone | BatchDone


# -- the engine thread's work ---------------------------------------------------------------------


def run_call(
    engine: Engine, call: BatchCall, stop: threading.Event, emit: Callable[[StepDone], None]
) -> list[Outcome]:
    """Run `call` on `engine` (in the engine's thread) with `BatchRun`: progress through `emit`, the
    stop flag and the time limit checked at every step. Never raises."""
    members = _CallMembers(len(call.requests), stop, emit)
    BatchRun(
        engine,
        call.requests,
        call.sources,
        members,
        deadline=time.monotonic() + call.timeout_s,
        timeout_s=call.timeout_s,
        preview_interval_s=call.preview_interval_s,
        progress_interval_s=call.progress_interval_s,
        pictures=call.pictures,
        label=f"batch {call.batch_id}",
    ).run()
    return members.outcomes


class _CallMembers:
    """`BatchMembers` of one call: every member is wanted and watched (the driver drops what it no
    longer needs); the outcomes are collected for `BatchDone`."""

    def __init__(self, count: int, stop: threading.Event, emit: Callable[[StepDone], None]) -> None:
        self.outcomes: list[Outcome] = [JobFailed("generation failed: not run")] * count
        self._stop = stop
        self.report = emit

    def stopped(self) -> bool:
        return self._stop.is_set()

    def cancelled(self, i: int) -> bool:
        return False

    def watched(self, i: int) -> bool:
        return True

    def settle(self, i: int, outcome: Outcome) -> None:
        self.outcomes[i] = outcome


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

    def catalog(self) -> dict[str, ModelEntry]:
        """Every model this replica runs, with its profile and token counter (`catalog_of`)."""
        return catalog_of(self._engine)

    def max_batch_images(self, request: GenerationRequest) -> int:
        """The engine's batch cap for this shape (free device memory on GPUs)."""
        return self._engine.max_batch_images(request)

    @serve.multiplexed(max_num_models_per_replica=ROUTED_MODELS)  # type: ignore[untyped-decorator]
    async def _serves_model(self, model: str) -> str:
        """Serve's model multiplexing, used for routing only: once this replica has run a batch of
        `model`, Serve sends that model's batches here first (the driver names the model of each
        call); the engine (an `EnginePool` with MODELS) loads and evicts the weights itself."""
        return model

    async def run(self, call: BatchCall) -> AsyncIterator[ReplicaMessage]:
        """Stream one batch: `ReplicaStarted`, `StepDone` per step, then `BatchDone`."""
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[object] = asyncio.Queue()
        stop = threading.Event()

        def emit(message: StepDone) -> None:
            loop.call_soon_threadsafe(inbox.put_nowait, message)

        model = serve.get_multiplexed_model_id()
        if model:
            await self._serves_model(model)
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
