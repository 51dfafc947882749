"""The load benchmark, small: a burst of `/imagine` at the real bot process through the loopback
Discord, then a run of jobs. Every interaction acknowledged in time, each answered exactly once,
some granted and some refused, the bot's memory flat over the run."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from bench.load import LoadConfig, percentile, run_load
from tests.fixtures_generation import tiny_request


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0


async def test_small_load_run(tmp_path: Path, tiny_cache_dir: Path) -> None:
    config = LoadConfig(
        interactions=40, members=10, window_s=2.0, per_hour=3, jobs=100, baseline_after=50, timeout_s=60.0
    )
    figures = await run_load(config, tmp_path / "bot", tiny_cache_dir)
    assert figures["interactions"] == 40 and figures["acknowledged"] == 40
    assert figures["acks_over_3s"] == 0 and figures["ack_max_ms"] < 3000
    assert figures["lost"] == 0 and figures["answered_twice"] == 0
    # 10 members × 4 requests against 3 images per hour: 30 granted, 10 refused.
    assert (figures["granted"], figures["refused"]) == (30, 10)
    assert figures["jobs"] == 100 and figures["jobs_failed"] == 0
    assert figures["rss_growth_mib"] < 50
    assert figures["bot_errors_logged"] == 0


def test_count_tokens_beside_a_running_batch(tiny_engine: Any) -> None:
    """Found by the load run: `/imagine` counts prompt tokens on the event loop while the worker runs
    a batch. Sharing one tokenizer (which keeps padding state) made ~4% of batches fail with a
    tensor size mismatch. The engine now counts with its own tokenizer."""
    stop = threading.Event()

    def count() -> None:
        while not stop.is_set():
            tiny_engine.count_tokens("a prompt counted while another one is generated --steps 2")

    counter = threading.Thread(target=count)
    counter.start()
    try:
        for seed in range(100):
            (images,) = tiny_engine.run_batch([tiny_request(steps=2, seeds=(seed,))], [None], lambda *_: True)
            assert len(images) == 1
    finally:
        stop.set()
        counter.join()
