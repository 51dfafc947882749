"""Watching the bot run and stopping it, through the real `python -m bot` process and the loopback
Discord: HEALTH_PORT's /healthz, /readyz and /metrics (a job raises the counters; the text parses
with prometheus-client's own parser), LOG_FORMAT=json (every line one object; job lines carry the
job, guild and member ids), and SIGTERM with a running and queued jobs (exit 0, the running batch
delivered before the exit, the queued ones kept and delivered once after the restart)."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.health import not_ready_reasons
from generation.backends.local import GenerationService
from generation.media.image_store import ImageStore
from storage.interface import JobState
from storage.sqlite import open_store
from testkit.answers import is_generating, is_result, mid_generation, results_for
from testkit.bot_process import BotProcess
from testkit.discord_loopback import DiscordLoopback, InteractionRecord
from tests.bot_harness import LIMITS, BotWorld, FaultyEngine, T
from tests.world_fixtures import crowd, imagine_each

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus exposition, by (name, sorted labels)."""
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url) as response:
        return response.status, await response.text()


async def scrape_until(
    session: aiohttp.ClientSession, url: str, name: str, labels: tuple[tuple[str, str], ...], value: float
) -> str:
    """Scrape until sample `name{labels}` reaches `value` (the result is posted a moment before the
    runner records it); each try waits on a real HTTP round trip, none sleeps. Returns the text."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + T
    while True:
        status, text = await get(session, url)
        if status == 200 and samples(text).get((name, labels)) == value:
            return text
        assert loop.time() < deadline, f"{name}{labels} never reached {value}:\n{text}"


async def ready_after(session: aiohttp.ClientSession, url: str) -> list[str]:
    """Ask /readyz until it answers 200 (each try a real HTTP round trip; none sleeps); every answer."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + T
    seen: list[str] = []
    while not seen or not seen[-1].startswith("ready"):
        status, text = await get(session, url)
        assert status == (200 if text.startswith("ready") else 503), (status, text)
        seen.append(text)
        assert loop.time() < deadline, seen[-3:]
    return seen


async def test_health_metrics_and_json_logs_of_a_running_bot(tmp_path: Path, tiny_cache_dir: Path) -> None:
    port = free_port()
    async with DiscordLoopback() as server, aiohttp.ClientSession() as http:
        guild = server.add_guild("ops")
        channel = server.add_channel(guild, "art")
        member = server.add_member(guild, "m")
        env = {"HEALTH_PORT": str(port), "HEALTH_HOST": "127.0.0.1", "LOG_FORMAT": "json"}
        proc = await BotProcess.start(server, tmp_path / "bot", tiny_cache_dir, env=env)
        base = f"http://127.0.0.1:{port}"
        try:
            assert await get(http, f"{base}/healthz") == (200, "ok\n")
            # Ready once READY and the guilds arrived (discord.py waits for them): ask until it says so.
            seen = await ready_after(http, f"{base}/readyz")
            assert all(text == "not ready: gateway not connected\n" for text in seen[:-1]), seen
            assert seen[-1] == "ready\n"
            before = samples((await get(http, f"{base}/metrics"))[1])
            rec = server.invoke(
                "imagine", {"prompt": "a lighthouse --steps 3"}, guild=guild, channel=channel, member=member
            )
            await rec.wait_final(lambda r: is_result(r.original), timeout=T)
            delivered = ("imagine_jobs_total", (("outcome", "delivered"),))
            text = await scrape_until(http, f"{base}/metrics", *delivered, 1)
        finally:
            code = await proc.stop()
        assert code == 0
        after = samples(text)
        assert before[delivered] == 0 and after[delivered] == 1
        assert after[("imagine_images_total", ())] == 1
        assert after[("imagine_generation_seconds_count", ())] == 1
        assert after[("imagine_generation_seconds_sum", ())] > 0
        assert after[("imagine_steps_per_second", ())] > 0
        assert after[("imagine_queue_depth", ())] == 0
        for name in ("imagine_refunded_images_total", "imagine_delivery_retries_total"):
            assert after[(name, ())] == 0, name
        assert ("imagine_discord_rate_limit_waits_total", ()) in after
        # JSON logs: every line is one object; the delivery line names job, guild and member.
        lines = [json.loads(line) for line in proc.log_text().splitlines() if line.strip()]
        assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in lines)
        (done,) = [e for e in lines if " delivered as message " in e["message"]]
        assert done["guild_id"] == guild.id and done["member_id"] == member.id
        assert done["job_id"] in done["message"]
        assert server.token not in proc.log_text()


async def test_readyz_names_what_is_missing(tmp_path: Path) -> None:
    backend = GenerationService(lambda: None, ImageStore(tmp_path / "images"))  # type: ignore[arg-type,return-value]
    store = await open_store(tmp_path / "db.sqlite", LIMITS)
    reasons = await not_ready_reasons(backend, lambda: False, store)
    assert reasons == ["model not loaded", "gateway not connected"]
    await store.close()
    reasons = await not_ready_reasons(backend, lambda: True, store)
    assert reasons[0] == "model not loaded" and reasons[1].startswith("store unreachable (StorageError")


def _job_of(rec: InteractionRecord) -> str | None:
    if rec.original is None or not rec.original.custom_ids:
        return None
    return rec.original.custom_ids[0].split(":")[2]


async def test_sigterm_finishes_the_running_batch_and_keeps_the_queue(
    tmp_path: Path, tiny_cache_dir: Path
) -> None:
    root = tmp_path / "bot"
    # Four sizes: four batches, one on the engine at a time.
    aspects = ("1:1", "16:9", "9:16", "4:3")
    async with DiscordLoopback() as server:
        guild, channel, members = crowd(server, "stop", len(aspects))
        proc = await BotProcess.start(server, root, tiny_cache_dir)
        prompts = [f"stop test {i} --steps 50 --n 4 --ar {ar}" for i, ar in enumerate(aspects)]
        recs = imagine_each(server, guild, channel, members, prompts)
        await server.wait_for(lambda: mid_generation(recs), T)
        running = [r for r in recs if is_generating(r)]
        code = await proc.stop(timeout=60)  # SIGTERM, then wait for the exit
        first_log = proc.log_text()
        assert code == 0, first_log
        assert "SIGTERM: stopping" in first_log and "Traceback" not in first_log
        assert all(is_result(r.original) for r in running), "the running batch was not finished"
        waiting = [r for r in recs if not is_result(r.original)]
        assert waiting, "every job finished before the stop: nothing was left queued"
        store = await open_store(root / "imagine.db", LIMITS)
        try:
            states: set[JobState] = set()
            for member in members:
                (entry,) = await store.ledger(guild.id, member.id)
                job = await store.get_job(entry.job_id)
                assert job is not None and not entry.refunded
                states.add(job.state)
            # Nothing failed or was cancelled by the stop; what did not run is still owed.
            assert states <= {JobState.DONE, JobState.QUEUED, JobState.RUNNING}
            assert states & {JobState.QUEUED, JobState.RUNNING}
        finally:
            await store.close()
        proc = await BotProcess.start(server, root, tiny_cache_dir)
        try:
            await server.wait_for(lambda: all(is_result(r.original) for r in recs), 90.0)
        finally:
            assert await proc.stop() == 0
        for rec in recs:
            job_id = _job_of(rec)
            assert job_id is not None
            results = results_for(server.messages.values(), job_id)
            assert len(results) == 1 and rec.responses_count == 1, job_id


async def test_drain_finishes_the_running_job_keeps_the_queued_one_and_refuses_new_ones(
    tmp_path: Path, tiny_model: Any
) -> None:
    async with BotWorld.open(tmp_path, tiny_model) as world:
        world.engine_wrapper = FaultyEngine
        await world.start_bot()
        assert world.running is not None
        engine = world.running.service._engine
        assert isinstance(engine, FaultyEngine)
        running = world.imagine(f"{FaultyEngine.GATE} a boat --steps 2", member=world.alice)
        assert await asyncio.to_thread(engine.at_gate.wait, T)
        queued = world.imagine("a plane --steps 2 --ar 16:9", member=world.bob)  # another size: its own batch
        await queued.wait_final(lambda r: r.original is not None and "queue" in r.original.content.lower(), T)
        drain = asyncio.create_task(world.bot.runner.drain(T))
        late = world.imagine("a car --steps 2", member=world.carol)
        told = await world.wait_ephemeral(late)
        assert "restarting" in told.content
        engine.gate.set()
        await drain
        await world.wait_result(running)
        assert not is_result(queued.original)
        (entry,) = await world.store.ledger(world.guild.id, world.bob.id)
        job = await world.store.get_job(entry.job_id)
        assert job is not None and job.state is JobState.QUEUED and not entry.refunded
        assert await world.store.ledger(world.guild.id, world.carol.id) == []
        await world.restart_bot()
        await world.wait_result(queued)
