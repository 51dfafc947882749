"""What both stores share below the `Store` calls: dialects, query steps, rows → records.

Query text is written once, in SQL that SQLite and PostgreSQL both accept, with PostgreSQL's numbered
placeholders (`$1`); `Dialect.sql` turns them into SQLite's `?1`. The few places where the two schemas
differ are fields of `Dialect`: how a job's seeds and image paths are stored, what orders jobs created
at the same instant, and the lease columns that only PostgreSQL has.

A store operation is a *program* (`storage.ops`): a generator that yields `Fetch` and `Execute` steps
and is sent back their rows or affected-row counts, so the same logic runs inside SQLite's synchronous
transactions (`run_sync`) and on asyncpg connections (`run_async`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any, TypeVar

from storage.interface import JobRecord, JobState, LedgerEntry, LimitsPatch, NewJob

T = TypeVar("T")
Row = Sequence[Any]

LIMIT_COLUMNS = "images_per_hour, images_per_day, max_queued, cooldown_seconds"
_NUMBERED = re.compile(r"\$(\d+)")


@dataclass(frozen=True)
class Fetch:
    """A query; the program is sent its rows (a list of sequences)."""

    sql: str
    args: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Execute:
    """A statement; the program is sent how many rows it changed."""

    sql: str
    args: tuple[Any, ...] = ()


Step = Fetch | Execute
Program = Generator[Step, Any, T]


class Dialect:
    """How one database spells what the shared query text leaves open."""

    def __init__(
        self,
        name: str,
        *,
        list_columns: tuple[str, str],
        encode_list: Callable[[list[Any]], Any],
        decode_list: Callable[[Any], Sequence[Any]],
        same_instant_order: str,
        lease_columns: tuple[str, ...] = (),
        data_modifying_cte: bool = False,
    ) -> None:
        self.name = name
        self.data_modifying_cte = data_modifying_cte  # INSERT … RETURNING inside WITH (PostgreSQL)
        self.encode_list = encode_list
        self.decode_list = decode_list
        self.same_instant_order = same_instant_order  # breaks ties of j.created_at: insertion order
        seeds, paths = list_columns
        self.seeds_column, self.paths_column = seeds, paths
        self.job_columns = (
            "j.job_id, j.guild_id, j.channel_id, j.owner_id, j.request_json, j.images, j.state, "
            "j.created_at, j.interaction_id, j.interaction_token, j.token_expires_at, j.parent_job_id, "
            f"j.parent_index, j.error, j.{seeds}, j.{paths}, j.result_message_id, j.result_channel_id, "
            "COALESCE(l.refunded, FALSE)"
        )
        self.job_select = (
            f"SELECT {self.job_columns} FROM jobs AS j LEFT JOIN usage_ledger AS l ON l.job_id = j.job_id"
        )
        # SET clauses that end a job's lease (none without lease columns); the first keeps it while the
        # new state (parameter $2) is 'running'.
        self.lease_kept_if_running = "".join(
            f", {c} = CASE WHEN $2 = 'running' THEN {c} END" for c in lease_columns
        )
        self.lease_ended = "".join(f", {c} = NULL" for c in lease_columns)

    def sql(self, text: str) -> str:
        """`text` with this dialect's placeholders."""
        return text if self.name == "postgres" else _question_marks(text)

    def job(self, row: Row) -> JobRecord:
        """A row of `job_columns` (`JobRecord`'s fields, in their order) as a record."""
        seeds = tuple(int(s) for s in self.decode_list(row[14]))
        paths = tuple(str(p) for p in self.decode_list(row[15]))
        fields = (*row[:6], JobState(row[6]), *row[7:14], seeds, paths, *row[16:18], bool(row[18]))
        return JobRecord(*fields)


@lru_cache(maxsize=512)
def _question_marks(text: str) -> str:
    return _NUMBERED.sub(r"?\1", text)


SQLITE = Dialect(
    "sqlite",
    list_columns=("seeds_json", "image_paths_json"),
    encode_list=json.dumps,
    decode_list=json.loads,
    same_instant_order="j.rowid",
)
POSTGRES = Dialect(
    "postgres",
    list_columns=("seeds", "image_paths"),
    encode_list=list,
    decode_list=tuple,
    same_instant_order="j.job_id",
    lease_columns=("lease_owner", "lease_expires_at"),
    data_modifying_cte=True,
)


def patch(row: Row, start: int = 0) -> LimitsPatch:
    """The four limit columns (`LIMIT_COLUMNS`) of `row` from `start` on."""
    return LimitsPatch(
        images_per_hour=row[start],
        images_per_day=row[start + 1],
        max_queued=row[start + 2],
        cooldown_seconds=row[start + 3],
    )


def ledger_entry(row: Row) -> LedgerEntry:
    """A row of (user_id, job_id, images, at, refunded, refunded_images)."""
    return LedgerEntry(int(row[0]), str(row[1]), int(row[2]), float(row[3]), bool(row[4]), int(row[5]))


def new_record(job: NewJob, now: float) -> JobRecord:
    """The record of a job just reserved (queued, nothing refunded): every field of `job`, and these."""
    given = {f.name: getattr(job, f.name) for f in fields(job)}
    return JobRecord(**given, state=JobState.QUEUED, created_at=now, error=None)


def run_sync(program: Program[T], do: Callable[[Step], Any]) -> T:
    """Run `program`, answering each step with `do(step)` (rows or a count)."""
    try:
        step = next(program)
        while True:
            step = program.send(do(step))
    except StopIteration as finished:
        return finished.value  # type: ignore[no-any-return]
    finally:
        program.close()  # a step that failed leaves it suspended: end it here, not in the GC


async def run_async(program: Program[T], do: Callable[[Step], Awaitable[Any]]) -> T:
    """`run_sync` with an awaitable `do`."""
    try:
        step = next(program)
        while True:
            step = program.send(await do(step))
    except StopIteration as finished:
        return finished.value  # type: ignore[no-any-return]
    finally:
        program.close()
