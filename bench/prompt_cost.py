"""`python -m bench service --prompts`: what the weighted and long-prompt path costs against the
plain one, on the `tiny` model (CPU), through `DiffusersEngine.run_batch` one request at a time.

Three variants of the same `--jobs` prompts and seeds: **plain** (diffusers encodes the prompt),
**weighted** (A1111 emphasis and a negative multi-prompt part: our encoder, one window) and
**long** (three 75-token windows for the prompt and the negative prompt). Each round runs the three
back to back, in a rotating order; the figures are the medians of the per-round ratios to plain,
with a 95% confidence interval (`bench.stats.median_ci95`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from generation.prompts.request import GenerationRequest

LONG_PROMPT = "a red fox in the snow at dusk, soft light, pine trees, " * 4  # ~170 tokens on tiny


def variants(requests: Sequence[GenerationRequest]) -> dict[str, list[GenerationRequest]]:
    """The plain requests and their weighted and long twins (same seeds and shapes)."""
    return {
        "plain": list(requests),
        "weighted": [
            replace(r, prompt=f"a (red:1.3) fox [in the snow] {i}::2 blurry::-0.5", prompt_windows=1)
            for i, r in enumerate(requests)
        ],
        "long": [
            replace(r, prompt=f"{LONG_PROMPT}{i}", negative_prompt=LONG_PROMPT, prompt_windows=3)
            for i, r in enumerate(requests)
        ],
    }


def _seconds(engine: Any, requests: Sequence[GenerationRequest]) -> float:
    start = time.perf_counter()
    for r in requests:
        engine.run_batch([r], [None], lambda _step, _total, _preview: True)
    return time.perf_counter() - start


def run(requests: Sequence[GenerationRequest], rounds: int, cache_dir: Path) -> dict[str, Any]:
    """The figures of the comparison."""
    from bench.stats import median_ci95
    from generation.pipelines.engine import DiffusersEngine
    from generation.pipelines.loading import load_pipeline

    engine = DiffusersEngine(load_pipeline("tiny", "cpu", cache_dir=cache_dir))
    kinds = variants(requests)
    names = list(kinds)
    for name in names:  # warm every path once (first calls allocate)
        _seconds(engine, kinds[name][:1])
    times: dict[str, list[float]] = {name: [] for name in names}
    for k in range(rounds):
        for name in names[k % 3 :] + names[: k % 3]:
            times[name].append(_seconds(engine, kinds[name]))
    figures: dict[str, Any] = {"jobs": len(requests), "rounds": rounds}
    for name in names:
        figures[f"{name}_ms_per_job"] = round(statistics.median(times[name]) * 1000 / len(requests), 2)
    for name in ("weighted", "long"):
        ratios = [t / p for t, p in zip(times[name], times["plain"], strict=True)]
        low, high = median_ci95(ratios)
        figures[f"{name}_vs_plain"] = round(statistics.median(ratios), 3)
        figures[f"{name}_vs_plain_ci95"] = [round(low, 3), round(high, 3)]
    return figures
