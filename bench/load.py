"""`python -m bench load`: the bot under a burst of `/imagine`, then a long run of jobs.

The real bot runs as its own process (`python -m bot`, MODEL_ID=tiny, SQLite, images on disk) against
the loopback Discord server of the end-to-end tests (testkit/discord_loopback), which runs here and
plays Discord: it dispatches interactions over the gateway, enforces the 3-second acknowledgement
rule and timestamps every callback on its own clock.

1. Burst: `--interactions` `/imagine` from `--members` members of one guild, spread evenly over
   `--window` seconds. The guild's hourly limit (`--per-hour`, default 3 images) is below what each
   member asks for, so some are granted and some refused. Every interaction must be acknowledged
   (ack latency = server clock from dispatch to the accepted callback) and end in exactly one of:
   a result (@original with the image and buttons) or a live ephemeral refusal. `lost` counts those
   with neither; `answered_twice` those with more than one answer (two callbacks, a result and a
   refusal, two live answers, or a job's result posted twice anywhere).
2. Soak: `--jobs` jobs in a row, `--concurrency` at a time, in a second guild whose admin lifted the
   limits with `/limits set`. The bot's resident memory (VmRSS of its process) is read after the first
   `--baseline-after` jobs (default 100) and after all of them: `rss_growth_mib` is the difference.

Burst records are checked again after the soak, so a late second answer is still caught.
The last line of output is the figures as one JSON object (also appended to bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.config import BenchSettings
from bench.report import report
from testkit.answers import is_failure, is_result, job_of, live_ephemeral

ACK_LIMIT_S = 3.0


@dataclass(frozen=True)
class LoadConfig:
    """What one load run does (see the module docstring)."""

    interactions: int = 200
    members: int = 50
    window_s: float = 10.0
    per_hour: int = 3
    jobs: int = 1000
    concurrency: int = 4
    baseline_after: int = 100
    steps: int = 2
    timeout_s: float = 120.0  # the longest any one phase may take to settle


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), -(-len(ordered) * q // 100)))
    return ordered[int(rank) - 1]


def _settled(rec: Any) -> bool:
    return is_result(rec.original) or bool(live_ephemeral(rec)) or is_failure(rec)


def outcome_counts(records: Sequence[Any], server: Any) -> dict[str, int]:
    """granted / refused / failed / lost / answered_twice over interaction records (a job's result
    posted twice anywhere also counts as answered twice)."""
    granted = refused = failed = lost = twice = 0
    for rec in records:
        result = is_result(rec.original)
        answers = len(live_ephemeral(rec)) + int(result)
        live_results = [m for m in rec.messages if is_result(m)]
        if rec.responses_count > 1 or rec.rejected_callbacks or answers > 1 or len(live_results) > 1:
            twice += 1
        elif result:
            granted += 1
        elif answers == 1:
            refused += 1
        elif is_failure(rec):
            failed += 1
        else:
            lost += 1
    posted = Counter(job for m in server.messages.values() if is_result(m) and (job := job_of(m)) is not None)
    return {
        "granted": granted,
        "refused": refused,
        "failed": failed,
        "lost": lost,
        "answered_twice": twice + sum(1 for n in posted.values() if n > 1),
    }


async def _pace(start: float, at: float) -> None:
    """Hold the load generator until `at` seconds after `start` (pacing the burst, not waiting on work)."""
    delay = start + at - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


async def run_load(
    config: LoadConfig, root: Path, cache_dir: Path, *, base_env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Run the burst and the soak against a fresh bot process in `root` (its environment based on
    `base_env`, default this process's); return the figures."""
    from testkit.bot_process import BotProcess
    from testkit.discord_loopback import DiscordLoopback

    async with DiscordLoopback() as server:
        burst_guild = server.add_guild("burst")
        burst_channel = server.add_channel(burst_guild, "art")
        members = [server.add_member(burst_guild, f"m{i}") for i in range(config.members)]
        soak_guild = server.add_guild("soak")
        soak_channel = server.add_channel(soak_guild, "art")
        admin = server.add_member(soak_guild, "admin", admin=True)
        soakers = [server.add_member(soak_guild, f"s{i}") for i in range(max(1, config.concurrency))]

        env = {
            "IMAGES_PER_HOUR": str(config.per_hour),
            "IMAGES_PER_DAY": "unlimited",
            "MAX_QUEUED": "unlimited",
            "COOLDOWN_SECONDS": "0",
            "LOG_LEVEL": "WARNING",
        }
        t0 = time.perf_counter()
        proc = await BotProcess.start(server, root, cache_dir, env=env, base_env=base_env)
        start_s = time.perf_counter() - t0
        try:
            figures = await _burst(server, proc, config, burst_guild, burst_channel, members)
            burst_records = figures.pop("_records")
            figures.update(await _soak(server, proc, config, soak_guild, soak_channel, admin, soakers))
            again = outcome_counts(burst_records, server)
            figures["lost"] = again["lost"]
            figures["answered_twice"] = again["answered_twice"]
            figures["failed"] = again["failed"]
            figures["bot_errors_logged"] = proc.log_text().count(" ERROR ")
        finally:
            await proc.stop()
        figures["bot_start_s"] = round(start_s, 2)
        return figures


async def _burst(
    server: Any, proc: Any, config: LoadConfig, guild: Any, channel: Any, members: Sequence[Any]
) -> dict[str, Any]:
    records = []
    count = config.interactions
    start = time.perf_counter()
    for i in range(count):
        await _pace(start, i * config.window_s / count)
        member = members[i % len(members)]
        prompt = f"burst {i}: a lighthouse at dusk --steps {config.steps} --seed {i}"
        records.append(
            server.invoke("imagine", {"prompt": prompt}, guild=guild, channel=channel, member=member)
        )
    issued_s = time.perf_counter() - start
    await server.wait_for(lambda: all(_settled(r) for r in records), config.timeout_s)
    settled_s = time.perf_counter() - start
    latencies = [r.ack_latency for r in records if r.acknowledged and r.ack_latency is not None]
    counts = outcome_counts(records, server)
    return {
        "_records": records,
        "interactions": count,
        "members": len(members),
        "burst_issued_s": round(issued_s, 2),
        "burst_settled_s": round(settled_s, 2),
        "acknowledged": len(latencies),
        "acks_over_3s": sum(1 for r in records if not r.acknowledged or (r.ack_latency or 0) > ACK_LIMIT_S),
        "ack_p50_ms": round(percentile(latencies, 50) * 1000, 1) if latencies else None,
        "ack_p99_ms": round(percentile(latencies, 99) * 1000, 1) if latencies else None,
        "ack_max_ms": round(max(latencies) * 1000, 1) if latencies else None,
        "burst_rss_mib": round(proc.rss_mib(), 1),
        **counts,
    }


async def _soak(
    server: Any,
    proc: Any,
    config: LoadConfig,
    guild: Any,
    channel: Any,
    admin: Any,
    members: Sequence[Any],
) -> dict[str, Any]:
    lift = server.invoke(
        "limits",
        {"images_per_hour": 1_000_000, "images_per_day": 1_000_000, "max_queued": 1_000},
        subcommand="set",
        guild=guild,
        channel=channel,
        member=admin,
    )
    await lift.wait_final(lambda r: bool(live_ephemeral(r)), timeout=config.timeout_s)
    baseline_after = max(1, min(config.baseline_after, config.jobs))
    done = 0
    failures = 0
    rss_base: float | None = None
    next_index = 0
    start = time.perf_counter()

    async def worker(member: Any) -> None:
        nonlocal done, failures, rss_base, next_index
        while next_index < config.jobs:
            i = next_index
            next_index += 1
            prompt = f"soak {i}: a red fox in the snow --steps {config.steps} --seed {i}"
            rec = server.invoke("imagine", {"prompt": prompt}, guild=guild, channel=channel, member=member)
            await rec.wait_final(_settled, timeout=config.timeout_s)
            if not is_result(rec.original):
                failures += 1  # a failure message (or a refusal): counted, not waited on forever
            done += 1
            if done == baseline_after:
                rss_base = proc.rss_mib()

    await asyncio.gather(*(worker(m) for m in members))
    elapsed = time.perf_counter() - start
    rss_end = proc.rss_mib()
    assert rss_base is not None
    return {
        "jobs": config.jobs,
        "jobs_failed": failures,
        "jobs_per_s": round(config.jobs / elapsed, 2),
        "rss_baseline_after_jobs": baseline_after,
        "rss_after_baseline_mib": round(rss_base, 1),
        "rss_after_all_mib": round(rss_end, 1),
        "rss_growth_mib": round(rss_end - rss_base, 1),
    }


def parse_args(argv: Sequence[str]) -> LoadConfig:
    """Command-line flags → LoadConfig."""
    d = LoadConfig()
    p = argparse.ArgumentParser(prog="python -m bench load", description=__doc__.split("\n\n")[0])
    p.add_argument("--interactions", type=int, default=d.interactions)
    p.add_argument("--members", type=int, default=d.members)
    p.add_argument(
        "--window",
        dest="window_s",
        metavar="WINDOW",
        type=float,
        default=d.window_s,
        help="seconds the burst is spread over",
    )
    p.add_argument("--per-hour", type=int, default=d.per_hour, help="the burst guild's hourly image limit")
    p.add_argument("--jobs", type=int, default=d.jobs)
    p.add_argument("--concurrency", type=int, default=d.concurrency)
    p.add_argument("--baseline-after", type=int, default=None, help="jobs before the RSS baseline")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--timeout", dest="timeout_s", metavar="TIMEOUT", type=float, default=d.timeout_s)
    a = p.parse_args(list(argv))  # one attribute per LoadConfig field, by name
    if a.baseline_after is None:
        a.baseline_after = min(d.baseline_after, max(1, a.jobs // 2))
    return LoadConfig(**vars(a))


def main(argv: Sequence[str], settings: BenchSettings) -> None:
    """Run the load benchmark and report its figures."""
    config = parse_args(argv)
    from generation.pipelines.tiny import ensure_tiny_model

    with tempfile.TemporaryDirectory(prefix="imagine-load-") as tmp:
        cache = Path(tmp) / "cache"
        ensure_tiny_model(cache)
        figures = asyncio.run(run_load(config, Path(tmp) / "bot", cache, base_env=settings.environ))
    report("load", figures, list(argv), results_path=settings.results_path)
