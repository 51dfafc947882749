"""The schema steps of both dialects: one numbering, one SQL file per step and dialect.

Step `NNNN_name` is `storage/migrations/sqlite/NNNN_name.sql` and `storage/migrations/postgres/NNNN_name.sql`
(package data): every step exists for both, with the same number and name, even where one dialect has
nothing to change. SQLite records the version in `PRAGMA user_version` (`storage.db`), PostgreSQL in
the `schema_version` table (`storage.postgres`); applying step `n` takes the version from `n - 1` to `n`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

from storage.interface import StorageError

DIALECTS = ("sqlite", "postgres")
_MIGRATION_NAME = re.compile(r"^(\d{4})_([A-Za-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    """One schema step: applying it takes the version from `version - 1` to `version`."""

    version: int
    name: str
    sql: str


def load_migrations(dialect: str) -> tuple[Migration, ...]:
    """The shipped steps of `dialect` ("sqlite" or "postgres"), in order of their versions (1, 2, 3, …)."""
    folder = resources.files("storage").joinpath("migrations", dialect)
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise RuntimeError(f"migration {migration.version:04d}_{migration.name} is out of sequence")
    return tuple(found)


def pending(migrations: Sequence[Migration], version: int, where: str, instead: str) -> list[Migration]:
    """The steps after `version`; `StorageError` if the database (`where`) is newer than all of them
    (the message ends "point {instead}", e.g. "DATABASE_PATH at another file")."""
    latest = migrations[-1].version if migrations else 0
    if version > latest:
        raise StorageError(
            f"{where} has schema version {version}, but this version of imagine only knows up to "
            f"{latest}: upgrade imagine, or point {instead}"
        )
    return [m for m in migrations if m.version > version]
