"""One local Ray cluster (CPU, dashboard and HTTP proxy off) shared by every Ray test of the session.

Import the fixture into a test module (`from tests.ray_fixtures import ray_cluster`) or list this
module in `pytest_plugins`. Starting a cluster costs ~5 s and ~1 GB, so it is started once, lazily,
and shut down at the end of the session. Without ray installed the tests are skipped, except under
`CI=true`, where a missing ray is a failure.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator

import pytest

RAY_CPUS = 4  # logical CPUs: two replicas plus a restarted one fit; the box may have fewer cores


def require_ray() -> None:
    """Skip the calling test module (or fail it under CI=true) when ray[serve] is not importable.
    Call it at module level, before importing anything that imports ray."""
    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("ray.serve") is None:
        message = 'ray[serve] is not installed (pip install -e ".[ray]")'
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message}; CI=true requires it", pytrace=False)
        pytest.skip(message, allow_module_level=True)


_started = False


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """A local Ray cluster with Serve running (proxy disabled); this process is its driver."""
    global _started
    require_ray()
    import ray
    from ray import serve

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    owner = False
    if not ray.is_initialized():
        ray.init(num_cpus=RAY_CPUS, include_dashboard=False, log_to_driver=False)
        owner = not _started
        _started = True
    serve.start(proxy_location="Disabled")
    yield
    if owner:
        serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()
