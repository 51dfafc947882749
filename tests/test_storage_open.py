"""Opening the database: migrations, and clear errors for files that cannot be used."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from storage.db import MIGRATIONS, SCHEMA_VERSION, open_database, split_statements
from storage.interface import Limits, NewJob, Reservation, StorageError
from storage.schema import Migration
from storage.sqlite import open_store

OPEN = Limits(images_per_hour=None, images_per_day=None, max_queued=None, cooldown_seconds=0.0)
TABLES = {"guild_limits", "role_limits", "user_limits", "blocked_words", "jobs", "usage_ledger"}


def schema(path: Path) -> tuple[int, list[tuple[str, str]]]:
    conn = sqlite3.connect(path)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        rows = conn.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()
        return version, rows
    finally:
        conn.close()


def test_shipped_migrations_are_numbered_from_one() -> None:
    versions = [m.version for m in MIGRATIONS]  # ascending; a gap while parallel branches hold numbers
    assert versions[0] == 1 and versions == sorted(set(versions)) and versions[-1] == SCHEMA_VERSION


async def test_empty_file_is_migrated_to_current_and_set_up(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "fresh.db"  # the folder is created too
    path.parent.mkdir()
    path.touch()  # an existing empty file is a new database
    async with open_store(path, OPEN) as store:
        assert isinstance(await store.reserve(NewJob("j", 1, 2, 3, "{}", 1), (), 1.0), Reservation)
    version, rows = schema(path)
    assert version == SCHEMA_VERSION
    assert {name for name, _ in rows} >= TABLES
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


async def test_foreign_keys_are_enforced(tmp_path: Path) -> None:
    db = await open_database(tmp_path / "fk.db")
    try:
        with pytest.raises(StorageError):
            await db.run(
                lambda c: c.execute(
                    "INSERT INTO usage_ledger (guild_id, user_id, job_id, images, at) "
                    "VALUES (1, 2, 'none', 1, 0)"
                )
            )
    finally:
        await db.close()


async def test_opening_a_current_file_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "current.db"
    async with open_store(path, OPEN) as store:
        await store.add_blocked_word(1, "fox")
    before = schema(path)
    async with open_store(path, OPEN) as store:
        assert await store.blocked_words(1) == ["fox"]
    assert schema(path) == before


async def test_a_file_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StorageError, match=r"newer|only knows up to") as info:
        await open_store(path, OPEN)
    assert str(path) in str(info.value) and str(SCHEMA_VERSION + 1) in str(info.value)


async def test_older_file_upgrades_step_by_step_and_a_failed_step_rolls_back(tmp_path: Path) -> None:
    path = tmp_path / "older.db"
    v1 = Migration(1, "one", "CREATE TABLE a (x INTEGER);\nINSERT INTO a VALUES (1);")
    v2 = Migration(
        2, "two", "-- add a column; and a table\nALTER TABLE a ADD COLUMN y TEXT;\nCREATE TABLE b (z);"
    )
    bad = Migration(3, "bad", "CREATE TABLE c (w);\nINSERT INTO nowhere VALUES (1);")
    db = await open_database(path, migrations=[v1])
    await db.close()
    assert schema(path)[0] == 1
    db = await open_database(path, migrations=[v1, v2])
    await db.close()
    version, rows = schema(path)
    assert version == 2 and {"a", "b"} <= {n for n, _ in rows}
    with pytest.raises(StorageError):
        await open_database(path, migrations=[v1, v2, bad])
    version, rows = schema(path)
    assert version == 2 and "c" not in {n for n, _ in rows}  # the failed step left nothing behind


def test_split_statements_respects_comments_and_quotes() -> None:
    sql = "-- a; comment\nCREATE TABLE t (x TEXT DEFAULT ';');\nINSERT INTO t VALUES ('a;b');\n-- trailing\n"
    assert split_statements(sql) == [
        "-- a; comment\nCREATE TABLE t (x TEXT DEFAULT ';');",
        "INSERT INTO t VALUES ('a;b');",
    ]
    with pytest.raises(ValueError):
        split_statements("CREATE TABLE t (x")


async def test_garbage_file_is_a_clear_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not a database, just some text " * 100)
    with pytest.raises(StorageError, match="not a usable SQLite database") as info:
        await open_store(path, OPEN)
    assert str(path) in str(info.value)


async def test_a_folder_is_a_clear_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="is a folder"):
        await open_store(tmp_path, OPEN)


@pytest.mark.parametrize("wal", [True, False], ids=["wal-file", "rollback-journal-file"])
async def test_exclusively_locked_file_is_a_clear_storage_error_at_open(tmp_path: Path, wal: bool) -> None:
    path = tmp_path / "locked.db"
    if wal:
        async with open_store(path, OPEN):
            pass
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("CREATE TABLE IF NOT EXISTS other (x)")
        other.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StorageError, match="locked by another process") as info:
            await open_store(path, OPEN, busy_timeout_s=0.2)
        assert str(path) in str(info.value)
        other.execute("ROLLBACK")
    finally:
        other.close()
    async with open_store(path, OPEN, busy_timeout_s=0.2):  # free again: opens fine
        pass


async def test_lock_held_past_busy_timeout_is_a_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    async with open_store(path, OPEN, busy_timeout_s=0.2) as s:
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(StorageError, match="locked"):
                await s.reserve(NewJob("held", 1, 2, 3, "{}", 1), (), 1.0)
            other.execute("ROLLBACK")
            after = await s.reserve(NewJob("after", 1, 2, 3, "{}", 1), (), 1.0)
            assert isinstance(after, Reservation)  # and the store still works afterwards
        finally:
            other.close()
