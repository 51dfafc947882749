"""One numbering of the schema steps for both dialects, and upgrades of files from before it.

Before, SQLite had steps 1 (initial) and 2 (batch key, message index, partial refunds) and PostgreSQL
1 (initial), 2 (job queue) and 3 (message index, partial refunds). Now both have 1 initial, 2 job_queue,
3 message_index_partial_refunds, 4 drop_unused_columns: PostgreSQL's numbers are unchanged (see
tests/test_postgres.py), and a SQLite file at the old version 2 is renumbered to 3 when opened.
"""

from __future__ import annotations

import importlib.util
import os
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from storage.db import MIGRATIONS, SCHEMA_VERSION, open_database, split_statements, user_version
from storage.interface import Limits, PromptSettings
from storage.schema import DIALECTS, load_migrations, shared_steps
from storage.sqlite import open_store
from storage.store import SqlStore

G, U = 111, 501
T0 = 1_700_000_000.0
OPEN = Limits(images_per_hour=None, images_per_day=None, max_queued=None, cooldown_seconds=0.0)

# Without asyncpg (outside CI) the PostgreSQL upgrade skips; tests.pg_fixtures would skip the whole module.
_PG = importlib.util.find_spec("asyncpg") is not None or os.environ.get("CI", "").lower() == "true"
pytest_plugins = ("tests.pg_fixtures",) if _PG else ()  # the pg_server_url and pg_url fixtures

# The old storage/migrations/0002_batch_key_partial_refunds.sql, as released (the old 0001 is today's
# SQLite step 1, storage/migrations/common/0001_initial.sql in SQLite's spellings, unchanged).
OLD_SQLITE_0002 = """\
-- imagine schema version 2: the job's batch key, finding a job by its result message, partial refunds.

-- Jobs with equal keys may share a batch (the same column as in the PostgreSQL schema).
ALTER TABLE jobs ADD COLUMN batch_key TEXT;

-- Reactions on a result message: which job it carries (Store.job_by_message).
CREATE INDEX jobs_result_message ON jobs (result_message_id) WHERE result_message_id IS NOT NULL;

-- Part of a spend given back (flagged images not posted). The windows count images - refunded_images;
-- `refunded` stays the flag for "all of it given back", so refunded = 1 exactly when
-- refunded_images = images.
ALTER TABLE usage_ledger ADD COLUMN refunded_images INTEGER NOT NULL DEFAULT 0
    CHECK (refunded_images >= 0 AND refunded_images <= images);
UPDATE usage_ledger SET refunded_images = images WHERE refunded = 1;
"""


def columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {str(row[1]) for row in conn.execute(f"PRAGMA table_info({table})")}


def test_every_step_exists_for_both_dialects_with_one_number_and_name() -> None:
    steps = {dialect: [(m.version, m.name) for m in load_migrations(dialect)] for dialect in DIALECTS}
    assert steps["sqlite"] == steps["postgres"]
    versions = [v for v, _ in steps["sqlite"]]
    assert versions == sorted(set(versions)) and versions[-1] == SCHEMA_VERSION
    assert steps["sqlite"][:4] == [
        (1, "initial"),
        (2, "job_queue"),
        (3, "message_index_partial_refunds"),
        (4, "drop_unused_columns"),
    ]
    assert steps["sqlite"][4:7] == [(5, "settings"), (6, "guild_models"), (7, "video_cost")]
    assert (7, "video_cost") in shared_steps()  # one text serves both dialects


def test_every_shared_step_is_some_dialects_and_fully_spelled() -> None:
    own = {dialect: {(m.version, m.name): m.sql for m in load_migrations(dialect)} for dialect in DIALECTS}
    for step in shared_steps():
        assert any(step in own[d] for d in DIALECTS)
    for steps in own.values():
        assert all("${" not in sql for sql in steps.values())  # no placeholder left unspelled


async def test_file_at_the_old_version_2_is_renumbered_and_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "old-v2.db"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        for statement in split_statements(MIGRATIONS[0].sql) + split_statements(OLD_SQLITE_0002):
            conn.execute(statement)
        conn.execute("PRAGMA user_version = 2")
        conn.execute(
            "INSERT INTO jobs (job_id, guild_id, channel_id, owner_id, request_json, images, state, "
            "created_at, result_message_id, result_channel_id, batch_key) "
            "VALUES ('old', ?, 9, ?, '{}', 3, 'done', ?, 777, 9, 'k')",
            (G, U, T0),
        )
        conn.execute(
            "INSERT INTO usage_ledger (guild_id, user_id, job_id, images, at, refunded_images) "
            "VALUES (?, ?, 'old', 3, ?, 1)",
            (G, U, T0),
        )
        conn.execute("COMMIT")
        assert "batch_key" in columns(conn, "jobs") and "refunded_images" in columns(conn, "usage_ledger")
    finally:
        conn.close()
    async with open_store(path, OPEN) as s:
        assert await s._db.run(user_version) == SCHEMA_VERSION >= 4
        assert "batch_key" not in await s._db.run(lambda c: columns(c, "jobs"))
        old = await s.get_job("old")
        assert old is not None and old.result_message_id == 777 and not old.refunded
        assert await s.job_by_message(777) == old  # step 3's index was there already
        assert [(e.job_id, e.refunded, e.refunded_images) for e in await s.ledger(G)] == [("old", False, 1)]
        assert (await s.usage(G, U, (), T0 + 1)).used_last_hour == 2
        assert await s.refund_images("old", 5, T0 + 2) is True
        assert await s.get_job("old") == replace(old, refunded=True)  # the 2 left, clipped


async def test_file_at_the_new_version_2_is_not_renumbered(tmp_path: Path) -> None:
    """A file that stopped after today's step 2 (no partial refunds yet) goes on with step 3."""
    path = tmp_path / "new-v2.db"
    db = await open_database(path, migrations=MIGRATIONS[:2])
    try:
        assert await db.run(user_version) == 2
        assert "refunded_images" not in await db.run(lambda c: columns(c, "usage_ledger"))
    finally:
        await db.close()
    async with open_store(path, OPEN) as s:
        assert await s._db.run(user_version) == SCHEMA_VERSION
        assert "refunded_images" in await s._db.run(lambda c: columns(c, "usage_ledger"))
        assert "batch_key" not in await s._db.run(lambda c: columns(c, "jobs"))


async def test_upgrade_from_version_1_keeps_rows(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    db = await open_database(path, migrations=MIGRATIONS[:1])

    def fill(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN")
        for job_id, at, message in (("old", T0, 777), ("gone", T0 + 10, None), ("new", T0 + 20, None)):
            conn.execute(
                "INSERT INTO jobs (job_id, guild_id, channel_id, owner_id, request_json, images, state, "
                "created_at, result_message_id, result_channel_id) "
                "VALUES (?, ?, 9, ?, '{}', 2, 'done', ?, ?, 9)",
                (job_id, G, U, at, message),
            )
            conn.execute(
                "INSERT INTO usage_ledger (guild_id, user_id, job_id, images, at, refunded) "
                "VALUES (?, ?, ?, 2, ?, ?)",
                (G, U, job_id, at, int(job_id == "gone")),
            )
        conn.execute("COMMIT")

    try:
        assert await db.run(user_version) == 1
        await db.run(fill)
    finally:
        await db.close()
    async with open_store(path, OPEN) as s:
        assert await s._db.run(user_version) == SCHEMA_VERSION >= 2
        old = await s.get_job("old")
        assert old is not None and old.result_message_id == 777
        assert "batch_key" not in await s._db.run(lambda c: columns(c, "jobs"))
        assert await s.job_by_message(777) == old
        gone = await s.get_job("gone")
        assert gone is not None and gone.refunded
        # The refunded row stays wholly refunded; the others count in full.
        assert (await s.usage(G, U, (), T0 + 30)).used_last_hour == 4
        assert [(e.job_id, e.refunded, e.refunded_images) for e in await s.ledger(G)] == [
            ("old", False, 0),
            ("gone", True, 2),
            ("new", False, 0),
        ]
        assert await s.refund_images("new", 1, T0 + 31) is True
        assert (await s.usage(G, U, (), T0 + 31)).used_last_hour == 3


async def _settings_at_version_6(backend: str, target: str) -> None:
    """A database that stopped after step 6 (guild models), with a guild's row and a member's."""
    rows = [(G, 0, 4, "first"), (G, U, 2, None)]
    insert = "INSERT INTO prompt_settings (guild_id, user_id, image_count, offered_models) VALUES "
    if backend == "sqlite":
        db = await open_database(Path(target), migrations=MIGRATIONS[:6])
        try:

            def fill(conn: sqlite3.Connection) -> None:
                assert "video_cost" not in columns(conn, "prompt_settings")
                conn.executemany(insert + "(?, ?, ?, ?)", rows)

            await db.run(fill)
        finally:
            await db.close()
        return
    from tests.pg_fixtures import PG_MIGRATIONS, asyncpg, migrate

    conn = await asyncpg.connect(target)
    try:
        assert await migrate(conn, PG_MIGRATIONS[:6]) == 6
        await conn.executemany(insert + "($1, $2, $3, $4)", rows)
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(backend, target): a SQLite file, or a PostgreSQL URL with a schema of its own."""
    if request.param == "sqlite":
        return "sqlite", str(tmp_path / "v6.db")
    if not _PG:
        pytest.skip('asyncpg is not installed (pip install -e ".[postgres]")')
    return "postgres", str(request.getfixturevalue("pg_url"))


async def test_step_7_adds_an_unset_video_cost_and_keeps_the_settings(database: tuple[str, str]) -> None:
    backend, target = database
    await _settings_at_version_6(backend, target)
    store: SqlStore
    if backend == "sqlite":
        store = await open_store(target, OPEN)
        assert await store._db.run(user_version) == SCHEMA_VERSION >= 7
    else:
        from tests.pg_fixtures import PG_SCHEMA_VERSION, open_pg_store

        store = await open_pg_store(target, OPEN)
        assert PG_SCHEMA_VERSION >= 7
    async with store as s:
        view = await s.prompt_settings(G, U)
        assert view.guild == PromptSettings(count=4, models="first")  # video_cost NULL: the bot's default
        assert view.member == PromptSettings(count=2)
        await s.set_prompt_settings(G, None, {"video_cost": 12})
        assert (await s.prompt_settings(G, U)).guild == PromptSettings(count=4, models="first", video_cost=12)
