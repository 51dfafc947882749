"""The whole bot on loopback: the Discord-compatible server, a real SQLite store in a temp folder, a real
`GenerationService` on the `tiny` model and `ImagineBot` with the real discord.py client.

Use from an async test (the tiny model comes from `tests.fixtures_generation`'s `tiny_model`)::

    async with BotWorld.open(tmp_path, tiny_model) as world:      # server + a guild, members, channels
        await world.start_bot()                                   # store, service, bot; waits for ready
        rec = world.imagine("a fox --n 4")
        await world.wait_result(rec)
        await world.restart_bot()                                 # same DATABASE_PATH and OUTPUT_DIR

`BotWorld.logs` collects every log record (DEBUG and up) while the world is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bot.client import ImagineBot
from bot.settings import Settings
from generation.backends.local import GenerationService
from generation.media.image_store import ImageStore
from generation.pipelines.contract import OutOfMemory
from storage.interface import Limits
from storage.postgres import open_pg_store
from storage.sqlite import SqliteStore, open_store
from testkit.answers import is_result
from testkit.discord_loopback import Channel, DiscordLoopback, Guild, InteractionRecord, Member, Message
from tests.fixtures_generation import nan_decoding

T = 20.0  # the longest any single wait may take; nothing sleeps
LIMITS = Limits(images_per_hour=100, images_per_day=500, max_queued=20, cooldown_seconds=0.0)


class LogCollector(logging.Handler):
    """Keeps every formatted record (with tracebacks) in memory."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@contextlib.contextmanager
def collecting_logs() -> Any:
    """Attach a DEBUG collector to the root logger for the block."""
    root = logging.getLogger()
    collector = LogCollector()
    old_level = root.level
    root.addHandler(collector)
    root.setLevel(logging.DEBUG)
    try:
        yield collector
    finally:
        root.removeHandler(collector)
        root.setLevel(old_level)


@dataclass
class RunningBot:
    """One bot process's worth of parts (a restart makes a new one)."""

    bot: ImagineBot
    store: SqliteStore
    service: GenerationService
    images: ImageStore
    task: asyncio.Task[None]


@dataclass
class BotWorld:
    """A loopback Discord with two guilds and the bot running against it."""

    server: DiscordLoopback
    root: Path
    tiny_model: Any
    guild: Guild
    channel: Channel
    nsfw: Channel
    alice: Member
    bob: Member
    carol: Member
    dave: Member
    boss: Member
    other_guild: Guild
    other_channel: Channel
    mallory: Member
    logs: LogCollector
    limits: Limits = LIMITS
    running: RunningBot | None = None
    starts: int = 0
    extra_settings: dict[str, Any] = field(default_factory=dict)
    # Fault injection (tests/test_faults.py): wraps the engine the worker thread builds; extra keyword
    # arguments for GenerationService (e.g. watchdog_grace_s) and ImagineBot (e.g. edit_interval_s).
    engine_wrapper: Callable[[Any], Any] | None = None
    service_options: dict[str, Any] = field(default_factory=dict)
    bot_options: dict[str, Any] = field(default_factory=dict)

    # -- set-up ---------------------------------------------------------------------------------------

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, root: Path, tiny_model: Any, *, limits: Limits = LIMITS) -> AsyncIterator[BotWorld]:
        """The server with its world; the bot (if started) is stopped on the way out."""
        with collecting_logs() as logs:
            async with DiscordLoopback() as server:
                guild = server.add_guild("artists")
                channel = server.add_channel(guild, "art")
                nsfw = server.add_channel(guild, "after-dark", nsfw=True)
                other = server.add_guild("elsewhere")
                world = cls(
                    server=server,
                    root=root,
                    tiny_model=tiny_model,
                    guild=guild,
                    channel=channel,
                    nsfw=nsfw,
                    alice=server.add_member(guild, "alice"),
                    bob=server.add_member(guild, "bob"),
                    carol=server.add_member(guild, "carol"),
                    dave=server.add_member(guild, "dave"),
                    boss=server.add_member(guild, "boss", admin=True),
                    other_guild=other,
                    other_channel=server.add_channel(other, "general"),
                    mallory=server.add_member(other, "mallory"),
                    logs=logs,
                    limits=limits,
                )
                with server.patched_discord():
                    try:
                        yield world
                    finally:
                        await world.stop_bot()

    @property
    def database_path(self) -> Path:
        return self.root / "imagine.db"

    @property
    def output_dir(self) -> Path:
        return self.root / "images"

    def settings(self) -> Settings:
        """What `python -m bot` would be configured with for this world."""
        base = Settings(
            discord_token=self.server.token,
            discord_api_base=self.server.api_base,
            discord_gateway_url=self.server.gateway_url,
            model_id="tiny",
            device="cpu",
            database_path=self.database_path,
            output_dir=self.output_dir,
            default_limits=self.limits,
            job_timeout_s=60.0,
            log_level="DEBUG",
        )
        return replace(base, **self.extra_settings)

    async def start_bot(self) -> ImagineBot:
        """Open the store, start the generation service and the bot; return once it is ready and has
        resumed stored work."""
        assert self.running is None, "stop the running bot first"
        settings = self.settings()
        store: Any
        if settings.database_url:  # PostgreSQL: the bot claims its jobs through `jobs.claims.ClaimSource`
            store = await open_pg_store(settings.database_url, settings.default_limits)
        else:
            store = await open_store(settings.database_path, settings.default_limits)
        images = ImageStore(settings.output_dir)
        model = self.tiny_model
        wrapper = self.engine_wrapper
        side_models = (settings.video_model, settings.edit_model)
        wrap_pool = any(side_models)  # the wrapper sees clips and edits too: it wraps the pool

        def one_engine(choice: Any = None) -> Any:
            from generation.pipelines.engine import DiffusersEngine

            if choice is not None and choice.source != "tiny":  # another family's tiny model, built locally
                cache = self.root / "model-cache"
                engine = DiffusersEngine.load(
                    choice.source, "cpu", cache_dir=cache, lora_dir=settings.lora_dir
                )
            else:
                engine = DiffusersEngine(model, lora_dir=settings.lora_dir)
            return wrapper(engine) if wrapper is not None and not wrap_pool else engine

        def video_engine(choice: Any) -> Any:
            from generation.pipelines.video_engine import VideoEngine

            return VideoEngine.load(choice.name, choice.source, "cpu", cache_dir=self.root / "model-cache")

        def engine_factory() -> Any:
            if not settings.models and not any(side_models):
                return one_engine()
            from generation.model_set import ModelChoice
            from generation.pipelines.engine_pool import EnginePool, instruction_editor

            # MODELS: every name gets an engine of its own over the session's tiny model (a name whose
            # source is another family's tiny model, `tiny-flux` say, loads that). VIDEO_MODEL and
            # EDIT_MODEL: loaded on first use, as the real pool does.
            on_demand = [
                (ModelChoice(name, name), loader)
                for name, loader in (
                    (settings.video_model, video_engine),
                    (settings.edit_model, lambda choice: instruction_editor(one_engine(choice))),
                )
                if name is not None
            ]
            pool = EnginePool(settings.model_set, one_engine, on_demand=on_demand)
            return wrapper(pool) if wrapper is not None and wrap_pool else pool

        service = GenerationService(
            engine_factory, images, job_timeout_s=settings.job_timeout_s, **self.service_options
        )
        try:
            await service.start()
            options: dict[str, Any] = {
                "edit_interval_s": 0.0,
                "guild_ready_timeout": 0.05,
                **self.bot_options,
            }
            bot = ImagineBot(settings, store, service, images, **options)
        except BaseException:
            await service.close()
            await store.close()
            raise
        checks_before = len(self.server.command_fetches)
        task = asyncio.get_running_loop().create_task(bot.start(settings.discord_token), name="imagine-bot")
        self.running = RunningBot(bot, store, service, images, task)
        self.starts += 1
        try:
            await self._until(bot.resumed.wait(), task)
            await self.server.wait_for(lambda: len(self.server.command_fetches) > checks_before, T)
        except BaseException:
            await self.stop_bot()
            raise
        return bot

    async def _until(self, waiting: Any, task: asyncio.Task[None]) -> None:
        """Wait for `waiting`, failing early (with the bot's own error) if the bot task ends."""
        waiter = asyncio.ensure_future(waiting)
        done, _ = await asyncio.wait({waiter, task}, timeout=T, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            waiter.cancel()
            if task in done:
                task.result()  # raises the bot's error
                raise RuntimeError("the bot stopped before it was ready")
            raise TimeoutError("the bot was not ready in time")

    async def stop_bot(self) -> None:
        """Close the bot, then the service and the store (as `python -m bot` does on SIGTERM)."""
        running, self.running = self.running, None
        if running is None:
            return
        try:
            await running.bot.close()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(running.task, T)
        finally:
            await running.service.close()
            await running.store.close()

    async def restart_bot(self) -> ImagineBot:
        """Stop the bot and start a new one on the same database and output folder."""
        await self.stop_bot()
        return await self.start_bot()

    @property
    def bot(self) -> ImagineBot:
        assert self.running is not None, "the bot is not running"
        return self.running.bot

    @property
    def store(self) -> SqliteStore:
        assert self.running is not None, "the bot is not running"
        return self.running.store

    # -- driving --------------------------------------------------------------------------------------

    def imagine(
        self,
        prompt: str,
        *,
        member: Member | None = None,
        channel: Channel | None = None,
        guild: Guild | None = None,
        **options: Any,
    ) -> InteractionRecord:
        """`/imagine prompt:<prompt> <options>` as `member` (alice by default)."""
        return self.server.invoke(
            "imagine",
            {"prompt": prompt, **options},
            guild=guild or self.guild,
            channel=channel or self.channel,
            member=member or self.alice,
        )

    async def wait_result(self, rec: InteractionRecord, timeout: float = T) -> Message:  # noqa: ASYNC109
        """Wait until @original carries the result (an image and buttons); return it. For a click,
        @original starts as the clicked message: wait for the bot's own response instead."""
        clicked = str((rec.payload.get("message") or {}).get("id", ""))

        def done(r: InteractionRecord) -> bool:
            return r.acknowledged and is_result(r.original) and str(r.original_id) != clicked

        await rec.wait_final(done, timeout=timeout)
        assert rec.original is not None
        return rec.original

    async def wait_ephemeral(self, rec: InteractionRecord, timeout: float = T) -> Message:  # noqa: ASYNC109
        """Wait for the interaction's first live ephemeral message with an answer (not the "thinking"
        placeholder of an ephemeral defer); return it."""

        def answers(r: InteractionRecord) -> list[Message]:
            return [m for m in r.ephemeral_messages if not m.deleted and not m.loading]

        await rec.wait_final(lambda r: bool(answers(r)), timeout=timeout)
        return answers(rec)[0]

    async def private(self, rec: InteractionRecord, *fragments: str) -> str:
        """The interaction's private answer, which must hold each of `fragments` (any case)."""
        text = (await self.wait_ephemeral(rec)).content
        for fragment in fragments:
            assert fragment.lower() in text.lower(), text
        return text

    async def used(self, member: Member) -> int:
        """Images `member` spent in this world's guild over the last hour."""
        return (await self.store.usage(self.guild.id, member.id, (), time.time())).used_last_hour

    async def wait_channel(
        self,
        predicate: Callable[[Message], bool],
        channel: Channel | None = None,
        timeout: float = T,  # noqa: ASYNC109
    ) -> Message:
        """The first live message in the channel that satisfies `predicate`."""
        return await self.server.wait_for_message(channel or self.channel, predicate, timeout=timeout)


class FaultyEngine:
    """Wraps a real engine for the fault tests: a batch whose prompts contain a marker misbehaves.

    `fault_raise` raises RuntimeError, `fault_oom` raises OutOfMemory, `fault_hang` blocks without
    calling back until `release` is set, `fault_slow` stalls every step (callbacks still come) until
    `release` is set, `fault_gate` waits at `gate` before running (`at_gate` says it got there),
    `fault_nan` runs the real pipeline with its VAE decoder made to emit NaN.
    Waits end after `T` seconds whatever happens, so a failed test never leaves a thread behind."""

    RAISE = "fault_raise"
    OOM = "fault_oom"
    HANG = "fault_hang"
    SLOW = "fault_slow"
    GATE = "fault_gate"
    NAN = "fault_nan"

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.profile = inner.profile
        self.release = threading.Event()
        self.gate = threading.Event()
        self.at_gate = threading.Event()
        self.hung = threading.Event()

    @classmethod
    @contextlib.contextmanager
    def of(cls, world: BotWorld) -> Iterator[FaultyEngine]:
        """The running bot's engine, every event cleared; afterwards released and its gate open, so a
        failed test leaves nothing waiting."""
        engine = world.running.service._engine if world.running else None
        assert isinstance(engine, cls), "the world was started without engine_wrapper = FaultyEngine"
        for event in (engine.release, engine.gate, engine.at_gate, engine.hung):
            event.clear()
        try:
            yield engine
        finally:
            engine.release.set()
            engine.gate.set()

    def count_tokens(self, text: str) -> int:
        return int(self.inner.count_tokens(text))

    def max_batch_images(self, request: Any) -> int:
        return int(self.inner.max_batch_images(request))

    def run_batch(self, requests: Any, sources: Any, on_step: Any, pictures: Any = None) -> Any:
        prompts = " ".join(r.prompt for r in requests)
        if self.OOM in prompts:
            raise OutOfMemory("injected: out of memory")
        if self.RAISE in prompts:
            raise RuntimeError("injected failure")
        if self.HANG in prompts:
            self.hung.set()
            self.release.wait(T)
        if self.GATE in prompts:
            self.at_gate.set()
            self.gate.wait(T)
        if self.SLOW in prompts:
            inner_step = on_step

            def on_step(step: int, total: int, preview: Any) -> bool:
                self.release.wait(0.25)
                return bool(inner_step(step, total, preview))

        if self.NAN in prompts:
            with nan_decoding(self.inner.model.text2img.vae):
                return self.inner.run_batch(requests, sources, on_step, pictures)
        return self.inner.run_batch(requests, sources, on_step, pictures)

    def close(self) -> None:
        self.release.set()
        self.gate.set()
        close = getattr(self.inner, "close", None)
        if callable(close):
            close()


__all__ = [
    "LIMITS",
    "BotWorld",
    "FaultyEngine",
    "LogCollector",
    "RunningBot",
    "T",
    "collecting_logs",
    "is_result",
]
