"""`PgJobQueue`: the `storage.queue.JobQueue` half of `storage.postgres.PostgresStore`.

The jobs table is the queue: a claim marks jobs `running` under a lease (`lease_owner`,
`lease_expires_at`), round-robin by owner through `queue_owners` (see `storage.queue`).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager

import asyncpg

from storage.interface import JobRecord
from storage.sql import POSTGRES

_CLAIM_SLACK = 32  # candidates beyond `limit` that claim_next considers, for claimers racing it


def status_count(status: str) -> int:
    """The row count of a command status such as `UPDATE 3`."""
    return int(status.rsplit(" ", 1)[-1])


class PgJobQueue:
    """Claims, leases and reclaims on the jobs table, for a class that provides `_conn`."""

    def _conn(self, *, transaction: bool = False) -> AbstractAsyncContextManager[asyncpg.Connection]:
        """A pooled connection (in a transaction if asked); errors become `StorageError`."""
        raise NotImplementedError

    async def claim_next(
        self,
        worker_id: str,
        now: float,
        lease_s: float,
        limit: int = 1,
    ) -> list[JobRecord]:
        """Claim up to `limit` queued jobs in round-robin order by owner (see `storage.queue`)."""
        if limit < 1:
            raise ValueError("limit must be >= 1")
        if lease_s <= 0:
            raise ValueError("lease_s must be > 0")
        async with self._conn(transaction=True) as conn:
            # Each owner's k-th queued job comes in round k; within a round, the owner served least
            # recently (never: first) leads. The fair order is computed once, unlocked, for a few more
            # candidates than asked; then they are locked in that order, and SKIP LOCKED passes over
            # those another claimer is taking. (A join of the ranking to `jobs` instead can plan
            # badly, quadratic, on a table without statistics yet.)
            ids = await conn.fetch(
                """
                WITH c AS (
                    SELECT ARRAY(
                        SELECT r.job_id FROM (
                            SELECT q.job_id, q.created_at, o.last_served,
                                row_number() OVER (
                                    PARTITION BY q.guild_id, q.owner_id ORDER BY q.created_at, q.job_id
                                ) AS turn
                            FROM jobs q LEFT JOIN queue_owners o
                                ON o.guild_id = q.guild_id AND o.owner_id = q.owner_id
                            WHERE q.state = 'queued'
                        ) r
                        ORDER BY r.turn, r.last_served NULLS FIRST, r.created_at, r.job_id
                        LIMIT $2
                    ) AS ids
                )
                SELECT j.job_id FROM jobs j, c
                WHERE j.job_id = ANY(c.ids) AND j.state = 'queued'
                ORDER BY array_position(c.ids, j.job_id)
                LIMIT $1
                FOR UPDATE OF j SKIP LOCKED
                """,
                limit,
                limit + _CLAIM_SLACK,
            )
            if not ids:
                return []
            order = [r["job_id"] for r in ids]
            rows = await conn.fetch(
                f"""
                WITH j AS (
                    UPDATE jobs SET state = 'running', lease_owner = $2, lease_expires_at = $3
                    WHERE job_id = ANY($1::text[])
                    RETURNING *
                )
                SELECT {POSTGRES.job_columns} FROM j LEFT JOIN usage_ledger l ON l.job_id = j.job_id
                """,
                order,
                worker_id,
                now + lease_s,
            )
            by_id = {r["job_id"]: POSTGRES.job(r) for r in rows}
            claimed = [by_id[i] for i in order]
            # The owners move to the back of the rotation in the order they were served. Their rows
            # are written in one fixed order (by key), whatever the serving order: two claimers
            # upserting the same owners in different orders would deadlock.
            served: dict[tuple[int, int], None] = {}
            for job in claimed:
                served.pop((job.guild_id, job.owner_id), None)
                served[(job.guild_id, job.owner_id)] = None
            numbers = sorted(
                r[0]
                for r in await conn.fetch(
                    "SELECT nextval('queue_serve_seq') FROM generate_series(1, $1::int)", len(served)
                )
            )
            ranked = sorted(zip(served, numbers, strict=True))
            await conn.execute(
                """
                INSERT INTO queue_owners (guild_id, owner_id, last_served)
                SELECT s.guild_id, s.owner_id, s.last_served
                FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS s(guild_id, owner_id, last_served)
                ORDER BY s.guild_id, s.owner_id
                ON CONFLICT (guild_id, owner_id) DO UPDATE SET last_served = EXCLUDED.last_served
                """,
                [g for (g, _), _ in ranked],
                [o for (_, o), _ in ranked],
                [n for _, n in ranked],
            )
        return claimed

    async def renew_lease(
        self, job_ids: Sequence[str], worker_id: str, now: float, lease_s: float
    ) -> list[str]:
        """Extend the leases `worker_id` still holds; returns the ids renewed."""
        async with self._conn() as conn:
            rows = await conn.fetch(
                """
                UPDATE jobs SET lease_expires_at = $3
                WHERE job_id = ANY($1::text[]) AND state = 'running' AND lease_owner = $2
                RETURNING job_id
                """,
                list(job_ids),
                worker_id,
                now + lease_s,
            )
        renewed = {r["job_id"] for r in rows}
        return [i for i in job_ids if i in renewed]

    async def complete_claimed(
        self, job_id: str, worker_id: str, seeds: tuple[int, ...], image_paths: tuple[str, ...]
    ) -> bool:
        """Mark the job done with its images only if `worker_id` still holds its lease."""
        async with self._conn() as conn:
            status = await conn.execute(
                """
                UPDATE jobs SET state = 'done', seeds = $3, image_paths = $4, error = NULL,
                    lease_owner = NULL, lease_expires_at = NULL
                WHERE job_id = $1 AND state = 'running' AND lease_owner = $2
                """,
                job_id,
                worker_id,
                [int(x) for x in seeds],
                [str(x) for x in image_paths],
            )
        return status_count(status) == 1

    async def release(self, job_ids: Sequence[str], worker_id: str) -> list[str]:
        """Put the jobs `worker_id` holds back in the queue; returns the ids released."""
        async with self._conn() as conn:
            rows = await conn.fetch(
                """
                UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_expires_at = NULL
                WHERE job_id = ANY($1::text[]) AND state = 'running' AND lease_owner = $2
                RETURNING job_id
                """,
                list(job_ids),
                worker_id,
            )
        released = {r["job_id"] for r in rows}
        return [i for i in job_ids if i in released]

    async def reclaim_expired(self, now: float) -> int:
        """Running jobs whose lease ended at or before `now` go back to the queue (no new spend)."""
        async with self._conn() as conn:
            status = await conn.execute(
                """
                UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_expires_at = NULL
                WHERE state = 'running' AND lease_expires_at <= $1
                """,
                now,
            )
        return status_count(status)
