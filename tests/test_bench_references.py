"""`python -m bench service --references` runs end to end (in a subprocess, as a user runs it) and
reports sane figures: a reference's cost, the encoder's per picture, batched reference jobs in one
pipeline call, and the adapter's embedding counters exactly as the sequence of jobs makes them."""

from __future__ import annotations

from pathlib import Path

from tests.bench_cli import run_bench


def test_service_references_benchmark_reports_cost_encoder_cache_and_batching(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    jobs, rounds = 3, 2
    args = ["service", "--references", "--jobs", str(jobs), "--rounds", str(rounds)]
    figures = run_bench(args, results, timeout=240, IMAGINE_CACHE=str(tmp_path / "cache"))
    assert (figures["model"], figures["jobs"], figures["rounds"]) == ("tiny", jobs, rounds)
    assert (figures["size"], figures["steps"], figures["reference_weight"]) == (64, 4, 100)
    assert figures["adapter_load_s"] > figures["adapter_load_only_s"] > 0  # the load is part of the call
    for name in ("plain_before_adapter_s", "plain_s", "reference_s", "new_picture_s", "cached_picture_s"):
        assert 0 < figures[name] < 10, name
    for name in ("reference_cost_ratio", "batched_speedup", "encoder_ms_per_picture"):
        low, high = figures[f"{name}_ci95"]
        assert low <= figures[name] <= high, name
    assert 0.5 < figures["reference_cost_ratio"] < 3
    assert -50 < figures["encoder_ms_per_picture"] < 1000 and figures["encoder_pairs"] == rounds * 4
    assert figures["batched_calls_per_pass"] == 1  # the jobs in one pipeline call
    assert figures["sequential_calls_per_pass"] == jobs
    assert figures["batched_s"] > 0 and figures["batched_speedup"] > 0.8

    # The adapter's counters, exactly: each phase's change is what its sequence of jobs makes.
    pairs = rounds * 4
    expected = {
        "first_call": (1, 0),  # the first reference ever: its picture encoded
        "cost": (0, 2 + rounds * 3),  # one picture, already encoded: 2 warm-up calls, 3 a round
        "encoder": (1 + pairs, pairs),  # the seen picture once, then a new and a seen one a pair
        "passes": (2 * 2 + 2 * rounds * jobs, 0),  # every pass's pictures new (warm-ups: 2 jobs each)
        "sequence": (jobs, jobs),  # 2 × jobs jobs over jobs distinct pictures: each encoded once
    }
    embeds = figures["embeds"]
    assert {phase: (embeds[phase]["computed"], embeds[phase]["cached"]) for phase in embeds} == expected
    assert figures["embeds_exact"] is True
    assert figures["embeds_computed"] == sum(c for c, _ in expected.values())
    assert figures["embeds_cached"] == sum(c for _, c in expected.values())

    text = results.read_text()
    assert "## service-references" in text
    assert f"`python -m bench service --references --jobs {jobs} --rounds {rounds}`" in text
    assert "encoder_ms_per_picture" in text.split("<!-- latest figures: end -->")[0]  # a headline
