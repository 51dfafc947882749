"""Scale-out end to end: two bot processes (`tests.scale_out_worker`: JobRunner + ClaimSource on one
PostgreSQL) share ONE Ray Serve deployment of two stand-in replicas that this process deployed on the
session's Ray cluster; each worker joins it (`RayBackend.start` finds the app running). Read through the
workers' stdout; waits are on pipes with timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.ray_fixtures import require_ray

require_ray()

import ray  # noqa: E402

from generation.backends.ray_driver import RayBackend  # noqa: E402
from storage.interface import NewJob, Reservation  # noqa: E402
from testkit.worker_process import WorkerProcess, check_delivered_once, deliveries_until  # noqa: E402
from tests.pg_fixtures import DEFAULTS, open_pg_store  # noqa: E402
from tests.scale_out_worker import request, stand_in_backend  # noqa: E402

pytest_plugins = ("tests.pg_fixtures",)

WAIT = 60.0  # bound on every wait; never reached when the code is right
APP = "imagine-scale-out"


async def start_worker(address: str, url: str, outdir: Path, name: str, tag: int) -> WorkerProcess:
    """A `tests.scale_out_worker` process joining the Ray cluster at `address` and the app `APP`."""
    args = (address, APP, url, str(outdir), name, "--tag", str(tag), "--capacity", "4")
    return await WorkerProcess.spawn("tests.scale_out_worker", *args, wait_s=WAIT)


@pytest.fixture
async def deployment(ray_cluster: None) -> AsyncIterator[RayBackend]:
    """Two stand-in replicas deployed by this process (which deletes them at the end)."""
    backend = stand_in_backend(APP)
    await backend.start()
    yield backend
    await backend.close()


async def test_two_processes_on_one_deployment_deliver_100_jobs_from_10_users_exactly_once(
    deployment: RayBackend, pg_url: str, tmp_path: Path
) -> None:
    assert deployment.deployed_here
    address = ray.get_runtime_context().gcs_address
    store = await open_pg_store(pg_url, DEFAULTS, max_size=2)  # migrates the schema before the workers
    workers: list[WorkerProcess] = []
    try:
        for tag, name in enumerate(("a", "b"), start=1):
            workers.append(await start_worker(address, pg_url, tmp_path / "images", name, tag))
        ready = await asyncio.wait_for(asyncio.gather(*(w.next("ready") for w in workers)), WAIT)
        assert all(r["joined"] for r in ready)  # neither redeployed: one deployment, two drivers

        expected: set[str] = set()
        for i in range(10):
            for owner in range(1, 11):
                job_id = f"u{owner}-{i}"
                req = request(owner * 100 + i)
                job = NewJob(job_id, 1, 100, owner, req.to_json(), req.count)
                assert isinstance(await store.reserve(job, (), time.time()), Reservation)
                expected.add(job_id)
        await store.pool.execute("SELECT pg_notify('imagine_jobs', '')")  # wake the dispatchers now

        got = await deliveries_until(workers, 100, WAIT)
        await asyncio.wait_for(asyncio.gather(*(w.quit() for w in workers)), WAIT)

        print(
            "per process: delivered",
            [len(w.of("delivered")) for w in workers],
            "replicas used",
            [sorted({e["replica"] for e in w.of("delivered")}) for w in workers],
        )
        jobs = [e["job"] for e in got]
        assert sorted(jobs) == sorted(expected)  # every job, each once
        assert sum(len(w.of("delivered")) for w in workers) == 100  # nothing after the count either
        assert all(w.of("delivered") for w in workers), [len(w.of("delivered")) for w in workers]
        assert not any(w.of("told") for w in workers)  # no failure or cancel message
        replicas = {e["replica"] for e in got}  # both drivers' batches ran on the one deployment's two
        assert len(replicas) == 2 and all(f"{APP}#" in r for r in replicas), replicas
        await check_delivered_once(store, got, expected)
        assert await asyncio.to_thread(_app_running)  # the joined drivers left the deployment up
    finally:
        for worker in workers:
            if worker.proc.returncode is None:  # hung: its stacks on stderr, then kill it
                print("worker events:", worker.events[-3:])
                worker.proc.send_signal(signal.SIGUSR1)
                worker.proc.send_signal(signal.SIGUSR2)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(worker.proc.wait(), 1.0)
                worker.proc.send_signal(signal.SIGKILL)
            with contextlib.suppress(Exception):
                await worker.proc.wait()
        await store.close()


def _app_running() -> bool:
    from ray import serve

    status = serve.status().applications.get(APP)
    return status is not None and str(status.status).endswith("RUNNING")
