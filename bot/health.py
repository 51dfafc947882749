"""`HEALTH_PORT`: `/healthz` (the process and its event loop answer), `/readyz` (model loaded, gateway
connected, store reachable; 503 naming what is not) and `/metrics` (Prometheus' text format), on
aiohttp (discord.py's own HTTP library), in the bot's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from bot.metrics import BotMetrics
from bot.startup_base import StartupError
from generation.backends.protocol import GenerationBackend
from storage.interface import Store

log = logging.getLogger(__name__)

STORE_TIMEOUT_S = 2.0
GatewayUp = Callable[[], bool]


async def not_ready_reasons(backend: GenerationBackend, gateway_up: GatewayUp, store: Store) -> list[str]:
    """What keeps the bot from serving, empty when ready."""
    reasons: list[str] = []
    try:
        backend.profile  # noqa: B018  # raises until the model is loaded
    except RuntimeError:
        reasons.append("model not loaded")
    if not gateway_up():
        reasons.append("gateway not connected")
    try:
        await asyncio.wait_for(store.get_job("readyz-probe"), STORE_TIMEOUT_S)
    except Exception as exc:  # any failure to answer is "unreachable"
        reasons.append(f"store unreachable ({type(exc).__name__})")
    return reasons


def health_app(
    backend: GenerationBackend, gateway_up: GatewayUp, store: Store, metrics: BotMetrics
) -> web.Application:
    """The three routes."""

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        reasons = await not_ready_reasons(backend, gateway_up, store)
        if reasons:
            return web.Response(status=503, text="not ready: " + "; ".join(reasons) + "\n")
        return web.Response(text="ready\n")

    async def metrics_route(_: web.Request) -> web.Response:
        metrics.refresh(backend)
        body = metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_route)
    return app


@contextlib.asynccontextmanager
async def serving(app: web.Application, host: str, port: int) -> AsyncIterator[int]:
    """Serve `app` on host:port (0: any free port) for the block; yields the bound port."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            raise StartupError(
                f"HEALTH_PORT {port} on {host} cannot be used: {exc.strerror or exc}"
            ) from None
        bound = int(runner.addresses[0][1])
        log.info("health endpoints on http://%s:%d/healthz, /readyz and /metrics", host, bound)
        yield bound
    finally:
        await runner.cleanup()
