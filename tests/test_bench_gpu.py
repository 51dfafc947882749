"""The GPU run (`bench/gpu-run.sh` → `python -m bench gpu`): its dry run walks every step on the CPU
with the tiny stand-in architectures and records each figure; its results file, time limits, step
selection and summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from bench.gpu import STEPS
from bench.gpu.plan import DRY
from bench.gpu.profile import op_kind
from bench.gpu.records import Budget, ResultsFile, last_run, read_records
from bench.gpu.steps_service import variant_names
from bench.gpu.summary import summarise
from bench.gpu.timing import OverLimit, within
from testkit import REPO_ROOT
from tests.bench_cli import run_bench


def _gpu_run(
    args: list[str], tmp_path: Path, cache: Path, timeout: float
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "BENCH_RESULTS": str(tmp_path / "RESULTS.md"),
        "IMAGINE_CACHE": str(cache),
    }
    return subprocess.run(
        ["bash", str(REPO_ROOT / "bench" / "gpu-run.sh"), *args],
        cwd=tmp_path,  # the script finds the repository itself
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.slow
def test_the_dry_run_walks_every_step_and_records_each_figure(tmp_path: Path, tiny_cache_dir: Path) -> None:
    results = tmp_path / "gpu.jsonl"
    proc = _gpu_run(["--dry-run", "--results", str(results)], tmp_path, tiny_cache_dir, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = read_records(results)
    steps = [r for r in records if r["step"] == "step"]
    assert [(r["name"], r["status"]) for r in steps] == [(name, "ok") for name, _, _ in STEPS]
    assert all(r["status"] == "ok" for r in records), [r for r in records if r["status"] != "ok"]
    times = [r["t_s"] for r in records]
    assert times == sorted(times)  # written in the order measured
    counts: dict[str, int] = {}
    for record in records:
        counts[record["step"]] = counts.get(record["step"], 0) + 1
    expected = {
        "env": 1,
        "sd15_load": 1,
        "sd15_batch": len(DRY.sd15_batches),
        "sd15_single": 1,
        "service": 1,
        "turbo_batch": len(DRY.turbo_batches),
        "sdxl_batch": len(DRY.sdxl_batches) + 1,  # diffusers' upcast at each size, the project's VAE once
        "dit_build": 2,  # Flux.1-schnell, SD 3.5 medium
        "flux_schnell_batch": len(DRY.flux_batches),
        "sd35_batch": len(DRY.sd35_batches),
        "video_build": 1,
        "video_clip": 1,
        "inpaint_batch": 1,
        "sd15_flops": 1,
        "safety_checker": 1,
        "vae_decode": 2,
        "profile": 1,
        "variant": len(variant_names()),
    }
    assert {k: counts.get(k, 0) for k in expected} == expected
    by_step = {r["step"]: r for r in records}
    assert by_step["env"]["gpu"] is None and "not a GPU figure" in by_step["env"]["note"]
    for record in records:
        if "images_per_s" in record:
            assert record["images_per_s"] > 0 and record["peak_memory_gib"] > 0, record
            assert record.get("nan_images", 0) == 0, record
    assert by_step["sd15_single"]["denoise_steps_per_s"] > 0
    assert by_step["service"]["service_vs_plain"] > 0
    assert set(by_step["profile"]["unet_time_by_kind"]) >= {"convolution", "matmul"}
    assert [r["images"] for r in records if r["step"] == "sd15_batch"] == list(DRY.sd15_batches)
    sdxl = [r for r in records if r["step"] == "sdxl_batch"]
    assert [r["images"] for r in sdxl[: len(DRY.sdxl_batches)]] == list(DRY.sdxl_batches)
    for step, arch, batches, denoising_steps in (
        ("flux_schnell_batch", "flux-schnell-tiny", DRY.flux_batches, 4),
        ("sd35_batch", "sd35-medium-tiny", DRY.sd35_batches, 20),
    ):
        dit = [r for r in records if r["step"] == step]
        assert [r["images"] for r in dit] == list(batches)
        for record in dit:
            assert record["arch"] == arch and record["size"] == 64 and record["steps"] == denoising_steps, (
                record
            )
            assert record["dtype"] == "float32" and record["t5_tokens"] in (256, 512), record
            assert record["images_per_s"] > 0 and record["peak_memory_gib"] > 0, record
            assert record["activation_estimate_gib"] > 0 and record["black_images"] == 0, record
            assert "weights_gib" in record and record["nan_images"] == 0, record
    builds = {r["arch"]: r for r in records if r["step"] == "dit_build"}
    assert set(builds) == {"flux-schnell-tiny", "sd35-medium-tiny"}
    assert builds["flux-schnell-tiny"]["pipeline"] == "FluxPipeline"
    assert set(builds["sd35-medium-tiny"]["parameters"]) == {
        "transformer",
        "vae",
        "text_encoder",
        "text_encoder_2",
        "text_encoder_3",
    }
    assert all(b["weights_gib"] > 0 and b["t5_layers"] == 2 for b in builds.values())
    assert any("20 steps" in note for note in builds["sd35-medium-tiny"]["shortcuts"])
    video_build, clip = by_step["video_build"], by_step["video_clip"]
    assert video_build["pipeline"] == "WanImageToVideoPipeline" and video_build["weights_gib"] > 0
    assert set(video_build["parameters"]) == {"transformer", "vae", "text_encoder", "image_encoder"}
    assert (clip["width"], clip["height"], clip["frames"], clip["fps"]) == (64, 48, 9, 16)
    assert (clip["timed_steps"], clip["model_steps"]) == (DRY.video_steps, 50)
    assert clip["clip_s"] > clip["call_s"] > 0 and clip["step_s"] > 0  # 48 steps extrapolated
    assert clip["frames_per_s"] * clip["clip_s"] == pytest.approx(9, rel=1e-3)  # records keep 4 places
    assert clip["peak_memory_gib"] > 0
    assert clip["nan_images"] == 0 and clip["black_images"] == 0
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["wan_i2v_frames_per_s"] == clip["frames_per_s"]
    assert summary["not_done"] == [] and "not a GPU figure" in summary["note"]
    assert set(summary["sd15_images_per_s"]) == {str(b) for b in DRY.sd15_batches}
    for name, batches in (("flux_schnell", DRY.flux_batches), ("sd35_medium", DRY.sd35_batches)):
        assert set(summary[f"{name}_images_per_s"]) == {str(b) for b in batches}
        assert set(summary[f"{name}_peak_memory_gib"]) == {str(b) for b in batches}
    assert "## gpu" in (tmp_path / "RESULTS.md").read_text()
    # a results file fetched from another machine: the same summary, reported afresh
    again = run_bench(["gpu", "--report", str(results)], tmp_path / "AGAIN.md", timeout=120)
    assert again == summary
    assert f"`python -m bench gpu --report {results}`" in (tmp_path / "AGAIN.md").read_text()


def test_a_spent_budget_skips_steps_and_says_why(tmp_path: Path) -> None:
    import torch

    from bench.gpu.cli import run_steps
    from bench.gpu.context import Run

    budget = Budget(0)
    results = ResultsFile(tmp_path / "gpu.jsonl", budget)
    run = Run(DRY, "cpu", torch.float32, results, budget, tmp_path)
    assert run_steps(run, {"env", "sd15_batches"}) is True
    results.close()
    steps = [r for r in read_records(tmp_path / "gpu.jsonl") if r["step"] == "step"]
    assert [(r["name"], r["status"]) for r in steps] == [("env", "skipped"), ("sd15_batches", "skipped")]
    assert all("s left" in r["reason"] for r in steps)
    assert run.pipes == {} and not (tmp_path / "sd15").exists()  # nothing was built


def test_a_failing_step_is_recorded_and_the_next_one_runs(tmp_path: Path) -> None:
    import torch

    from bench.gpu.cli import run_steps
    from bench.gpu.context import Run

    budget = Budget(60)
    results = ResultsFile(tmp_path / "gpu.jsonl", budget)
    run = Run(DRY, "cpu", torch.float32, results, budget, tmp_path)
    (tmp_path / "sd15").mkdir()
    (tmp_path / "sd15" / "model_index.json").write_text("{not json")  # a broken saved model
    assert run_steps(run, {"sd15_batches", "flops"}) is True
    results.close()
    steps = {r["name"]: r for r in read_records(tmp_path / "gpu.jsonl") if r["step"] == "step"}
    assert steps["sd15_batches"]["status"] == "error" and steps["sd15_batches"]["error"]
    assert steps["flops"]["status"] == "ok"  # built its own SD 1.5 in memory


def test_a_transformer_batch_that_would_overrun_the_budget_is_skipped_and_the_model_dropped(
    tmp_path: Path,
) -> None:
    import torch

    from bench.gpu.context import Run
    from bench.gpu.steps_dit import flux_schnell

    budget = Budget(0)  # the step itself was started: its first batch runs, the next one cannot fit
    results = ResultsFile(tmp_path / "gpu.jsonl", budget)
    run = Run(DRY, "cpu", torch.float32, results, budget, tmp_path)
    flux_schnell(run)
    results.close()
    records = read_records(tmp_path / "gpu.jsonl")
    assert [(r["step"], r.get("images"), r["status"]) for r in records] == [
        ("dit_build", None, "ok"),
        ("flux_schnell_batch", 1, "ok"),
        ("flux_schnell_batch", 2, "skipped"),
    ]
    assert "s needed" in records[-1]["reason"]
    assert run.pipes == {}  # dropped, for the next step's memory


def test_the_transformer_architectures_have_the_public_models_sizes() -> None:
    import torch

    from bench.archs_dit import DIT_ARCH_NAMES, get_dit_arch
    from bench.gpu.build_dit import build_dit_pipeline, parameter_counts

    # Built on the meta device: shapes without memory. The public models' parameter counts:
    # FLUX.1-schnell's transformer 11.89B (Flux.1-dev's 11.90B less its guidance embedder), T5 v1.1
    # XXL's encoder 4.76B, CLIP-L's text tower 123M (with projection 124M), bigG's with projection
    # 695M, the 16-channel VAE 83.8M; SD 3.5 medium's transformer 2.47B with its positional table,
    # which diffusers keeps as a buffer (384² × 1536).
    flux = build_dit_pipeline(get_dit_arch("flux-schnell"), "meta", torch.bfloat16)
    assert parameter_counts(flux) == {
        "transformer": 11_891_178_560,
        "text_encoder": 123_060_480,
        "text_encoder_2": 4_762_310_656,
        "vae": 83_819_683,
    }
    assert len(flux.transformer.transformer_blocks) == 19
    assert len(flux.transformer.single_transformer_blocks) == 38
    sd35 = build_dit_pipeline(get_dit_arch("sd35-medium"), "meta", torch.bfloat16)
    counts = parameter_counts(sd35)
    assert counts["transformer"] + 384 * 384 * 1536 == 2_469_663_936
    assert (counts["text_encoder"], counts["text_encoder_2"]) == (123_650_304, 694_659_840)
    assert counts["text_encoder_3"] == 4_762_310_656 and counts["vae"] == 83_819_683
    assert sum(b.attn2 is not None for b in sd35.transformer.transformer_blocks) == 13  # MMDiT-X
    assert {get_dit_arch(name).size for name in DIT_ARCH_NAMES} == {1024}
    assert torch.get_default_dtype() == torch.float32  # the build's bf16 default does not leak


def test_the_video_architecture_has_the_public_models_sizes() -> None:
    import torch

    from bench.archs_video import get_video_arch
    from bench.gpu.build_dit import parameter_counts, weights_bytes
    from bench.gpu.build_video import build_video_pipeline

    # On the meta device. Wan2.1-I2V-14B's transformer is 16.39B parameters: the 14B text-to-video one
    # plus each of its 40 blocks' image key/value projections; UMT5-XXL's encoder 5.68B; CLIP ViT-H's
    # vision tower with projection 632M; Wan 2.1's VAE 127M (kept in fp32).
    pipe = build_video_pipeline(get_video_arch("wan21-i2v-14b-480p"), "meta", torch.bfloat16)
    assert parameter_counts(pipe) == {
        "transformer": 16_394_878_784,
        "text_encoder": 5_680_910_336,
        "image_encoder": 632_076_800,
        "vae": 126_892_531,
    }
    assert pipe.vae.dtype == torch.float32 and pipe.transformer.dtype == torch.bfloat16
    assert 42.7 < weights_bytes(pipe) / 2**30 < 42.8  # what a GPU holds before the first activation
    assert torch.get_default_dtype() == torch.float32


def test_the_transformer_pipelines_are_built_wholly_in_bf16() -> None:
    import numpy as np
    import torch

    from bench.archs_dit import DIT_ARCH_NAMES, get_dit_arch
    from bench.gpu.build_dit import build_dit_pipeline

    for name in DIT_ARCH_NAMES:  # as on the GPU, where the run builds them in bf16
        arch = get_dit_arch(name, tiny=True)
        pipe = build_dit_pipeline(arch, "cpu", torch.bfloat16)
        modules = [c for c in pipe.components.values() if isinstance(c, torch.nn.Module)]
        dtypes = {t.dtype for m in modules for t in [*m.parameters(), *m.buffers()] if t.is_floating_point()}
        assert dtypes == {torch.bfloat16}, name
        assert not any(m.training for m in modules), name
        out = pipe(
            prompt="a red fox",
            width=arch.size,
            height=arch.size,
            num_inference_steps=1,
            guidance_scale=arch.guidance,
            max_sequence_length=arch.max_sequence_length,
            output_type="np",
        )
        assert out.images.shape == (1, 64, 64, 3) and np.isfinite(out.images).all(), name
    assert torch.get_default_dtype() == torch.float32


def test_an_unknown_step_is_refused_with_the_names_that_exist() -> None:
    from bench.gpu.cli import _only

    assert _only(None) == {name for name, _, _ in STEPS}
    assert _only("env, sdxl") == {"env", "sdxl"}
    with pytest.raises(ValueError, match="warp") as refused:
        _only("sd15_batches,warp")
    assert "sd15_single" in str(refused.value)


def test_each_record_is_on_disk_before_the_next_is_measured(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    results = ResultsFile(path, Budget(60))
    results.write("start")
    results.write("sd15_batch", images=1, images_per_s=1.23456789)
    assert [r["step"] for r in read_records(path)] == ["start", "sd15_batch"]  # not closed yet
    assert read_records(path)[1]["images_per_s"] == 1.2346
    with path.open("a") as cut:  # a kill in the middle of a line loses that line only
        cut.write('{"step": "sd15_ba')
    results.close()
    assert len(read_records(path)) == 2
    second = ResultsFile(path, Budget(60))
    second.write("start")
    second.close()
    assert [r["step"] for r in last_run(read_records(path))] == ["start"]


def test_a_step_past_its_limit_is_abandoned_and_its_error_kept() -> None:
    release = threading.Event()
    with pytest.raises(OverLimit):
        within(0.05, lambda: release.wait(30))
    release.set()
    assert within(5, lambda: 7) == 7

    def broken() -> None:
        raise KeyError("lost")

    with pytest.raises(KeyError):
        within(5, broken)


def test_profiled_ops_are_sorted_into_kinds() -> None:
    assert op_kind("aten::_scaled_dot_product_flash_attention") == "attention"
    assert op_kind("aten::_scaled_dot_product_cudnn_attention") == "attention"
    assert op_kind("aten::cudnn_convolution") == "convolution"
    assert op_kind("aten::addmm") == "matmul"
    assert op_kind("aten::native_group_norm") == "norm"
    assert op_kind("aten::add_") == "other"


def _record(step: str, **figures: Any) -> dict[str, Any]:
    return {"step": step, "status": "ok", "t_s": 0.0, **figures}


def test_the_summary_reports_each_target_as_met_or_not() -> None:
    records = [
        _record("start"),
        _record("env", gpu="NVIDIA H200", commit="abc"),
        _record("sd15_batch", images=1, images_per_s=4.0, peak_memory_gib=3.0),
        _record("sd15_batch", images=16, images_per_s=14.0, peak_memory_gib=9.0),
        _record("sd15_single", denoise_steps_per_s=60.0),
        _record("service", images_per_s=7.0, service_vs_plain=1.75),
        _record("flux_schnell_batch", images=1, images_per_s=1.0, peak_memory_gib=10.0),
        _record("flux_schnell_batch", images=4, images_per_s=2.0, peak_memory_gib=20.0),
        _record("sd35_batch", images=1, images_per_s=3.0, peak_memory_gib=30.0),
        {"step": "step", "status": "skipped", "name": "sdxl", "reason": "10 s left, 60 s needed"},
    ]
    summary = summarise(records)
    assert summary["gpu"] == "NVIDIA H200" and "note" not in summary
    assert summary["sd15_images_per_s"] == {"1": 4.0, "16": 14.0}
    assert summary["flux_schnell_images_per_s"] == {"1": 1.0, "4": 2.0}
    assert summary["flux_schnell_peak_memory_gib"] == {"1": 10.0, "4": 20.0}
    assert summary["sd35_medium_images_per_s"] == {"1": 3.0}
    assert summary["targets"]["sd15_batched_images_per_s"].startswith("met (14")
    assert summary["targets"]["service_vs_plain"].startswith("not met (1.75")
    assert summary["targets"]["single_steps_per_s"].startswith("not met (60")
    assert summary["not_done"] == ["sdxl: skipped (10 s left, 60 s needed)"]
