"""The shared job queue: many bot processes claiming jobs from one database, fairly and under leases.

Additive to `storage.interface.Store`: a store that can be shared by several processes (PostgreSQL)
also implements `JobQueue`. A dispatcher claims jobs with `claim_next` (they become `running` under a
lease held by its `worker_id`), renews the lease while they run, and finishes them with
`complete_claimed` (or the store's `record_images` / `set_job_state`, which end any lease; a cancel
through `set_job_state` makes the holder's next `renew_lease` leave the job out). Any process calls
`reclaim_expired` now and then: jobs of a dead process go back to the queue, with no second spend.

Fairness is round-robin by owner (a member of a guild, as the in-process queue keys them) across
every process: the owner served least recently (or never) goes first, and within one claim of several
jobs each owner gets one before anyone gets a second.

`QueueSignals` is what the dispatchers of those processes share besides the queue: wake-ups and
per-job delivery locks (`storage.pg_signals.PgSignals` on PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from storage.interface import JobRecord


@runtime_checkable
class JobQueue(Protocol):
    """Claiming queued jobs across processes (see the module docstring)."""

    async def claim_next(self, worker_id: str, now: float, lease_s: float, limit: int = 1) -> list[JobRecord]:
        """Claim up to `limit` queued jobs in fair order: each becomes `running`, leased to `worker_id`
        until `now + lease_s`. Never returns a job that another claimer holds. Empty list if nothing
        is queued."""
        ...

    async def renew_lease(
        self, job_ids: Sequence[str], worker_id: str, now: float, lease_s: float
    ) -> list[str]:
        """Extend the leases `worker_id` still holds on `job_ids` to `now + lease_s`; returns those
        ids (a job missing from it was reclaimed, cancelled or finished: stop working on it)."""
        ...

    async def complete_claimed(
        self, job_id: str, worker_id: str, seeds: tuple[int, ...], image_paths: tuple[str, ...]
    ) -> bool:
        """Like `Store.record_images`, but only while `worker_id` still holds the job's lease: False
        (and nothing written) if the lease was lost, so a slow worker whose job went to another never
        delivers it a second time."""
        ...

    async def release(self, job_ids: Sequence[str], worker_id: str) -> list[str]:
        """Put jobs `worker_id` holds back in the queue at once (a clean shutdown, or no room after
        all); returns the ids released."""
        ...

    async def reclaim_expired(self, now: float) -> int:
        """Put running jobs whose lease ended at or before `now` back in the queue; how many."""
        ...


class QueueSignals(Protocol):
    """Wake-ups between processes and per-job delivery locks that end with the process."""

    async def open(self, on_wake: Callable[[], None]) -> None:
        """Start listening: `on_wake()` runs whenever any process calls `notify`."""
        ...

    async def notify(self) -> None:
        """Wake every listening dispatcher (this one too)."""
        ...

    async def lock_delivery(self, job_id: str, *, wait: bool) -> bool:
        """Take the job's delivery lock (waiting for it if `wait`); False if another holds it."""
        ...

    async def unlock_delivery(self, job_id: str) -> None:
        """Give the job's delivery lock back."""
        ...

    async def close(self) -> None:
        """Stop listening and give back every lock."""
        ...
