"""`python -m bench limits`: how fast `SqliteStore.reserve` checks and spends, and that it never overspends.

Three runs on a fresh temp-file database each, with a fake clock that moves 3 s per request so the
requests span several hours and both sliding windows refuse some: sequential awaits on one
connection; eight concurrent tasks on one connection; eight tasks spread over two connections (two
stores on one file, as two processes would be). Then the ledger is read back and every granted spend
is checked against the hour and day windows that end at it: `overspent` counts spends that pushed a
window past its limit (must be 0).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from bench.report import report
from storage.interface import Limits, NewJob, Reservation
from storage.limits import DAY_S, HOUR_S
from storage.sqlite import LedgerEntry, SqliteStore, open_store

GUILD = 1
STEP_S = 3.0  # fake seconds between requests
LIMITS = Limits(images_per_hour=25, images_per_day=160, max_queued=None, cooldown_seconds=0.0)


def _requests(count: int, users: int, seed: int) -> list[tuple[int, int]]:
    """(user, images) per request, reproducible."""
    rng = random.Random(seed)
    return [(1000 + i % users, rng.randint(1, 4)) for i in range(count)]


def _job(tag: str, i: int, user: int, images: int) -> NewJob:
    return NewJob(
        job_id=f"{tag}{i}", guild_id=GUILD, channel_id=2, owner_id=user, request_json="{}", images=images
    )


async def _sequential(store: SqliteStore, reqs: Sequence[tuple[int, int]], t0: float) -> tuple[int, float]:
    granted = 0
    start = time.perf_counter()
    for i, (user, n) in enumerate(reqs):
        out = await store.reserve(_job("s", i, user, n), (), t0 + i * STEP_S)
        granted += isinstance(out, Reservation)
    return granted, time.perf_counter() - start


async def _concurrent(
    stores: Sequence[SqliteStore], reqs: Sequence[tuple[int, int]], t0: float, tasks: int
) -> tuple[int, float]:
    counter = iter(range(len(reqs)))
    granted = 0

    async def worker(k: int) -> None:
        nonlocal granted
        store = stores[k % len(stores)]
        for i in counter:  # shared iterator: each request is taken by exactly one task
            user, n = reqs[i]
            out = await store.reserve(_job("c", i, user, n), (), t0 + i * STEP_S)
            granted += isinstance(out, Reservation)

    start = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(tasks)))
    return granted, time.perf_counter() - start


def overspends(entries: Sequence[LedgerEntry], limits: Limits) -> int:
    """Granted spends after which some window ending at them held more than its limit."""
    by_user: dict[int, list[LedgerEntry]] = defaultdict(list)
    for e in entries:
        if not e.refunded:
            by_user[e.user_id].append(e)
    bad = 0
    for rows in by_user.values():
        rows.sort(key=lambda e: e.at)
        for e in rows:
            for limit, window in ((limits.images_per_hour, HOUR_S), (limits.images_per_day, DAY_S)):
                if limit is None:
                    continue
                used = sum(r.images for r in rows if e.at - window < r.at <= e.at)
                if used > limit:
                    bad += 1
                    break
    return bad


async def run(count: int, users: int, tasks: int, seed: int) -> dict[str, float | int]:
    """All three runs; the figures."""
    reqs = _requests(count, users, seed)
    t0 = 1_700_000_000.0
    figures: dict[str, float | int] = {"requests": count, "users": users, "tasks": tasks}
    overspent = 0
    with tempfile.TemporaryDirectory(prefix="bench-limits-") as tmp:
        async with open_store(Path(tmp) / "seq.db", LIMITS) as store:
            granted, elapsed = await _sequential(store, reqs, t0)
            ledger = await store.ledger(GUILD)
        assert len(ledger) == granted, "ledger rows differ from grants"
        overspent += overspends(ledger, LIMITS)
        figures["reservations_per_s"] = round(count / elapsed, 1)
        figures["granted_fraction"] = round(granted / count, 3)

        async with open_store(Path(tmp) / "conc.db", LIMITS) as store:
            granted_c, elapsed = await _concurrent([store], reqs, t0, tasks)
            ledger = await store.ledger(GUILD)
        assert len(ledger) == granted_c, "ledger rows differ from grants"
        overspent += overspends(ledger, LIMITS)
        figures["concurrent_reservations_per_s"] = round(count / elapsed, 1)
        figures["concurrent_granted_fraction"] = round(granted_c / count, 3)

        path = Path(tmp) / "two.db"
        async with open_store(path, LIMITS) as a, open_store(path, LIMITS) as b:
            granted_2, elapsed = await _concurrent([a, b], reqs, t0, tasks)
            ledger = await a.ledger(GUILD)
        assert len(ledger) == granted_2, "ledger rows differ from grants"
        overspent += overspends(ledger, LIMITS)
        figures["two_connection_reservations_per_s"] = round(count / elapsed, 1)
    figures["overspent"] = overspent
    return figures


def main(argv: list[str]) -> int:
    """Run the benchmark and report it."""
    parser = argparse.ArgumentParser(prog="python -m bench limits", description=__doc__)
    parser.add_argument("--requests", type=int, default=10_000, help="reservations per run")
    parser.add_argument("--users", type=int, default=100, help="members sharing the requests")
    parser.add_argument("--tasks", type=int, default=8, help="concurrent tasks")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    figures = asyncio.run(run(args.requests, args.users, args.tasks, args.seed))
    report("limits", figures, argv)
    return 0 if figures["overspent"] == 0 else 1
