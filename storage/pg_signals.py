"""`PgSignals`: the `storage.queue.QueueSignals` of PostgreSQL, LISTEN/NOTIFY and advisory locks.

One connection, taken from the store's asyncpg pool for the claim source's lifetime, listens on `CHANNEL`
and holds the session advisory locks that guard delivering a job; they end when it does (or with the
process).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from storage.interface import StorageError

log = logging.getLogger(__name__)

CHANNEL = "imagine_jobs"
_LOCK_KEY = "hashtextextended('imagine-deliver:' || current_schema() || ':' || $1, 0)"


class PgSignals:
    """`QueueSignals` on PostgreSQL: LISTEN/NOTIFY and session advisory locks on one connection taken
    from the store's asyncpg pool for the claim source's lifetime (its locks end when it does)."""

    def __init__(self, pool: Any, channel: str = CHANNEL) -> None:
        self._pool = pool
        self._channel = channel
        self._conn: Any = None
        self._use = asyncio.Lock()  # one operation at a time on the connection
        self._on_wake: Callable[[], None] | None = None

    async def open(self, on_wake: Callable[[], None]) -> None:
        self._on_wake = on_wake
        try:
            self._conn = await self._pool.acquire()
            await self._conn.add_listener(self._channel, self._notified)
        except Exception as exc:
            raise StorageError(f"cannot listen for queued jobs: {type(exc).__name__}: {exc}") from exc

    def _notified(self, *_: object) -> None:
        if self._on_wake is not None:
            self._on_wake()

    async def notify(self) -> None:
        try:
            await self._pool.execute("SELECT pg_notify($1, '')", self._channel)
        except Exception as exc:  # a missed wake-up costs one poll interval, no more
            log.warning("could not notify the other processes: %r", exc)

    async def lock_delivery(self, job_id: str, *, wait: bool) -> bool:
        if self._conn is None:
            raise StorageError("the claim source's connection is not open")
        async with self._use:
            if wait:
                await self._conn.execute(f"SELECT pg_advisory_lock({_LOCK_KEY})", job_id)
                return True
            return bool(await self._conn.fetchval(f"SELECT pg_try_advisory_lock({_LOCK_KEY})", job_id))

    async def unlock_delivery(self, job_id: str) -> None:
        if self._conn is None:
            return
        async with self._use:
            await self._conn.execute(f"SELECT pg_advisory_unlock({_LOCK_KEY})", job_id)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(Exception):
            await conn.remove_listener(self._channel, self._notified)
            await conn.execute("SELECT pg_advisory_unlock_all()")
        with contextlib.suppress(Exception):
            await self._pool.release(conn)


def pg_signals_for(store: object) -> PgSignals | None:
    """`PgSignals` on the store's pool, if it has one (`storage.postgres.PostgresStore`)."""
    pool = getattr(store, "pool", None)
    return PgSignals(pool) if pool is not None else None


__all__ = ["CHANNEL", "PgSignals", "pg_signals_for"]
