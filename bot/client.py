"""`ImagineBot`: the discord.py `Bot` subclass. It holds its dependencies (settings, store, backend,
image store, clock, job runner) as `Services`, adds every command (`bot.commands.all_commands`),
registers the persistent buttons, forwards clicks and reactions on results to `ResultActions`, syncs
commands when they changed (`bot.command_sync`), and resumes unfinished work once connected. Process
set-up lives in `bot.startup`."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import discord
from discord.ext import commands

from bot.command_sync import sync_if_changed
from bot.commands import all_commands
from bot.commands.errors import ImagineTree
from bot.commands.result_actions import ResultActions
from bot.commands.settings import SettingsControl
from bot.delivery.discord_outbox import DiscordOutbox
from bot.services import Services, lora_catalog
from bot.settings import Settings
from bot.views.edit_buttons import EditItem
from bot.views.pager import PageButton
from bot.views.result_buttons import ImageButton, JobButton, PromptButton
from generation.backends.protocol import GenerationBackend
from generation.media.image_store import ImageStore
from jobs.claims import ClaimSource
from jobs.delivery import Outbox
from jobs.metrics import JobMetrics
from jobs.runner import JobRunner
from jobs.sources import InProcessSource, JobSource
from storage.interface import Store
from storage.pg_signals import pg_signals_for
from storage.queue import JobQueue

log = logging.getLogger(__name__)

MAX_RATELIMIT_WAIT_S = 30.0  # a longer 429 (global ones too) raises RateLimited: the runner retries later
GUILD_CONTEXT_ONLY = discord.app_commands.AppCommandContext(
    guild=True, dm_channel=False, private_channel=False
)
GUILD_INSTALL_ONLY = discord.app_commands.AppInstallationType(guild=True, user=False)


def bot_intents() -> discord.Intents:
    """Only what the bot needs: guilds (channels, roles) and guild reactions. No privileged intent."""
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_reactions = True
    return intents


def job_source(settings: Settings, store: Store, clock: Callable[[], float]) -> JobSource:
    """Claims on the shared queue when the store is one (PostgreSQL), else this process's own queue."""
    if isinstance(store, JobQueue):  # a shared store: its jobs table is every process's queue
        return ClaimSource(
            store,
            signals=pg_signals_for(store),
            capacity=settings.dispatch_capacity,
            lease_s=settings.job_lease_s,
            clock=clock,
        )
    return InProcessSource(store)


class ImagineBot(commands.Bot):
    """The bot. Build it with its dependencies; `bot.startup.run()` opens and closes them."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        backend: GenerationBackend,
        image_store: ImageStore,
        *,
        clock: Callable[[], float] = time.time,
        outbox: Outbox | None = None,
        edit_interval_s: float = 1.5,
        metrics: JobMetrics | None = None,
        **client_options: Any,
    ) -> None:
        """`client_options` go to discord.py's `Bot` (e.g. `guild_ready_timeout` in tests); `metrics`
        receives the runner's job counts (`bot.metrics.BotMetrics` with HEALTH_PORT)."""
        shard: dict[str, Any] = {}
        if isinstance(self, commands.AutoShardedBot):  # `bot_class`: SHARD_COUNT / SHARD_IDS
            shard = {"shard_count": settings.shard_count}
            if settings.shard_ids:
                shard["shard_ids"] = list(settings.shard_ids)
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=bot_intents(),
            tree_cls=ImagineTree,
            help_command=None,
            allowed_mentions=discord.AllowedMentions(everyone=False, roles=False, users=True),
            allowed_contexts=GUILD_CONTEXT_ONLY,  # every command: guild install, guild channels only
            allowed_installs=GUILD_INSTALL_ONLY,
            max_ratelimit_timeout=MAX_RATELIMIT_WAIT_S,
            **shard,
            **client_options,
        )
        self.settings = settings
        self.store = store
        self.backend = backend
        self.image_store = image_store
        self.clock = clock
        self.runner = JobRunner(
            store,
            backend,
            image_store,
            outbox or DiscordOutbox(self),
            source=job_source(settings, store, clock),
            clock=clock,
            edit_interval_s=edit_interval_s,
            metrics=metrics,
            second_models=settings.second_models,
        )
        loras = lora_catalog(settings)
        self.services = Services(settings, store, backend, image_store, self.runner, clock, loras)
        self.button_actions = ResultActions(self.services)
        self.synced_commands = False
        self._resumed = False
        self.resumed = asyncio.Event()

    async def setup_hook(self) -> None:
        for command in all_commands(self.services):
            self.tree.add_command(command)
        self.add_dynamic_items(ImageButton, JobButton, PromptButton, EditItem, SettingsControl, PageButton)
        guild = discord.Object(self.settings.sync_guild_id) if self.settings.sync_guild_id else None
        if guild is not None:
            self.tree.copy_global_to(guild=guild)
        # Only when the tree changed, and only from the process running shard 0 (or the only one).
        shards = self.settings.shard_ids
        self.synced_commands = await sync_if_changed(
            self, self.tree, guild, may_sync=shards is None or 0 in shards
        )

    async def on_ready(self) -> None:
        log.info(
            "connected as %s (%s), %d guilds", self.user, self.user.id if self.user else "?", len(self.guilds)
        )
        if not self._resumed:
            self._resumed = True
            try:
                await self.runner.resume()
            finally:
                self.resumed.set()

    async def on_interaction(self, interaction: discord.Interaction[Any]) -> None:
        await self.button_actions.on_interaction(interaction)

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        await self.button_actions.on_raw_reaction_add(self, payload)

    def gateway_up(self) -> bool:
        """Connected to the gateway and past READY (for `/readyz`)."""
        return self.is_ready() and not self.is_closed()

    async def shut_down(self, grace_s: float) -> None:
        """A graceful stop: no new jobs, the running batch gets `grace_s` to finish, then `close()`."""
        try:
            await self.runner.drain(grace_s)
        finally:
            await self.close()

    async def close(self) -> None:
        await self.runner.close()
        await super().close()


class ShardedImagineBot(ImagineBot, commands.AutoShardedBot):
    """`ImagineBot` running the shards SHARD_IDS of SHARD_COUNT (all of them if SHARD_IDS is unset)
    in this process, on discord.py's `AutoShardedBot`. Any process can deliver any job's result."""


def bot_class(settings: Settings) -> type[ImagineBot]:
    """`ShardedImagineBot` when SHARD_COUNT is set, else the plain one-connection `ImagineBot`."""
    return ShardedImagineBot if settings.shard_count else ImagineBot
