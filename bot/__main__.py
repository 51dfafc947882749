"""Process set-up: `python -m bot` / `imagine-bot`. Reads settings, sets up logging (token redacted),
points discord.py at the configured endpoints, opens the store, the image store and the generation
backend, and runs `ImagineBot` with them, closing everything in reverse order."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import signal
import sys
from collections.abc import AsyncIterator

import discord
import discord.gateway
import discord.http
import yarl

from bot.settings import Settings, SettingsError, install_redaction, load_settings
from generation.backends.protocol import GenerationBackend
from generation.media.image_store import ImageStore
from storage.interface import StorageError, Store

log = logging.getLogger("bot")


class StartupError(Exception):
    """The process cannot start; `str()` is one line saying why."""


def configure_logging(settings: Settings) -> None:
    """Log to stderr at LOG_LEVEL, every handler filtering out the token."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(settings.log_level)
    logging.getLogger("discord").setLevel(max(logging.INFO, logging.getLevelName(settings.log_level)))
    install_redaction(settings.secrets, root)


def apply_endpoints(settings: Settings) -> None:
    """Point discord.py's REST root and gateway at the configured servers (tests: a loopback one).
    `_set_api_version` must not be called after this: it resets `Route.BASE`."""
    if settings.discord_api_base:
        discord.http.Route.BASE = settings.discord_api_base
    if settings.discord_gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord_gateway_url)


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

        settings.database_path.parent.mkdir(parents=True, exist_ok=True)
        store = await open_store(settings.database_path, settings.default_limits)
    try:
        yield store
    finally:
        await store.close()


def make_backend(settings: Settings, images: ImageStore) -> GenerationBackend:
    """The configured generation backend (not started)."""
    if settings.generation_backend == "ray":
        try:
            ray_backend = importlib.import_module("generation.backends.ray_driver")
        except ImportError as exc:
            raise StartupError(f"GENERATION_BACKEND=ray is not available here: {exc}") from None
        backend: GenerationBackend = ray_backend.RayBackend.from_settings(settings, images)
        return backend
    from generation.backends.local import GenerationService

    def engine_factory():  # type: ignore[no-untyped-def]  # runs on the worker thread
        from generation.pipelines.engine_pool import load_engines
        from generation.pipelines.loading import resolve_device

        return load_engines(
            settings.model_set,
            resolve_device(settings.device),
            cache_dir=settings.model_cache_dir,
            options=settings.optimise,
            memory_budget_gb=settings.model_memory_gb,
        )

    return GenerationService(engine_factory, images, job_timeout_s=settings.job_timeout_s)


@contextlib.asynccontextmanager
async def started(backend: GenerationBackend) -> AsyncIterator[GenerationBackend]:
    """Start the backend (loads the model), close it on the way out."""
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()


async def run(settings: Settings) -> None:
    """Open the dependencies, run the bot until it closes, close them in reverse order."""
    from bot.client import bot_class

    images = ImageStore(settings.output_dir)
    async with open_storage(settings) as store, started(make_backend(settings, images)) as backend:
        log.info("model %s ready; connecting to Discord", backend.profile.name)
        async with bot_class(settings)(settings, store, backend, images) as bot:
            loop = asyncio.get_running_loop()
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(signal.SIGTERM, lambda: loop.create_task(bot.close()))
            await bot.start(settings.discord_token)


def main() -> int:
    """Entry point; returns the exit code (2: bad settings, 1: could not start)."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"imagine-bot: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
    apply_endpoints(settings)
    try:
        asyncio.run(run(settings))
    except KeyboardInterrupt:
        log.info("stopped")
    except (StartupError, StorageError) as exc:
        log.error("cannot start: %s", exc)
        return 1
    except discord.LoginFailure:
        log.error("cannot start: Discord refused the token (check DISCORD_TOKEN)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
