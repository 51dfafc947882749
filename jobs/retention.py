"""RETENTION_DAYS: a periodic task that deletes finished jobs older than that, with their saved
images, and drops expired interaction tokens (on either store: the SQL is `storage.ops`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from storage.interface import Store

log = logging.getLogger(__name__)

DAY_S = 86_400.0
EVERY_S = 3_600.0


@dataclass(frozen=True)
class Purged:
    """What one pass removed."""

    files: int  # image files deleted
    paths: int  # image paths the deleted jobs held
    tokens: int  # expired interaction tokens dropped


def _delete(paths: list[str]) -> int:
    deleted = 0
    for path in paths:
        try:
            Path(path).unlink()
            deleted += 1
        except FileNotFoundError:
            pass
        except OSError as exc:  # one unremovable file must not stop the pass
            log.warning("retention: could not delete %s: %s", path, exc)
    return deleted


async def purge_once(store: Store, days: float, now: float) -> Purged:
    """One pass: finished jobs created more than `days` ago and their images; expired tokens."""
    paths = await store.purge_finished(now - days * DAY_S)
    files = await asyncio.to_thread(_delete, paths)
    tokens = await store.drop_expired_tokens(now)
    if paths or tokens:
        log.info(
            "retention: deleted %d image file(s) of old jobs, dropped %d expired token(s)", files, tokens
        )
    return Purged(files, len(paths), tokens)


@contextlib.asynccontextmanager
async def running_retention(
    store: Store, days: float, clock: Callable[[], float], every_s: float = EVERY_S
) -> AsyncIterator[asyncio.Task[None]]:
    """Run `purge_once` at once and then every `every_s` seconds, for the block."""

    async def loop() -> None:
        while True:
            try:
                await purge_once(store, days, clock())
            except Exception:  # a failed pass is retried at the next one; the bot goes on
                log.exception("retention pass failed")
            await asyncio.sleep(every_s)

    task = asyncio.get_running_loop().create_task(loop(), name="retention")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
