"""Start-up in the cheap-first order: settings (done by the caller), the Discord login (REST only),
the output folder and storage, the device and the model, then the gateway. The first failure ends
with one `cannot start: …` line (raised as `StartupError`, printed by `bot.cli`); nothing expensive
runs before the cheap checks passed, so a wrong token is found in a second, not after the model load.

SIGTERM and SIGINT stop the bot gracefully (`ImagineBot.shut_down`): no new jobs, the running batch
finishes within SHUTDOWN_GRACE_SECONDS, the rest stays queued for the next start, the gateway closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import signal
from collections.abc import AsyncIterator

import discord
import discord.gateway
import discord.http
import yarl

from bot.health import health_app, serving
from bot.logging_setup import quiet_ml_libraries
from bot.metrics import BotMetrics
from bot.preflight import check_device, check_model, check_output, discord_login
from bot.settings import Settings
from bot.startup_base import StartupError, open_storage
from generation.backends.protocol import GenerationBackend
from generation.media.image_store import ImageStore
from generation.pipelines.contract import Engine
from jobs.retention import running_retention
from storage.interface import StorageError

log = logging.getLogger("bot")


def apply_endpoints(settings: Settings) -> None:
    """Point discord.py's REST root and gateway at the configured servers (tests: a loopback one).
    `_set_api_version` must not be called after this: it resets `Route.BASE`."""
    if settings.discord_api_base:
        discord.http.Route.BASE = settings.discord_api_base
    if settings.discord_gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord_gateway_url)


def load_engine(settings: Settings) -> Engine:
    """The engine for MODEL_ID (or the models of MODELS) on DEVICE (runs on the worker thread)."""
    from generation.pipelines.engine_pool import load_engines
    from generation.pipelines.loading import resolve_device
    from generation.pipelines.safety_options import SafetyOptions

    return load_engines(
        settings.model_set,
        resolve_device(settings.device),
        cache_dir=settings.model_cache_dir,
        options=settings.optimise,
        safety=SafetyOptions(settings.safety, settings.safety_checker_id),
        memory_budget_gb=settings.model_memory_gb,
        lora_dir=settings.lora_dir,
        video_model=settings.video_model,
        edit_model=settings.edit_model,
    )


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

    return GenerationService(lambda: load_engine(settings), images, job_timeout_s=settings.job_timeout_s)


def describe_load_error(settings: Settings, exc: BaseException) -> str:
    """One line for a model that would not load."""
    name = type(exc).__name__
    if name in ("RepositoryNotFoundError", "GatedRepoError"):
        return (
            f"MODEL_ID {settings.model_id} is not a model on Hugging Face that this machine may download "
            "(check the spelling, or log in with `hf auth login` for a gated one)"
        )
    if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        return f"the model {settings.model_id} does not fit in memory on {settings.device}"
    first_line = (str(exc).strip().splitlines() or [name])[0][:300]
    return f"the model {settings.model_id} could not be loaded ({name}: {first_line})"


@contextlib.asynccontextmanager
async def started(settings: Settings, backend: GenerationBackend) -> AsyncIterator[GenerationBackend]:
    """Start the backend (loads the model), close it on the way out."""
    try:
        await backend.start()
    except StartupError:
        raise
    except Exception as exc:
        log.debug("model load failed", exc_info=True)
        raise StartupError(describe_load_error(settings, exc)) from exc
    try:
        yield backend
    finally:
        await backend.close()


def _install_signals(bot: object, settings: Settings) -> None:
    """SIGTERM and SIGINT: a graceful shut-down (once; a second signal does not cut it short)."""
    from bot.client import ImagineBot

    assert isinstance(bot, ImagineBot)
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []

    def stop(name: str) -> None:
        if not stopping:
            log.info("%s: stopping (running batch has %.0f s to finish)", name, settings.shutdown_grace_s)
            stopping.append(loop.create_task(bot.shut_down(settings.shutdown_grace_s)))

    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop, sig.name)


async def run(settings: Settings) -> None:
    """Check cheap things first, then open the dependencies, run the bot until it closes, and close
    them in reverse order."""
    apply_endpoints(settings)
    identity = await discord_login(settings)
    log.info("logged in to Discord as %s (application %d)", identity.name, identity.application_id)
    log.info("invite the bot to a server with: %s", identity.invite_url)
    log.info("output folder: %s", check_output(settings))
    images = ImageStore(settings.output_dir)
    async with open_storage(settings) as store:
        log.info("database ready")
        from bot.client import bot_class  # discord.py's bot and the commands: after the cheap checks

        log.info("model %s", check_model(settings))
        quiet_ml_libraries()
        if settings.generation_backend == "local":
            log.info("device %s", check_device(settings))
        async with started(settings, make_backend(settings, images)) as backend:
            log.info("model %s ready; connecting to the Discord gateway", backend.profile.name)
            metrics = BotMetrics()
            metrics.count_rate_limits()
            async with bot_class(settings)(settings, store, backend, images, metrics=metrics) as bot:
                _install_signals(bot, settings)
                async with contextlib.AsyncExitStack() as stack:
                    if settings.health_port is not None:
                        app = health_app(backend, bot.gateway_up, store, metrics)
                        await stack.enter_async_context(
                            serving(app, settings.health_host, settings.health_port)
                        )
                    if settings.retention_days is not None:
                        days = settings.retention_days
                        await stack.enter_async_context(running_retention(store, days, bot.clock))
                    await bot.start(settings.discord_token)
    log.info("stopped")


def start(settings: Settings) -> int:
    """Run the bot; 0 after a clean stop, 1 (with one `cannot start:` line logged) when it cannot."""
    try:
        asyncio.run(run(settings))
    except KeyboardInterrupt:
        log.info("stopped")
    except (StartupError, StorageError) as exc:
        log.debug("start-up failed", exc_info=True)
        log.error("cannot start: %s", exc)
        return 1
    except discord.LoginFailure:
        log.error("cannot start: Discord refused the token (check DISCORD_TOKEN)")
        return 1
    except Exception as exc:  # anything else: still one line, the trace only at DEBUG
        log.debug("start-up failed", exc_info=True)
        first_line = (str(exc).strip().splitlines() or [""])[0][:300]
        log.error("cannot start: %s: %s (LOG_LEVEL=DEBUG shows the trace)", type(exc).__name__, first_line)
        return 1
    return 0
