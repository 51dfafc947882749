"""Faults, each through the real bot and the loopback Discord: Discord failing uploads, the gateway
dropping, the pipeline raising / hanging / running out of memory, the database locked by another
process, OUTPUT_DIR unusable, and the bot process killed with SIGKILL mid-generation.

The in-process bot (tests/bot_harness.py) runs with a `FaultyEngine` around the real tiny engine:
prompts carrying a marker misbehave. Progress edits are throttled to one per job (the first event),
so the only webhook edit after it is the result upload, which is what the upload faults hit.
Nothing sleeps to wait for work: waits are on server state, engine events or the process.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from storage.interface import JobState
from storage.sqlite import open_store
from testkit.answers import mid_generation, results_for
from testkit.bot_process import BotProcess
from testkit.discord_loopback import DiscordLoopback, InteractionRecord, Member
from tests.bot_harness import LIMITS, BotWorld, FaultyEngine, T, is_result
from tests.world_fixtures import crowd, imagine_each, started_world

pytestmark = pytest.mark.asyncio(loop_scope="module")

JOB_TIMEOUT_S = 3.0
WEBHOOK_EDIT = "PATCH /webhooks/*/messages/@original"


world = started_world(
    "faults",
    engine_wrapper=FaultyEngine,
    extra_settings={"job_timeout_s": JOB_TIMEOUT_S},
    service_options={"watchdog_grace_s": 0.5},
    bot_options={"edit_interval_s": 3600.0},  # one progress edit per job: the first
)


async def _event(flag: Any) -> None:
    """Wait for a threading.Event set on the worker thread."""
    assert await asyncio.to_thread(flag.wait, T), "the engine never got there"


async def _gated_job(world: BotWorld, engine: FaultyEngine, prompt: str, member: Member) -> InteractionRecord:
    """Start a job that waits at the engine's gate, once its one progress edit is done."""
    rec = world.imagine(f"{FaultyEngine.GATE} {prompt} --steps 2", member=member)
    await _event(engine.at_gate)
    await rec.wait_final(lambda r: len(r.original_history) >= 2, timeout=T)  # defer + its one edit
    return rec


async def _job_id(world: BotWorld, member: Member) -> str:
    jobs = [j for j in await world.store.queued_jobs(world.guild.id) if j.owner_id == member.id]
    assert len(jobs) == 1, jobs
    return jobs[0].job_id


async def _assert_done_undelivered(world: BotWorld, job_id: str) -> None:
    job = await world.store.get_job(job_id)
    assert job is not None and job.state is JobState.DONE and job.result_message_id is None
    assert job.image_paths and all(_is_file(p) for p in job.image_paths)


def _is_file(path: str) -> bool:
    return Path(path).is_file()


def _results_for(world: BotWorld, job_id: str) -> list[Any]:
    return results_for(world.server.messages.values(), job_id)


async def _delivered_once(world: BotWorld, rec: InteractionRecord, job_id: str) -> None:
    result = await world.wait_result(rec)
    await asyncio.wait_for(world.bot.runner.wait(job_id), T)  # the delivery is recorded after the post
    job = await world.store.get_job(job_id)
    assert job is not None and job.result_message_id == result.id
    assert rec.responses_count == 1 and not rec.rejected_callbacks
    assert _results_for(world, job_id) == [result]


# -- Discord failing uploads --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "count"),
    [
        (429, 6),  # more 429s than discord.py's five tries: the runner's own retry delivers it
        (500, 1),  # one 500: discord.py retries after a second
    ],
)
async def test_upload_fails_then_delivered(
    world: BotWorld, engine: FaultyEngine, status: int, count: int
) -> None:
    rec = await _gated_job(world, engine, f"a bridge {status}", world.alice)
    job_id = await _job_id(world, world.alice)
    fault = world.server.fail_next(WEBHOOK_EDIT, status, count=count, retry_after=0.01)
    engine.gate.set()
    await world.server.wait_for(lambda: len(fault.hits) == count, T)
    await _assert_done_undelivered(world, job_id)  # the image is on disk and the job knows it
    await _delivered_once(world, rec, job_id)


async def test_stalled_upload_times_out_and_is_retried(world: BotWorld, engine: FaultyEngine) -> None:
    world.bot.runner.poster.delivery_timeout_s = 1.0
    rec = await _gated_job(world, engine, "a stalled tower", world.bob)
    job_id = await _job_id(world, world.bob)
    stall = world.server.stall_next(WEBHOOK_EDIT)
    engine.gate.set()
    try:
        await world.server.wait_for(lambda: stall.stalled.is_set(), T)
        await _assert_done_undelivered(world, job_id)
        await _delivered_once(world, rec, job_id)  # the next attempt, while the first still hangs
    finally:
        stall.release()
        world.bot.runner.poster.delivery_timeout_s = 60.0


async def test_channel_post_that_landed_but_timed_out_is_not_posted_twice(
    world: BotWorld, engine: FaultyEngine
) -> None:
    # An expired token sends the result to the channel. Discord creates the message but its answer
    # never comes: the bot times out and posts again, with the same nonce, so Discord returns the
    # first message instead of making a second one.
    world.bot.runner.poster.delivery_timeout_s = 1.0
    rec = await _gated_job(world, engine, "a lost answer", world.carol)
    job_id = await _job_id(world, world.carol)
    world.server.expire_token(rec)
    stall = world.server.stall_response_next("POST /channels/*/messages")
    engine.gate.set()
    try:
        await world.server.wait_for(lambda: stall.stalled.is_set(), T)
        assert len(_results_for(world, job_id)) == 1  # it landed; the bot does not know yet
        await asyncio.wait_for(world.bot.runner.wait(job_id), T)
    finally:
        stall.release()
        world.bot.runner.poster.delivery_timeout_s = 60.0
    posts = [r for r in world.server.requests if r.method == "POST" and r.path.endswith("/messages")]
    (result,) = _results_for(world, job_id)
    assert len(posts) >= 2 and f"<@{world.carol.id}>" in result.content
    job = await world.store.get_job(job_id)
    assert job is not None and job.result_message_id == result.id


# -- the gateway drops ----------------------------------------------------------------------------------


async def test_gateway_drop_resumes_and_queued_work_goes_on(world: BotWorld, engine: FaultyEngine) -> None:
    rec = await _gated_job(world, engine, "a ship in a storm", world.carol)
    waiting = world.imagine("a second ship --steps 2", member=world.dave)
    await waiting.wait_acked()
    resumes = len(world.server.resumes)
    await world.server.drop_gateway()
    await world.server.wait_for_resume(resumes + 1, timeout=T)
    engine.gate.set()
    await world.wait_result(rec)
    await world.wait_result(waiting)
    after = world.imagine("after the storm --steps 2", member=world.carol)
    await world.wait_result(after)
    assert after.ack_latency is not None and after.ack_latency < 3


# -- the pipeline fails -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("marker", "reason"),
    [
        (FaultyEngine.RAISE, "generation failed: RuntimeError"),
        (FaultyEngine.OOM, "ran out of GPU memory"),
        (FaultyEngine.NAN, "the model produced an empty picture"),  # never posted as black
        (FaultyEngine.SLOW, f"took longer than {JOB_TIMEOUT_S:g} s"),  # steps too slow: stopped at the limit
        (FaultyEngine.HANG, f"took longer than {JOB_TIMEOUT_S:g} s"),  # no callback at all: the watchdog
    ],
)
async def test_pipeline_fault_fails_that_job_with_refund(
    world: BotWorld, engine: FaultyEngine, marker: str, reason: str
) -> None:
    member = world.server.add_member(world.guild, f"victim-{marker}")
    rec = world.imagine(f"{marker} a doomed fox --steps 20 --n 2", member=member)
    await rec.wait_final(lambda r: r.original is not None and "failed" in r.original.content, timeout=T)
    assert rec.original is not None
    text = rec.original.content
    assert reason in text and "2 images were given back" in text, text
    (entry,) = await world.store.ledger(world.guild.id, member.id)
    assert entry.refunded and entry.images == 2
    job = await world.store.get_job(entry.job_id)
    assert job is not None and job.state is JobState.FAILED
    following = world.imagine("a healthy fox --steps 2", member=member)
    if marker == FaultyEngine.HANG:
        assert world.running is not None and world.running.service.stuck
        await following.wait_acked()
        engine.release.set()  # the hung call returns: the worker takes the queue up again
    await world.wait_result(following)


# -- the database is locked by another process ------------------------------------------------------------

LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(2.0)  # the fault: hold the write lock for two seconds
print("releasing", time.time(), flush=True)
conn.execute("COMMIT")
"""


def _start_locker(database: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", LOCKER, str(database)], stdout=subprocess.PIPE, text=True)


async def test_database_locked_by_another_process(world: BotWorld) -> None:
    member = world.server.add_member(world.guild, "patient")
    locker = _start_locker(world.database_path)
    try:
        assert locker.stdout is not None
        assert (await asyncio.to_thread(locker.stdout.readline)).strip() == "locked"
        rec = world.imagine("a locked door --steps 2", member=member)
        await rec.wait_acked()
        assert rec.ack_latency is not None and rec.ack_latency < 3
        word, released_at = (await asyncio.to_thread(locker.stdout.readline)).split()
        assert word == "releasing"
        result = await world.wait_result(rec)
        assert "locked door" in result.content
        assert await asyncio.to_thread(locker.wait, T) == 0
    finally:
        if locker.poll() is None:
            locker.kill()
            locker.wait()
        if locker.stdout is not None:
            locker.stdout.close()
    (entry,) = await world.store.ledger(world.guild.id, member.id)
    assert not entry.refunded
    # The reservation was asked for while the lock was held (its clock reading), and it went through
    # once the lock was released: the request waited instead of failing.
    assert entry.at < float(released_at)


# -- OUTPUT_DIR unusable -----------------------------------------------------------------------------------


async def test_output_dir_not_writable(world: BotWorld) -> None:
    member = world.server.add_member(world.guild, "unlucky")
    out = world.output_dir
    moved = out.with_name("images-moved")
    out.rename(moved)
    out.write_bytes(b"a file where the image folder should be")
    try:
        rec = world.imagine("a tree --steps 2", member=member)
        await rec.wait_final(lambda r: r.original is not None and "failed" in r.original.content, timeout=T)
        assert rec.original is not None
        text = rec.original.content
        assert "could not be saved" in text and "1 image was given back" in text, text
        (entry,) = await world.store.ledger(world.guild.id, member.id)
        assert entry.refunded
        assert "OUTPUT_DIR" in world.logs.text  # the operator's log says what to fix
    finally:
        out.unlink()
        moved.rename(out)
    again = world.imagine("a tree, again --steps 2", member=member)
    await world.wait_result(again)


# -- SIGKILL mid-generation, ten jobs queued -----------------------------------------------------------------


@pytest.mark.slow
async def test_sigkill_mid_generation_then_restart_delivers_all_once(
    tmp_path: Path, tiny_cache_dir: Path
) -> None:
    async with DiscordLoopback() as server:
        guild, channel, members = crowd(server, "crash", 10)
        root = tmp_path / "bot"
        proc = await BotProcess.start(server, root, tiny_cache_dir)
        try:
            prompts = [f"crash test {i} --steps 50 --n 4 --seed {i}" for i in range(len(members))]
            recs = imagine_each(server, guild, channel, members, prompts)
            # Mid-generation: every job acknowledged and one of them reporting steps.
            await server.wait_for(lambda: mid_generation(recs), T)
            proc.kill()
            logs = [proc.log_text()]
            delivered_before = sum(1 for r in recs if is_result(r.original))
            assert delivered_before < len(recs)
            proc = await BotProcess.start(server, root, tiny_cache_dir)
            await server.wait_for(lambda: all(is_result(r.original) for r in recs), 60.0)
        finally:
            await proc.stop()
        logs.append(proc.log_text())
        # The token is in neither process's log, nor in any stored byte.
        assert "resumed: " in logs[1] and all(server.token not in log for log in logs)
        for path in root.rglob("*"):
            assert not path.is_file() or server.token.encode() not in path.read_bytes(), path
        # None twice: one result per job in the whole server, one accepted callback per interaction.
        job_ids = set()
        for rec in recs:
            assert rec.responses_count == 1 and not rec.rejected_callbacks
            assert rec.original is not None
            (job_id,) = {c.split(":")[2] for c in rec.original.custom_ids}
            job_ids.add(job_id)
            assert len(results_for(server.messages.values(), job_id)) == 1, job_id
        assert len(job_ids) == 10
        # No quota spent twice: one unrefunded 4-image entry per member, each job done and delivered.
        store = await open_store(root / "imagine.db", LIMITS)
        try:
            for member in members:
                (entry,) = await store.ledger(guild.id, member.id)
                assert entry.images == 4 and not entry.refunded and entry.job_id in job_ids
                job = await store.get_job(entry.job_id)
                assert job is not None and job.state is JobState.DONE and job.result_message_id is not None
        finally:
            await store.close()
