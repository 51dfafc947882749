"""The schema steps of both dialects: one numbering, one SQL text per step and dialect.

Step `NNNN_name` of a dialect is its own `storage/migrations/{sqlite,postgres}/NNNN_name.sql` when
there is one, else the shared `storage/migrations/common/NNNN_name.sql` (package data), in which each
placeholder `${word}` is written as the dialect spells it (`SPELLINGS`; `$$` is a lone `$`). Every
step exists for both, with the same number and name, even where one dialect has nothing to change.
SQLite records the version in `PRAGMA user_version` (`storage.db`), PostgreSQL in the
`schema_version` table (`storage.postgres`); applying step `n` takes the version from `n - 1` to `n`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from string import Template

from storage.interface import StorageError

DIALECTS = ("sqlite", "postgres")
COMMON = "common"
# What a shared step writes as a placeholder, in each dialect (storage/migrations/common/0001_initial.sql says
# what each one is for).
SPELLINGS: dict[str, dict[str, str]] = {
    "sqlite": {
        "snowflake": "INTEGER",
        "seconds": "REAL",
        "without_rowid": " WITHOUT ROWID",
        "row_id": "INTEGER PRIMARY KEY",
        "refunded_flag": "INTEGER NOT NULL DEFAULT 0 CHECK (refunded IN (0, 1))",
        "seed_list": "seeds_json        TEXT    NOT NULL DEFAULT '[]'",
        "path_list": "image_paths_json  TEXT    NOT NULL DEFAULT '[]'",
    },
    "postgres": {
        "snowflake": "BIGINT",
        "seconds": "DOUBLE PRECISION",
        "without_rowid": "",
        "row_id": "BIGSERIAL PRIMARY KEY",
        "refunded_flag": "BOOLEAN NOT NULL DEFAULT FALSE",
        "seed_list": "seeds             BIGINT[] NOT NULL DEFAULT '{}'",
        "path_list": "image_paths       TEXT[]   NOT NULL DEFAULT '{}'",
    },
}
_MIGRATION_NAME = re.compile(r"^(\d{4})_([A-Za-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    """One schema step: applying it takes the version from `version - 1` to `version`."""

    version: int
    name: str
    sql: str


def load_migrations(dialect: str) -> tuple[Migration, ...]:
    """The shipped steps of `dialect` ("sqlite" or "postgres"), in order of their versions (1, 2, 3, …):
    its own file of each step, else the shared one with the dialect's spellings."""
    steps = {(m.version, m.name): m for m in _read_folder(COMMON, SPELLINGS[dialect])}
    steps.update({(m.version, m.name): m for m in _read_folder(dialect, None)})
    found = sorted(steps.values(), key=lambda m: m.version)
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise RuntimeError(f"migration {migration.version:04d}_{migration.name} is out of sequence")
    return tuple(found)


def shared_steps() -> tuple[tuple[int, str], ...]:
    """The (version, name) of each step in the shared folder."""
    return tuple((m.version, m.name) for m in _read_folder(COMMON, SPELLINGS[DIALECTS[0]]))


def _read_folder(folder: str, spellings: dict[str, str] | None) -> list[Migration]:
    found: list[Migration] = []
    for entry in resources.files("storage").joinpath("migrations", folder).iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            sql = entry.read_text(encoding="utf-8")
            if spellings is not None:
                sql = Template(sql).substitute(spellings)  # KeyError: a ${word} no dialect spells
            found.append(Migration(int(match.group(1)), match.group(2), sql))
    return found


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
