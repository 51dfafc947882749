"""SqliteStore across processes: shared limits, a killed writer, a long lock held elsewhere."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

from storage.interface import JobState, Limits, LimitsPatch, NewJob, Reservation, Scope
from storage.sqlite import open_store

REPO = Path(__file__).resolve().parents[1]
T0 = 1_700_000_000.0
OPEN = Limits(images_per_hour=None, images_per_day=None, max_queued=None, cooldown_seconds=0.0)
TIMEOUT = 30.0

RESERVER = """
import asyncio, json, sys
from storage.interface import Limits, NewJob, Reservation
from storage.sqlite import open_store

async def main(path, tag, count):
    async with open_store(path, Limits(None, None, None, 0.0)) as store:
        print("ready", flush=True)
        sys.stdin.readline()  # the parent says go once both processes are ready
        jobs = [NewJob(f"{tag}{i}", 1, 2, 3, "{}", 1) for i in range(count)]
        outs = await asyncio.gather(*(store.reserve(j, (), 1_700_000_000.0) for j in jobs))
        print(json.dumps(sum(isinstance(o, Reservation) for o in outs)), flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""

WRITER = """
import asyncio, sys
from storage.interface import JobState, Limits, NewJob
from storage.sqlite import open_store

async def main(path):
    store = await open_store(path, Limits(None, None, None, 0.0))
    first = NewJob("running-job", 1, 2, 3, '{"prompt": "fox"}', 2, interaction_token="tok")
    await store.reserve(first, (), 10.0)
    await store.set_job_state("running-job", JobState.RUNNING)
    await store.reserve(NewJob("queued-job", 1, 2, 4, "{}", 1), (), 11.0)
    print("written", flush=True)
    sys.stdin.readline()  # wait to be killed; never closes the store

asyncio.run(main(sys.argv[1]))
"""

LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute("INSERT INTO blocked_words (guild_id, phrase) VALUES (1, 'held')")
print("locked", flush=True)
time.sleep(2.0)  # the lock this test is about: held for two seconds by another process
conn.execute("COMMIT")
"""


async def spawn(script: str, *args: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=REPO,
    )


async def read_line(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None and proc.stderr is not None
    line = await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)
    if not line:
        err = await asyncio.wait_for(proc.stderr.read(), TIMEOUT)
        raise AssertionError(f"child exited early: {err.decode()}")
    return line.decode().strip()


async def finish(proc: asyncio.subprocess.Process) -> None:
    await asyncio.wait_for(proc.communicate(), TIMEOUT)


async def test_two_processes_fifty_reservations_grant_exactly_ten(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    async with open_store(path, OPEN) as store:
        await store.set_limits(1, Scope.GUILD, None, LimitsPatch(images_per_hour=10))
    procs = [await spawn(RESERVER, str(path), tag, "25") for tag in ("a", "b")]
    try:
        for p in procs:
            assert await read_line(p) == "ready"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(b"go\n")
            await p.stdin.drain()
        counts = [json.loads(await read_line(p)) for p in procs]
    finally:
        for p in procs:
            if p.returncode is None and p.stdin is not None:
                p.stdin.close()
            await finish(p)
    assert sum(counts) == 10
    assert all(p.returncode == 0 for p in procs)
    async with open_store(path, OPEN) as store:
        assert len(await store.ledger(1)) == 10
        assert len(await store.unfinished_jobs()) == 10


async def test_job_survives_a_killed_process(tmp_path: Path) -> None:
    path = tmp_path / "killed.db"
    proc = await spawn(WRITER, str(path))
    try:
        assert await read_line(proc) == "written"
    finally:
        proc.send_signal(signal.SIGKILL)
        await finish(proc)
    assert proc.returncode == -signal.SIGKILL
    async with open_store(path, OPEN) as store:
        running = await store.get_job("running-job")
        assert running is not None
        assert (running.state, running.images, running.request_json) == (
            JobState.RUNNING,
            2,
            '{"prompt": "fox"}',
        )
        assert running.interaction_token == "tok"
        assert [j.job_id for j in await store.unfinished_jobs()] == ["running-job", "queued-job"]
        assert [e.job_id for e in await store.ledger(1)] == ["running-job", "queued-job"]


async def test_reserve_waits_out_a_two_second_lock_held_by_another_process(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    async with open_store(path, OPEN, busy_timeout_s=5.0) as store:
        proc = await spawn(LOCKER, str(path))
        try:
            assert await read_line(proc) == "locked"
            start = time.monotonic()
            out = await store.reserve(NewJob("after-lock", 1, 2, 3, "{}", 1), (), T0)
            waited = time.monotonic() - start
        finally:
            await finish(proc)
        assert isinstance(out, Reservation)
        assert waited > 1.0  # it really waited for the other process to commit
        assert proc.returncode == 0
        assert await store.blocked_words(1) == ["held"]  # and sees what that process committed
