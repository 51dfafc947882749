"""`python -m bench encode` runs end to end (tiny sizes, in a subprocess, as a user runs it), checks
that every variant encodes the same bytes, and reports its figures as one JSON object."""

from __future__ import annotations

from pathlib import Path

from bench.encode import bench_request, encode_all, noise_images
from generation.media.compose import read_parameters
from tests.bench_cli import run_bench


def test_encode_benchmark_reports_serial_thread_and_process_figures(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    argv = ["encode", "--size", "32", "--counts", "2", "--repeats", "1"]
    figures = run_bench(argv, results, timeout=120)
    assert figures["identical_bytes"] is True and figures["workers"] >= 1
    for key in ("n2_serial_ms", "n2_pool_ms", "n2_processes_ms", "n2_zlib_threads_speedup"):
        assert figures[key] > 0, key
    assert "## encode" in results.read_text()


def test_encode_all_keeps_order_and_seeds_on_a_pool() -> None:
    from concurrent.futures import ThreadPoolExecutor

    images = noise_images(3, 16)
    request = bench_request(16, [5, 6, 7])
    serial = encode_all(images, request, None)
    with ThreadPoolExecutor(2) as pool:
        assert encode_all(images, request, pool) == serial
    assert ["Seed: 5" in (read_parameters(png) or "") for png in serial] == [True, False, False]
    assert len(set(serial)) == 3
