"""The Serve app a `RayBackend` sends its batches to: joined if it runs, else deployed; left on close.

Several drivers, one deployment (many bot processes on one cluster): `open()` joins the Serve app
named `app_name` if it already runs (`serve.get_app_handle`) instead of redeploying it, so only the
first process deploys, and only the process that deployed deletes the app on `close()` (one that joined
leaves it running). An app found running another model (its profile's name is not `model_id`) is
redeployed with this driver's settings. Free slots are per driver: each counts the app's running
replicas × `max_ongoing` as its own, so with N drivers up to N × that many batches are in flight at
once; the excess waits in Serve's handle queue (first come first served between drivers) until a
replica is free, and that wait counts against the batch's time limit. Fairness across processes is
kept before that point, by the shared queue's claim order and each claim source's small `capacity`
(`jobs.claims.ClaimSource`). Two processes starting at the same moment may both deploy; the
second deploy updates the app in place (a broken stream is requeued, as for a lost replica).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import serve

from generation.backends.protocol import ModelEntry, TokenCounter
from generation.backends.ray_cluster import (
    DeploySpec,
    connect,
    deploy,
    existing_app,
    gpus_per_replica,
    running_replicas,
    shutdown_ray,
)
from generation.backends.ray_replica import DiffusersFactory, EngineFactory
from generation.model_set import ModelSet
from generation.pipelines.options import OptimiseOptions
from generation.pipelines.safety_options import SafetyOptions
from generation.prompts.request import GenerationRequest, ModelProfile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplicaModels:
    """What each replica loads besides MODEL_ID: the models of MODELS (an `EnginePool`, within
    MODEL_MEMORY_GB off CUDA) and the LoRA folder."""

    models: ModelSet | None = None
    memory_budget_gb: float | None = None
    lora_dir: Path | None = None
    video_model: str | None = None  # VIDEO_MODEL: each replica loads it on first use
    edit_model: str | None = None  # EDIT_MODEL: each replica loads it on first use


class ServeApp:
    """One driver's view of the Serve app: its handle, the model's profile, a token counter, the batch
    cap at the native size, and the free slots (replicas × `max_ongoing`)."""

    def __init__(
        self,
        model_id: str,
        device: str,
        *,
        replicas: int | None,
        autoscale: tuple[int, int] | None,
        address: str | None,
        cache_dir: Path | None,
        optimise: OptimiseOptions | None,
        safety: SafetyOptions | None,
        engine_factory: EngineFactory | None,
        max_ongoing: int,
        replica_cpus: float | None,
        app_name: str,
        models: ReplicaModels | None = None,
    ) -> None:
        """See `generation.backends.ray_driver.RayBackend`; ValueError for an impossible layout."""
        if replicas is not None and autoscale is not None:
            raise ValueError("give replicas or autoscale, not both")
        if replicas is not None and replicas < 1:
            raise ValueError("replicas must be at least 1")
        if autoscale is not None and not 1 <= autoscale[0] <= autoscale[1]:
            raise ValueError("autoscale must be (min, max) with 1 <= min <= max")
        if max_ongoing < 1:
            raise ValueError("max_ongoing must be at least 1")
        self.model_id = model_id
        self.device = device
        self.name = app_name
        self.autoscale = autoscale
        self.max_ongoing = max_ongoing
        self._replicas = replicas if replicas is not None else 1  # unused when autoscaling
        self._address = address
        self._cache_dir = cache_dir
        self._optimise = optimise
        self._safety = safety
        self._factory = engine_factory
        self._models = models or ReplicaModels()
        self._replica_cpus = replica_cpus
        self.handle: Any = None
        self.profile: ModelProfile | None = None
        self.counter: TokenCounter | None = None
        self.catalog: dict[str, ModelEntry] = {}  # every model the replicas run (`catalog_of`)
        self.native_cap = 1
        self.capacity = 0  # free slots when nothing runs: live replicas × max_ongoing
        self.owns_app = False  # this driver deployed the app (else it joined one already running)
        self._owns_ray = False

    async def open(self) -> None:
        """Join or start the cluster, join the app or deploy it (each replica loads the model once),
        and fetch the profile, a token counter and the batch cap from a replica."""
        self._owns_ray = await asyncio.to_thread(connect, self._address)
        self.handle = await asyncio.to_thread(existing_app, self.name)
        if self.handle is not None:
            self.profile = await self.handle.profile.remote()
            if self.profile.name == self.model_id:
                log.info("joining the running Serve app %r (deployed by another driver)", self.name)
            else:  # a leftover of another configuration: replace it, as a fresh deploy would
                log.warning(
                    "Serve app %r runs %r, not %r: redeploying it",
                    self.name,
                    self.profile.name,
                    self.model_id,
                )
                self.handle = None
        if self.handle is None:
            self.handle = await asyncio.to_thread(deploy, self.spec())
            self.owns_app = True
            self.profile = await self.handle.profile.remote()
        assert self.profile is not None
        self.counter = await self.handle.token_counter.remote()
        self.catalog = await self.handle.catalog.remote()
        native = self.profile.native_size
        probe = GenerationRequest(
            "probe", native, native, self.profile.default_steps, 7.5, (0,), self.model_id
        )
        self.native_cap = max(1, await self.handle.max_batch_images.remote(probe))
        if self.autoscale is None:
            replicas = self._replicas
            if not self.owns_app:  # the app's own replica count, not this driver's setting
                replicas = await asyncio.to_thread(running_replicas, self.name) or replicas
            self.capacity = replicas * self.max_ongoing
        else:
            self.capacity = self.autoscale[0] * self.max_ongoing

    def spec(self) -> DeploySpec:
        """What `deploy` needs: the replicas' engine factory, GPUs, counts and limits."""
        gpus = gpus_per_replica(self.device)
        device = self.device
        if gpus:
            device = "cuda"  # Ray sets CUDA_VISIBLE_DEVICES: the replica's GPU is its "cuda"
        elif device == "auto":
            device = "cpu"
        models = self._models
        factory = self._factory or DiffusersFactory(
            self.model_id,
            device,
            self._cache_dir,
            self._optimise,
            self._safety,
            models=models.models,
            memory_budget_gb=models.memory_budget_gb,
            lora_dir=models.lora_dir,
            video_model=models.video_model,
            edit_model=models.edit_model,
        )
        return DeploySpec(
            self.name,
            self.model_id,
            factory,
            gpus,
            self.max_ongoing,
            self._replicas,
            self.autoscale,
            self._replica_cpus,
        )

    async def refresh_capacity(self) -> bool:
        """Autoscaling: set the slot count from the replicas running now; False if none were found."""
        running = await asyncio.to_thread(running_replicas, self.name)
        if not running:
            return False
        self.capacity = running * self.max_ongoing
        return True

    async def close(self) -> None:
        """Delete the app if this driver deployed it; leave a cluster this driver started."""
        if self.handle is not None and self.owns_app:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(serve.delete, self.name)
        if self._owns_ray:
            await asyncio.to_thread(shutdown_ray)
