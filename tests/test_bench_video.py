"""`python -m bench service --video` runs end to end (one clip a round, in a subprocess, as a user runs
it) and reports sane figures: clips made, encoded and fitted under every upload limit."""

from __future__ import annotations

from pathlib import Path

from tests.bench_cli import run_bench


def test_service_video_benchmark_reports_frames_per_s_encode_time_and_fitted_sizes(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    args = ["service", "--video", "--jobs", "1", "--rounds", "2"]
    figures = run_bench(args, results, timeout=240, IMAGINE_CACHE=str(tmp_path / "cache"))
    assert (figures["model"], figures["jobs"], figures["rounds"]) == ("tiny-video", 1, 2)
    assert (figures["size"], figures["frames"], figures["fps"]) == ("64x48", 9, 16.0)  # tiny-video's clip
    assert figures["video_s"] == 9 / 16
    assert figures["frames_per_s"] > 0 and figures["engine_frames_per_s"] > 0
    assert abs(figures["frames_per_s"] * figures["clip_s"] - 9) < 0.01  # frames / seconds per clip
    low, high = figures["service_overhead_pct_ci95"]
    assert low <= figures["service_overhead_pct"] <= high
    assert figures["encode_ms"] > 0 and 0 < figures["encode_s_per_video_s"] < 10
    assert figures["mp4_bytes"] > 0 and figures["fits_every_limit"] is True
    fits = figures["fit"]
    assert set(fits) == {"10mib", "64kib", "tight"}
    for name, fit in fits.items():
        assert fit["before_bytes"] == figures["mp4_bytes"], name
        assert fit["under_limit"] and fit["after_bytes"] <= fit["limit_bytes"], name
        assert fit["frames"] == 9, name  # fitting keeps every frame
    assert fits["10mib"]["limit_bytes"] == 10 * 2**20 and not fits["10mib"]["reencoded"]
    assert fits["64kib"]["after_bytes"] == figures["mp4_bytes"]  # a tiny clip is already under 64 KiB
    tight = fits["tight"]  # 90% of the clip: re-encoded to fit
    assert tight["reencoded"] and tight["after_bytes"] < tight["before_bytes"] and tight["fit_ms"] > 0
    text = results.read_text()
    assert "## service-video" in text and "`python -m bench service --video --jobs 1 --rounds 2`" in text
    assert "frames_per_s" in text.split("<!-- latest figures: end -->")[0]  # a headline in the table
