# mypy: disable-error-code="no-untyped-call"
"""`python -m bench service` runs end to end (tiny sizes, in a subprocess, as a user runs it) and prints
its figures as one JSON object on the last line; plus the benchmarks' pure helpers. The GPU run's dry
run is tests/test_bench_gpu.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from testkit import REPO_ROOT
from tests.bench_cli import run_bench


def _run_bench(args: list[str], results: Path, cache: Path) -> dict[str, Any]:
    return run_bench(args, results, timeout=240, IMAGINE_CACHE=str(cache))


def test_service_benchmark_prints_overhead_and_loop_stall(tmp_path: Path, tiny_cache_dir: Path) -> None:
    results = tmp_path / "RESULTS.md"
    real_results = REPO_ROOT / "bench" / "RESULTS.md"
    before = real_results.read_text() if real_results.exists() else None
    figures = _run_bench(["service", "--jobs", "3", "--rounds", "1"], results, tiny_cache_dir)
    for key in (
        "overhead_pct",
        "loop_stall_p99_ms",
        "bare_jobs_per_s",
        "service_jobs_per_s",
        "batched_jobs_per_s",
    ):
        assert key in figures, key
    assert figures["jobs"] == 3 and figures["rounds"] == 1
    assert figures["bare_jobs_per_s"] > 0 and figures["service_jobs_per_s"] > 0
    assert 0 <= figures["loop_stall_p50_ms"] <= figures["loop_stall_p99_ms"] <= figures["loop_stall_max_ms"]
    assert figures["events_per_job"] >= 2  # Started and Progress at least (unread Progress coalesce)
    text = results.read_text()
    assert "## service" in text and "`python -m bench service --jobs 3 --rounds 1`" in text
    assert '"overhead_pct"' in text
    if before is not None:  # BENCH_RESULTS kept the test out of the committed results
        assert "--jobs 3 --rounds 1`" not in real_results.read_text()[len(before) :]


def test_service_prompts_benchmark_compares_weighted_and_long_with_plain(
    tmp_path: Path, tiny_cache_dir: Path
) -> None:
    results = tmp_path / "RESULTS.md"
    figures = _run_bench(["service", "--prompts", "--jobs", "2", "--rounds", "2"], results, tiny_cache_dir)
    assert figures["jobs"] == 2 and figures["rounds"] == 2
    for name in ("plain", "weighted", "long"):
        assert figures[f"{name}_ms_per_job"] > 0
    for name in ("weighted", "long"):
        low, high = figures[f"{name}_vs_plain_ci95"]
        assert low <= figures[f"{name}_vs_plain"] <= high
    assert "## service-prompts" in results.read_text()


def test_service_edits_benchmark_compares_batched_edit_jobs_with_one_by_one(
    tmp_path: Path, tiny_cache_dir: Path
) -> None:
    results = tmp_path / "RESULTS.md"
    figures = _run_bench(["service", "--edits", "--jobs", "2", "--rounds", "2"], results, tiny_cache_dir)
    assert figures["jobs"] == 2 and figures["from_pipe_added_bytes"] == 0
    for name in ("zoom_out_2x", "vary_subtle", "pan_left"):
        low, high = figures[f"{name}_batched_speedup_ci95"]
        assert low <= figures[f"{name}_batched_speedup"] <= high
        assert figures[f"{name}_batched_s"] > 0 and figures[f"{name}_sequential_s"] > 0
    assert figures["pan_left_size"] == "96x64"
    assert "## service-edits" in results.read_text()


def test_service_switching_benchmark_measures_model_and_adapter_switches(
    tmp_path: Path, tiny_cache_dir: Path
) -> None:
    results = tmp_path / "RESULTS.md"
    figures = _run_bench(["service", "--switching", "--jobs", "2", "--rounds", "1"], results, tiny_cache_dir)
    assert figures["jobs"] == 2 and figures["rounds"] == 1
    for kind in ("one", "two", "two_one_fits", "adapters_none", "adapters_same", "adapters_alternating"):
        assert figures[f"{kind}_images_per_s"] > 0, kind
    assert figures["resident_after_two"] == 2  # no budget: both models stay loaded
    assert 0 < figures["switches_per_job"] <= 1  # room for one: alternating jobs reload
    assert (
        figures["adapter_switch_ms"] > 0 and figures["adapter_load_ms"] > 0 and figures["tiny_engine_mib"] > 0
    )
    assert "## service-switching" in results.read_text()


def test_service_families_benchmark_measures_each_familys_overhead_and_setup(
    tmp_path: Path, tiny_cache_dir: Path
) -> None:
    results = tmp_path / "RESULTS.md"
    args = ["service", "--families", "--only", "tiny,tiny-flux", "--jobs", "1", "--rounds", "2"]
    figures = _run_bench(args, results, tiny_cache_dir)
    assert set(figures["families"]) == {"tiny", "tiny-flux"}
    flux = figures["families"]["tiny-flux"]
    assert (flux["family"], flux["size"]) == ("flux", 128)
    assert flux["setup_ms"] > 0 and flux["bare_ms_per_job"] > 0 and flux["service_ms_per_job"] > 0
    assert figures["worst_overhead_pct"] == max(f["overhead_pct"] for f in figures["families"].values())
    assert "## service-families" in results.read_text()


def test_flops_per_image_counts_guidance_passes_and_parts() -> None:
    from bench.archs import get_arch
    from bench.gpu.flops import Flops

    flops = Flops(unet_call=100, text=10, vae_decode=1000)
    sd15 = get_arch("sd15")  # 20 steps, guidance 7: two UNet passes a step, prompt and negative encoded
    assert flops.per_image(sd15) == 100 * 20 * 2 + 10 * 2 + 1000
    turbo = get_arch("sd-turbo")  # one step, no guidance
    assert flops.per_image(turbo) == 100 + 10 + 1000


def test_counted_unet_flops_match_the_known_size_of_sd15() -> None:
    """One SD 1.5 UNet pass at 512² is about 0.8 TFLOP (≈ 400 G multiply-adds): counted on meta tensors."""
    import torch
    from diffusers import UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    from bench.archs import SD15

    with torch.device("meta"):
        unet: Any = UNet2DConditionModel(**SD15.unet)
        sample = torch.randn(1, 4, 64, 64)
        hidden = torch.randn(1, 77, 768)
        with torch.no_grad(), FlopCounterMode(display=False) as mode:
            unet(sample, torch.tensor([999]), encoder_hidden_states=hidden)
    assert 0.6e12 < mode.get_total_flops() < 1.0e12


def test_optimise_parsing() -> None:
    from generation.pipelines.options import parse_optimise

    options = parse_optimise("channels_last,compile")
    assert options.channels_last and options.compile_unet and not options.fuse_qkv
    assert not parse_optimise("none").channels_last
    with pytest.raises(ValueError):
        parse_optimise("turbo_mode")


def test_percentile_by_nearest_rank() -> None:
    from bench.stats import percentile

    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) in (50.0, 51.0)
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([], 99) == 0.0


def test_median_confidence_interval_uses_binomial_ranks() -> None:
    from bench.stats import median_ci95

    # n = 40: P(Binomial(40, 1/2) <= 13) = 0.0192 (two tails 0.038 <= 0.05), <= 14 gives 0.0403 (0.081)
    assert median_ci95([float(v) for v in range(40)]) == (13.0, 26.0)
    assert median_ci95([float(v) for v in range(6)]) == (0.0, 5.0)  # 1 - 2/64 = 0.969
    assert median_ci95([3.0, 1.0, 2.0]) == (1.0, 3.0)  # too few for 95%: the whole range
    shuffled = [5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0, 4.0, 6.0, 0.0]
    low, high = median_ci95(shuffled)
    assert low <= 4.5 <= high and (low, high) == (1.0, 8.0)


def _section(name: str, date: str, command: str, machine: str, figures: dict[str, Any]) -> str:
    import json

    return (
        f"## {name} — {date}\n\n- command: `{command}`\n- commit: c{date[-2:]}\n- machine: {machine}\n\n"
        f"```json\n{json.dumps(figures)}\n```\n\n"
    )


def test_the_results_table_shows_each_commands_latest_section_and_keeps_history() -> None:
    from bench.report import refresh_table

    cpu = "AMD EPYC, 2 cores, 23.5 GiB RAM, GPU: none"
    gpu = "Intel Xeon, 16 cores, 128 GiB RAM, GPU: NVIDIA H200"
    limits = "python -m bench limits"
    history = (
        "# Benchmark results\n\nintro\n\n"
        + _section("limits", "2026-01-01 00:00:01", limits, cpu, {"reservations_per_s": 1.0})
        + _section("gpu", "2026-01-02 00:00:02", "python -m bench gpu", gpu, {"service_vs_plain": 2.5})
        + _section("limits", "2026-01-03 00:00:03", limits, cpu, {"reservations_per_s": 3.0})
    )
    text = refresh_table(history)
    table = text[: text.index("History")]
    assert "reservations_per_s 3.0" in table and "reservations_per_s 1.0" not in table
    assert "| GPU: NVIDIA H200 | c02 |" in table and "CPU only (AMD EPYC" in table
    assert table.count("| `python -m bench limits` |") == 1
    assert text.endswith(history[history.index("## limits") :])  # every section kept, in order
    assert refresh_table(text) == text  # rebuilt in place, not added twice
