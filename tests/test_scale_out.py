"""Scale-out end to end: two bot processes (`tests.scale_out_worker`: JobRunner + ClaimDispatcher on one
PostgreSQL) share ONE Ray Serve deployment of two stand-in replicas that this process deployed on the
session's Ray cluster; each worker joins it (`RayBackend.start` finds the app running). Read through the
workers' stdout; waits are on pipes with timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.ray_fixtures import require_ray

require_ray()

import ray  # noqa: E402

from generation.ray_backend import RayBackend  # noqa: E402
from storage.interface import JobState, NewJob, Reservation  # noqa: E402
from tests.pg_fixtures import DEFAULTS, ROOT, open_pg_store  # noqa: E402
from tests.scale_out_worker import request, stand_in_backend  # noqa: E402

pytest_plugins = ("tests.pg_fixtures",)

WAIT = 60.0  # bound on every wait; never reached when the code is right
APP = "imagine-scale-out"


class Worker:
    """One `tests.scale_out_worker` process and the JSON lines it has printed."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []

    @classmethod
    async def start(cls, address: str, url: str, outdir: Path, name: str, tag: int) -> Worker:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.scale_out_worker",
            address,
            APP,
            url,
            str(outdir),
            name,
            "--tag",
            str(tag),
            "--capacity",
            "4",
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        return cls(proc)

    async def read_one(self) -> None:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), WAIT)
        assert line, f"worker exited early (rc {await self.proc.wait()})"
        if line.startswith(b'{"event"'):  # anything else (a library's print) is not ours
            self.events.append(json.loads(line))

    async def until(self, kind: str) -> dict[str, Any]:
        while not self.of(kind):
            await self.read_one()
        return self.of(kind)[0]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == kind]

    async def quit(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"quit\n")
        await self.proc.stdin.drain()
        await self.until("closed")
        assert await asyncio.wait_for(self.proc.wait(), WAIT) == 0


@pytest.fixture
async def deployment(ray_cluster: None) -> AsyncIterator[RayBackend]:
    """Two stand-in replicas deployed by this process (which deletes them at the end)."""
    backend = stand_in_backend(APP)
    await backend.start()
    yield backend
    await backend.close()


async def deliveries_until(workers: list[Worker], count: int) -> list[dict[str, Any]]:
    """Read every worker's lines until `count` deliveries in all."""

    def delivered() -> list[dict[str, Any]]:
        return [e for w in workers for e in w.of("delivered")]

    async def pump(worker: Worker) -> None:
        while len(delivered()) < count:
            await worker.read_one()

    readers = [asyncio.create_task(pump(w)) for w in workers]
    try:
        done, _ = await asyncio.wait(readers, timeout=WAIT, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
        assert done, f"only {len(delivered())} of {count} delivered"
    finally:
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    return delivered()


async def test_two_processes_on_one_deployment_deliver_100_jobs_from_10_users_exactly_once(
    deployment: RayBackend, pg_url: str, tmp_path: Path
) -> None:
    assert deployment.deployed_here
    address = ray.get_runtime_context().gcs_address
    store = await open_pg_store(pg_url, DEFAULTS, max_size=2)  # migrates the schema before the workers
    workers: list[Worker] = []
    try:
        for tag, name in enumerate(("a", "b"), start=1):
            workers.append(await Worker.start(address, pg_url, tmp_path / "images", name, tag))
        ready = await asyncio.wait_for(asyncio.gather(*(w.until("ready") for w in workers)), WAIT)
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

        got = await deliveries_until(workers, 100)
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
        messages = {e["job"]: e["message"] for e in got}
        for job_id in expected:
            record = await store.get_job(job_id)
            assert record is not None and record.state is JobState.DONE
            assert record.result_message_id == messages[job_id]
        ledger = await store.ledger(1)
        assert sorted(e.job_id for e in ledger) == sorted(expected) and not any(e.refunded for e in ledger)
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
