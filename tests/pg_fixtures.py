"""PostgreSQL for tests: one server per session, one fresh schema per test.

The server: `TEST_DATABASE_URL` if set, else a throwaway one that `scripts/pg.sh start` makes (and
`stop` removes at the end). Without PostgreSQL binaries the tests skip, except in CI (`CI=true`),
where that is a failure. Each test gets `pg_url`: the server's URL with `search_path` set to a new,
empty schema, dropped afterwards, so tests never see each other's rows.

Use them in a test module with `pytest_plugins = ("tests.pg_fixtures",)`, and import `asyncpg` and
`storage.postgres`'s names from here: without asyncpg installed the module skips (fails in CI).

Run as `python -m tests.pg_fixtures reserve URL GUILD USER COUNT` it is the second process of the
cross-process tests: it opens a store, prints `ready`, waits for a line on stdin, then makes COUNT
concurrent one-image reservations and prints how many were granted.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest

if importlib.util.find_spec("asyncpg") is None and os.environ.get("CI", "").lower() != "true":
    pytest.skip('asyncpg is not installed (pip install -e ".[postgres]")', allow_module_level=True)

import asyncpg

from storage.interface import Limits, NewJob, Reservation
from storage.postgres import PG_MIGRATIONS, PG_SCHEMA_VERSION, PostgresStore, migrate, open_pg_store

# Test modules import asyncpg and storage.postgres from here, after the check above.
__all__ = [
    "DEFAULTS",
    "PG_MIGRATIONS",
    "PG_SCHEMA_VERSION",
    "ROOT",
    "PostgresStore",
    "asyncpg",
    "migrate",
    "new_job",
    "open_pg_store",
    "pg_server_url",
    "pg_url",
    "with_params",
]

ROOT = Path(__file__).resolve().parent.parent
PG_SH = ROOT / "scripts" / "pg.sh"
DEFAULTS = Limits(images_per_hour=None, images_per_day=None, max_queued=None, cooldown_seconds=0.0)


def with_params(url: str, **params: str) -> str:
    """`url` with query parameters added or replaced (asyncpg passes unknown ones as server settings)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(params)
    return parts._replace(query=urlencode(query)).geturl()


def _have_binaries() -> bool:
    return subprocess.run(["bash", str(PG_SH), "bindir"], capture_output=True).returncode == 0


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """A PostgreSQL server for the session (see the module docstring)."""
    given = os.environ.get("TEST_DATABASE_URL")
    if given:
        yield given
        return
    if not _have_binaries():
        reason = "PostgreSQL binaries not found (apt-get install -y postgresql, or set TEST_DATABASE_URL)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI needs PostgreSQL: {reason}")
        pytest.skip(reason)
    started = subprocess.run(["bash", str(PG_SH), "start"], capture_output=True, text=True, timeout=120)
    if started.returncode != 0:
        pytest.fail(f"scripts/pg.sh start failed:\n{started.stderr}")
    # The last line: `export DATABASE_URL=… PG_TEST_DIR=…`
    exported = dict(item.split("=", 1) for item in started.stdout.strip().splitlines()[-1].split()[1:])
    try:
        yield exported["DATABASE_URL"]
    finally:
        subprocess.run(["bash", str(PG_SH), "stop", exported["PG_TEST_DIR"]], capture_output=True, timeout=60)


@pytest.fixture
async def pg_url(pg_server_url: str) -> AsyncIterator[str]:
    """The server's URL, pointed at a fresh schema of its own (dropped after the test)."""
    schema = f"test_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(pg_server_url)
    try:
        await admin.execute(f"CREATE SCHEMA {schema}")
        yield with_params(pg_server_url, search_path=schema)
    finally:
        await admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await admin.close()


def new_job(job_id: str, *, guild: int = 1, owner: int = 10, images: int = 1) -> NewJob:
    """A job for tests (the request JSON is opaque to the store)."""
    return NewJob(
        job_id=job_id,
        guild_id=guild,
        channel_id=100,
        owner_id=owner,
        request_json='{"prompt": "a fox"}',
        images=images,
    )


async def _reserve_many(url: str, guild: int, user: int, count: int) -> None:
    limits = Limits(images_per_hour=None, images_per_day=None, max_queued=None, cooldown_seconds=0.0)
    store = await open_pg_store(url, limits, max_size=count)
    try:
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        tag = f"p{os.getpid()}"
        results = await asyncio.gather(
            *(store.reserve(new_job(f"{tag}-{i}", guild=guild, owner=user), (), 1000.0) for i in range(count))
        )
        print(sum(isinstance(r, Reservation) for r in results), flush=True)
    finally:
        await store.close()


if __name__ == "__main__":
    if sys.argv[1:2] == ["reserve"] and len(sys.argv) == 6:
        asyncio.run(_reserve_many(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])))
    else:
        sys.exit("usage: python -m tests.pg_fixtures reserve URL GUILD USER COUNT")
