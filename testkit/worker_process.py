"""A bot worker started as its own OS process (e.g. `tests.dispatch_worker`, `tests.scale_out_worker`),
driven through stdin and read through the JSON event lines it prints (`{"event": ..., "t": ...}`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from typing import Any, Protocol

from storage.interface import JobRecord, JobState, LedgerEntry
from testkit import REPO_ROOT


def worker_parser(*leading: str, capacity: int) -> argparse.ArgumentParser:
    """A worker's command line: the `leading` positionals, then URL OUTDIR WORKER (the database, the
    images' folder, the worker id), `--tag N` (its outbox's message ids) and `--capacity N`."""
    parser = argparse.ArgumentParser()
    for name in (*leading, "url", "outdir", "worker"):
        parser.add_argument(name)
    parser.add_argument("--tag", type=int, default=1)
    parser.add_argument("--capacity", type=int, default=capacity)
    return parser


class WorkerProcess:
    """One worker process and the events it has printed so far."""

    def __init__(self, proc: asyncio.subprocess.Process, wait_s: float) -> None:
        self.proc = proc
        self.wait_s = wait_s  # bound on every wait; never reached when the code is right
        self.events: list[dict[str, Any]] = []
        self._seen: dict[str, int] = {}  # kind → how many of it `next` returned

    @classmethod
    async def spawn(cls, module: str, *args: str, wait_s: float) -> WorkerProcess:
        """`python -m module *args` from the repository root, offline for models."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            *args,
            cwd=REPO_ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        return cls(proc, wait_s)

    async def read_one(self) -> None:
        """Read one line; keep it if it is an event (anything else, a library's print, is not ours)."""
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), self.wait_s)
        assert line, f"worker exited early (rc {await self.proc.wait()})"
        if line.startswith(b'{"event"'):
            self.events.append(json.loads(line))

    async def next(self, kind: str) -> dict[str, Any]:
        """The next event of `kind` not yet returned (reading more lines as needed)."""
        while True:
            seen = self._seen.get(kind, 0)
            of_kind = self.of(kind)
            if len(of_kind) > seen:
                self._seen[kind] = seen + 1
                return of_kind[seen]
            await self.read_one()

    def of(self, kind: str) -> list[dict[str, Any]]:
        """Every event of `kind` read so far."""
        return [e for e in self.events if e["event"] == kind]

    async def send(self, line: str) -> None:
        """One command line on the worker's stdin."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()

    async def quit(self) -> None:
        """Ask the worker to stop; it must say `closed` and exit with 0."""
        if self.proc.returncode is None:
            await self.send("quit")
            await self.next("closed")
            assert await asyncio.wait_for(self.proc.wait(), self.wait_s) == 0

    def kill(self) -> None:
        """SIGKILL, as a crash."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)


async def deliveries_until(workers: list[WorkerProcess], count: int, wait_s: float) -> list[dict[str, Any]]:
    """Read every live worker's lines until `count` `delivered` events in all; return them in time
    order (each event's `t`: one monotonic clock for all processes on this machine)."""

    def delivered() -> list[dict[str, Any]]:
        return [e for w in workers for e in w.of("delivered")]

    async def pump(worker: WorkerProcess) -> None:
        while len(delivered()) < count:
            await worker.read_one()

    readers = [asyncio.create_task(pump(w)) for w in workers if w.proc.returncode is None]
    try:
        done, _ = await asyncio.wait(readers, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
        assert done, f"only {len(delivered())} of {count} delivered"
    finally:
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    return sorted(delivered(), key=lambda e: e["t"])


class DeliveryStore(Protocol):
    """What `check_delivered_once` reads of a store."""

    async def get_job(self, job_id: str) -> JobRecord | None: ...

    async def ledger(self, guild_id: int, user_id: int | None = None) -> list[LedgerEntry]: ...


async def check_delivered_once(
    store: DeliveryStore, delivered: list[dict[str, Any]], expected: set[str]
) -> None:
    """The store agrees with the `delivered` events: every expected job is DONE with the message its
    delivery posted, and guild 1's ledger holds each job once, none refunded."""
    messages = {e["job"]: e["message"] for e in delivered}
    for job_id in expected:
        job = await store.get_job(job_id)
        assert job is not None and job.state is JobState.DONE, (job_id, job)
        assert job.result_message_id == messages[job_id], job_id
    ledger = await store.ledger(1)
    assert sorted(e.job_id for e in ledger) == sorted(expected) and not any(e.refunded for e in ledger)
