"""`python -m bench edits` runs end to end (tiny sizes, in a subprocess) and reports its figures."""

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
