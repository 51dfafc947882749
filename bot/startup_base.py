"""What start-up (`bot.startup`), its checks (`bot.preflight`) and the health server (`bot.health`)
share: `StartupError`, the one-line reason a process cannot start, and `open_storage`, the
configured store."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from bot.settings import Settings
from storage.interface import Store


class StartupError(Exception):
    """The process cannot start; `str()` is one line saying why and what to fix."""


@contextlib.asynccontextmanager
async def open_storage(settings: Settings) -> AsyncIterator[Store]:
    """The configured store: PostgreSQL at DATABASE_URL, else SQLite at DATABASE_PATH."""
    if settings.database_url:
        try:
            from storage.postgres import open_pg_store
        except ImportError as exc:
            raise StartupError(f"DATABASE_URL needs PostgreSQL support: {exc}") from None
        store: Store = await open_pg_store(settings.database_url, settings.default_limits)
    else:
        from storage.sqlite import open_store

        store = await open_store(settings.database_path, settings.default_limits)
    try:
        yield store
    finally:
        await store.close()
