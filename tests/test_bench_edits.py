"""`python -m bench edits` and `python -m bench service --edits --families` run end to end (tiny sizes, in a
subprocess) and report their figures."""

from __future__ import annotations

from pathlib import Path

from tests.bench_cli import run_bench


def test_edits_benchmark_reports_speedups_and_no_added_weights(tmp_path: Path, tiny_cache_dir: Path) -> None:
    results = tmp_path / "RESULTS.md"
    args = ["edits", "--requests", "2", "--rounds", "1"]
    figures = run_bench(args, results, timeout=240, IMAGINE_CACHE=str(tiny_cache_dir))
    assert (figures["requests"], figures["rounds"]) == (2, 1)
    assert figures["from_pipe_added_bytes"] == 0
    for kind in ("zoom_out_2x", "vary_subtle"):
        assert figures[f"{kind}_batched_s"] > 0 and figures[f"{kind}_sequential_s"] > 0
        assert figures[f"{kind}_speedup"] > 0
    assert "## edits" in results.read_text()


def test_service_edits_families_runs_on_tiny_flux_at_its_native_size(
    tmp_path: Path, tiny_cache_dir: Path
) -> None:
    results = tmp_path / "RESULTS.md"
    args = ["service", "--edits", "--families", "--only", "tiny-flux", "--jobs", "2", "--rounds", "1"]
    figures = run_bench(args, results, timeout=300, IMAGINE_CACHE=str(tiny_cache_dir))
    assert (figures["jobs"], figures["rounds"]) == (2, 1)
    assert set(figures["families"]) == {"tiny-flux"} and figures["from_pipe_added_bytes"] == 0
    flux = figures["families"]["tiny-flux"]
    assert (flux["family"], flux["size"], flux["size_step"]) == ("flux", 128, 16)
    assert flux["from_pipe_added_bytes"] == 0
    for kind in ("zoom_out_2x", "vary_subtle", "pan_left"):
        assert flux[f"{kind}_batched_speedup"] > 0
        assert flux[f"{kind}_batched_s"] > 0 and flux[f"{kind}_sequential_s"] > 0
    assert (flux["zoom_out_2x_size"], flux["pan_left_size"]) == ("128x128", "192x128")
    assert "## service-edits-families" in results.read_text()
