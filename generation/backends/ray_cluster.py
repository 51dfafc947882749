"""The Ray cluster side of `RayBackend`: joining a cluster, deploying the Serve app of GPU replicas,
and reading or ending what runs there. Blocking calls: the driver runs them off the event loop."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, cast

import ray
from ray import serve

from generation.backends.ray_replica import EngineFactory, ImagineReplica

log = logging.getLogger(__name__)

DEPLOYMENT_NAME = "ImagineReplica"


@dataclass(frozen=True)
class DeploySpec:
    """How the Serve app is deployed: fixed `replicas`, or `autoscale=(min, max)` when given."""

    app: str
    model_id: str
    factory: EngineFactory
    gpus: float  # per replica
    max_ongoing: int
    replicas: int
    autoscale: tuple[int, int] | None
    replica_cpus: float | None


def connect(address: str | None) -> bool:
    """Join the cluster at `address` unless this process is connected already (address None: Ray's own
    default, a RAY_ADDRESS it was started with, else a local cluster); start Serve. True if this call
    connected (the caller then owns the connection)."""
    owns = False
    if ray.is_initialized():
        log.info("using this process's Ray connection")
    else:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
        owns = True
    serve.start(proxy_location="Disabled")
    return owns


def gpus_per_replica(device: str) -> float:
    """1 for a CUDA device, or `auto` on a cluster with GPUs; else 0."""
    if device.startswith("cuda"):
        return 1.0
    gpus = ray.cluster_resources().get("GPU", 0)  # type: ignore[no-untyped-call]
    if device == "auto" and gpus >= 1:
        return 1.0
    return 0.0


def deploy(spec: DeploySpec) -> Any:
    """Deploy (or redeploy) the app; returns its handle."""
    actor_options: dict[str, Any] = {"num_gpus": spec.gpus}
    if spec.replica_cpus is not None:
        actor_options["num_cpus"] = spec.replica_cpus
    options: dict[str, Any] = {"max_ongoing_requests": spec.max_ongoing, "ray_actor_options": actor_options}
    if spec.autoscale is None:
        options["num_replicas"] = spec.replicas
    else:
        low, high = spec.autoscale
        options["autoscaling_config"] = {
            "min_replicas": low,
            "max_replicas": high,
            # Full replicas plus one batch waiting at the handle read as "more needed".
            "target_ongoing_requests": spec.max_ongoing,
        }
    app = cast(Any, ImagineReplica).options(**options).bind(spec.factory)  # a serve.Deployment
    log.info("deploying %s on Ray Serve: %s", spec.model_id, options)
    return serve.run(app, name=spec.app, route_prefix=None)


def kill_replica(name: str) -> None:
    with contextlib.suppress(Exception):
        ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)


def existing_app(app: str) -> Any:
    """A handle to the Serve app `app` if it is deploying or running, else None."""
    status = serve.status().applications.get(app)
    if status is None or not str(status.status).endswith(("RUNNING", "DEPLOYING")):
        return None
    return serve.get_app_handle(app)


def running_replicas(app: str) -> int:
    status = serve.status().applications.get(app)
    if status is None:
        return 0
    deployment = status.deployments.get(DEPLOYMENT_NAME)
    if deployment is None:
        return 0
    return sum(n for state, n in deployment.replica_states.items() if str(state).endswith("RUNNING"))


def shutdown_ray() -> None:
    with contextlib.suppress(Exception):
        serve.shutdown()  # type: ignore[no-untyped-call]
    ray.shutdown()
