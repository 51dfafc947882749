"""`python -m bench limits [--postgres [URL]]`: how fast a store's `reserve` checks and spends, and that it
never overspends.

Every run starts on an empty database and uses a fake clock that moves 3 s per request, so the
requests span several hours and both sliding windows refuse some. After each run the ledger is read
back and every granted spend is checked against the hour and day windows that end at it: `overspent`
counts spends that pushed a window past its limit (must be 0; the exit status is 1 otherwise).

SQLite (the default), three runs on fresh temp files: sequential awaits on one connection; `--tasks`
concurrent tasks on one connection; the same tasks spread over two connections to one file (as two
processes would be).

PostgreSQL (`--postgres`): the server at URL, else at `$DATABASE_URL`, else a throwaway one that
`scripts/pg.sh` starts and stops. Each run gets a schema of its own, dropped at the end: sequential
awaits on one connection; `--tasks` concurrent tasks on a pool of that many connections; and two OS
processes (`python -m bench.limits child …`) started together, each with half the tasks and half the
requests (alternate rounds of the members, so every member is reserved for from both, each process
starting its rounds half-way round from the other), each printing `ready` and waiting for a line on
stdin before the parent releases both at once. Its figure is requests ÷ wall time from the release to
the last child's answer.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit

from bench.config import LIMITS_PG_URL_ENV, BenchSettings, load_settings
from bench.report import report
from storage.interface import LedgerEntry, Limits, NewJob, Refusal, Reservation, StorageError
from storage.quota import DAY_S, HOUR_S
from storage.sqlite import open_store

GUILD = 1
STEP_S = 3.0  # fake seconds between requests
T0 = 1_700_000_000.0  # the fake clock at request 0
LIMITS = Limits(images_per_hour=25, images_per_day=160, max_queued=None, cooldown_seconds=0.0)
PROCESSES = 2  # OS processes in the PostgreSQL cross-process run
ROOT = Path(__file__).resolve().parent.parent
PG_SH = ROOT / "scripts" / "pg.sh"
_CHILD_TIMEOUT_S = 120.0

Figures = dict[str, float | int | str]


class Reserver(Protocol):
    """The part of `storage.interface.Store` this benchmark drives (SQLite and PostgreSQL stores)."""

    async def reserve(self, job: NewJob, role_ids: tuple[int, ...], now: float) -> Reservation | Refusal: ...

    async def ledger(self, guild_id: int, user_id: int | None = None) -> list[LedgerEntry]: ...


def _requests(count: int, users: int, seed: int) -> list[tuple[int, int]]:
    """(user, images) per request, reproducible."""
    rng = random.Random(seed)
    return [(1000 + i % users, rng.randint(1, 4)) for i in range(count)]


def _share(count: int, users: int, index: int, processes: int) -> list[int]:
    """The request indices process `index` of `processes` takes, in the order it takes them.

    Alternate rounds of `users` requests (one per member), so each member's requests come from every
    process at interleaved fake times; each process starts its rounds at a different member, so the
    processes meet on one member (and its lock) now and then, as two bot processes would, not always.
    """
    shift = users * index // processes
    share: list[int] = []
    for start in range(index * users, count, processes * users):
        round_ = list(range(start, min(start + users, count)))
        share += round_[shift:] + round_[:shift]
    return share


def _job(tag: str, i: int, user: int, images: int) -> NewJob:
    return NewJob(
        job_id=f"{tag}{i}", guild_id=GUILD, channel_id=2, owner_id=user, request_json="{}", images=images
    )


async def _sequential(store: Reserver, reqs: Sequence[tuple[int, int]]) -> tuple[int, float]:
    granted = 0
    start = time.perf_counter()
    for i, (user, n) in enumerate(reqs):
        out = await store.reserve(_job("s", i, user, n), (), T0 + i * STEP_S)
        granted += isinstance(out, Reservation)
    return granted, time.perf_counter() - start


async def _concurrent(
    stores: Sequence[Reserver],
    reqs: Sequence[tuple[int, int]],
    tasks: int,
    share: Sequence[int] | None = None,
) -> tuple[int, float]:
    """`tasks` tasks reserving the requests at `share` (default: all), each at its own fake time."""
    counter = iter(range(len(reqs)) if share is None else share)
    granted = 0

    async def worker(k: int) -> None:
        nonlocal granted
        store = stores[k % len(stores)]
        for i in counter:  # shared iterator: each request is taken by exactly one task
            user, n = reqs[i]
            out = await store.reserve(_job("c", i, user, n), (), T0 + i * STEP_S)
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


async def _audit(store: Reserver, granted: int) -> int:
    """The run's overspends, after checking that the ledger holds exactly the granted spends."""
    ledger = await store.ledger(GUILD)
    if len(ledger) != granted:
        raise RuntimeError(f"the ledger holds {len(ledger)} spends, but {granted} reservations were granted")
    return overspends(ledger, LIMITS)


def _rates(figures: Figures, prefix: str, count: int, granted: int, elapsed: float) -> None:
    figures[f"{prefix}reservations_per_s"] = round(count / elapsed, 1)
    figures[f"{prefix}granted_fraction"] = round(granted / count, 3)


async def run(count: int, users: int, tasks: int, seed: int) -> Figures:
    """The three SQLite runs; the figures."""
    reqs = _requests(count, users, seed)
    figures: Figures = {"backend": "sqlite", "requests": count, "users": users, "tasks": tasks}
    overspent = 0
    with tempfile.TemporaryDirectory(prefix="bench-limits-") as tmp:
        async with open_store(Path(tmp) / "seq.db", LIMITS) as store:
            granted, elapsed = await _sequential(store, reqs)
            overspent += await _audit(store, granted)
        _rates(figures, "", count, granted, elapsed)

        async with open_store(Path(tmp) / "conc.db", LIMITS) as store:
            granted, elapsed = await _concurrent([store], reqs, tasks)
            overspent += await _audit(store, granted)
        _rates(figures, "concurrent_", count, granted, elapsed)

        path = Path(tmp) / "two.db"
        async with open_store(path, LIMITS) as a, open_store(path, LIMITS) as b:
            granted, elapsed = await _concurrent([a, b], reqs, tasks)
            overspent += await _audit(a, granted)
        figures["two_connection_reservations_per_s"] = round(count / elapsed, 1)
    figures["overspent"] = overspent
    return figures


# PostgreSQL ---------------------------------------------------------------------------------------


def with_schema(url: str, schema: str) -> str:
    """`url` with `search_path` set to `schema` (asyncpg passes unknown query parameters as settings)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query["search_path"] = schema
    return parts._replace(query=urlencode(query)).geturl()


def postgres_url(given: str | None, settings: BenchSettings) -> str | None:
    """The server to use: `given` (from `--postgres URL`), else `$DATABASE_URL`; None: start one."""
    return given or settings.database_url or None


@contextmanager
def throwaway_server() -> Iterator[str]:
    """A fresh PostgreSQL server from `scripts/pg.sh start`, stopped and deleted on exit; yields its URL."""
    started = subprocess.run(["bash", str(PG_SH), "start"], capture_output=True, text=True, timeout=120)
    if started.returncode != 0:
        raise RuntimeError(f"scripts/pg.sh start failed:\n{started.stderr.strip()}")
    # The last line: `export DATABASE_URL=… PG_TEST_DIR=…`
    exported = dict(item.split("=", 1) for item in started.stdout.strip().splitlines()[-1].split()[1:])
    try:
        yield exported["DATABASE_URL"]
    finally:
        subprocess.run(["bash", str(PG_SH), "stop", exported["PG_TEST_DIR"]], capture_output=True, timeout=60)


async def _two_processes(
    url: str, count: int, users: int, tasks: int, seed: int, settings: BenchSettings
) -> tuple[int, float]:
    """Start PROCESSES children, release them together once all are ready; (granted, wall seconds)."""
    env = settings.child_env(**{LIMITS_PG_URL_ENV: url})
    each = max(1, tasks // PROCESSES)
    args = [str(a) for a in (PROCESSES, count, users, each, seed)]
    procs: list[asyncio.subprocess.Process] = []
    try:
        for index in range(PROCESSES):
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "bench.limits",
                    "child",
                    str(index),
                    *args,
                    cwd=ROOT,
                    env=env,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                )
            )
        for p in procs:  # every child connected and migrated before any starts
            assert p.stdout is not None
            line = await asyncio.wait_for(p.stdout.readline(), _CHILD_TIMEOUT_S)
            if line.strip() != b"ready":
                raise RuntimeError(f"a benchmark child process failed to start (said {line!r})")
        start = time.perf_counter()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(b"go\n")
        await asyncio.gather(*(p.stdin.drain() for p in procs if p.stdin is not None))
        outs = await asyncio.wait_for(
            asyncio.gather(*(p.stdout.readline() for p in procs if p.stdout is not None)), _CHILD_TIMEOUT_S
        )
        elapsed = time.perf_counter() - start
        codes = await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), _CHILD_TIMEOUT_S)
        if any(codes) or not all(o.strip().isdigit() for o in outs):
            raise RuntimeError(f"a benchmark child process failed (exit codes {codes}, output {outs!r})")
        return sum(int(o) for o in outs), elapsed
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()


async def _child(url: str, index: int, processes: int, count: int, users: int, tasks: int, seed: int) -> None:
    """One process of the cross-process run (see the module docstring), on the server at `url`."""
    from storage.postgres import open_pg_store

    reqs = _requests(count, users, seed)
    share = _share(count, users, index, processes)
    async with await open_pg_store(url, LIMITS, min_size=tasks, max_size=tasks) as store:
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        granted, _ = await _concurrent([store], reqs, tasks, share)
        print(granted, flush=True)


async def run_postgres(
    url: str, count: int, users: int, tasks: int, seed: int, *, settings: BenchSettings
) -> Figures:
    """The three PostgreSQL runs on the server at `url`, each in a fresh schema dropped afterwards
    (the child processes' environment from `settings`)."""
    import asyncpg

    from storage.postgres import DEFAULT_CONNECT_TIMEOUT_S, describe_connect_error, open_pg_store

    reqs = _requests(count, users, seed)
    figures: Figures = {"backend": "postgres", "requests": count, "users": users, "tasks": tasks}
    overspent = 0
    tag = f"bench_limits_{secrets.token_hex(4)}"
    try:
        admin = await asyncpg.connect(url, timeout=DEFAULT_CONNECT_TIMEOUT_S)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError, ValueError) as err:
        raise StorageError(describe_connect_error(err, url)) from err
    schemas: list[str] = []

    async def fresh(name: str) -> str:
        schema = f"{tag}_{name}"
        await admin.execute(f"CREATE SCHEMA {schema}")
        schemas.append(schema)
        return with_schema(url, schema)

    try:
        figures["postgres_version"] = str(await admin.fetchval("SHOW server_version"))
        async with await open_pg_store(await fresh("seq"), LIMITS, min_size=1, max_size=1) as store:
            granted, elapsed = await _sequential(store, reqs)
            overspent += await _audit(store, granted)
        _rates(figures, "", count, granted, elapsed)

        async with await open_pg_store(await fresh("conc"), LIMITS, min_size=tasks, max_size=tasks) as store:
            granted, elapsed = await _concurrent([store], reqs, tasks)
            overspent += await _audit(store, granted)
        _rates(figures, "concurrent_", count, granted, elapsed)

        two_url = await fresh("two")
        async with await open_pg_store(two_url, LIMITS, max_size=1):
            pass  # migrate once here, so the children's timed part never includes it
        granted, elapsed = await _two_processes(two_url, count, users, tasks, seed, settings)
        async with await open_pg_store(two_url, LIMITS, max_size=1) as store:
            overspent += await _audit(store, granted)
        _rates(figures, "two_process_", count, granted, elapsed)
        figures["processes"] = PROCESSES
    finally:
        for schema in schemas:
            await admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await admin.close()
    figures["overspent"] = overspent
    return figures


def _redacted(argv: Sequence[str]) -> list[str]:
    """`argv` with any password in a postgresql:// URL hidden (it goes into RESULTS.md)."""
    if not any("://" in a for a in argv):
        return list(argv)
    from storage.postgres import redact_url

    return [redact_url(a) if "://" in a else a for a in argv]


def main(argv: list[str], settings: BenchSettings) -> int:
    """Run the benchmark and report it."""
    parser = argparse.ArgumentParser(
        prog="python -m bench limits",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--requests", type=int, default=10_000, help="reservations per run")
    parser.add_argument("--users", type=int, default=100, help="members sharing the requests")
    parser.add_argument("--tasks", type=int, default=8, help="concurrent tasks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--postgres",
        nargs="?",
        const="",
        default=None,
        metavar="URL",
        help="benchmark PostgreSQL: URL, else $DATABASE_URL, else a throwaway server (scripts/pg.sh)",
    )
    args = parser.parse_args(argv)
    sizes = (args.requests, args.users, args.tasks, args.seed)
    try:
        if args.postgres is None:
            figures = asyncio.run(run(*sizes))
        elif (url := postgres_url(args.postgres, settings)) is not None:
            figures = asyncio.run(run_postgres(url, *sizes, settings=settings))
        else:
            with throwaway_server() as url:
                figures = asyncio.run(run_postgres(url, *sizes, settings=settings))
    except (StorageError, RuntimeError) as err:  # no server, or a child process failed: say so, no traceback
        print(f"bench limits: {err}", file=sys.stderr)
        return 2
    report("limits", figures, _redacted(argv), results_path=settings.results_path)
    return 0 if figures["overspent"] == 0 else 1


if __name__ == "__main__":
    child_url = load_settings().limits_pg_url
    if sys.argv[1:2] == ["child"] and len(sys.argv) == 8 and child_url is not None:
        # index processes count users tasks seed
        asyncio.run(_child(child_url, *(int(a) for a in sys.argv[2:8])))
    else:
        usage = "python -m bench.limits child INDEX PROCESSES COUNT USERS TASKS SEED"
        sys.exit(f"usage: {LIMITS_PG_URL_ENV}=URL {usage}")
