"""The headline figures of a GPU run's results file, and the compass's targets as met or not."""

from __future__ import annotations

from typing import Any

from bench.gpu.records import latest

# The compass's targets (for an H100; a run on another card reports against them all the same).
TARGET_SD15_BATCHED_IMAGES_PER_S = 13.0
TARGET_SERVICE_VS_PLAIN = 2.0
TARGET_SINGLE_STEPS_PER_S = 100.0


def _by(records: list[dict[str, Any]], step: str, key: str) -> dict[str, dict[str, Any]]:
    return {str(r[key]): r for r in latest(records, step)}


def _met(value: float | None, target: float) -> str:
    if value is None:
        return "not measured"
    return f"{'met' if value >= target else 'not met'} ({value:.3g} vs {target:g})"


def _dit(records: list[dict[str, Any]], name: str, step: str) -> dict[str, dict[str, Any]]:
    """A transformer step's images/s and peak memory by batch size."""
    batches = _by(records, step, "images")
    return {
        f"{name}_images_per_s": {b: r["images_per_s"] for b, r in batches.items()},
        f"{name}_peak_memory_gib": {b: r["peak_memory_gib"] for b, r in batches.items()},
    }


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Images/s, steps/s, ratios and peaks by step; what was skipped or failed; the targets."""
    env = next(latest(records, "env"), {})
    sd15 = _by(records, "sd15_batch", "images")
    single = next(latest(records, "sd15_single"), {})
    service = next(latest(records, "service"), {})
    sdxl = [r for r in latest(records, "sdxl_batch")]
    video = next(latest(records, "video_clip"), {})
    best_sd15 = max((r["images_per_s"] for r in sd15.values()), default=None)
    figures: dict[str, Any] = {
        "gpu": env.get("gpu") or "none (CPU run: not a GPU figure)",
        "commit": env.get("commit"),
        "clocks": env.get("clocks_after_matmul"),
        "bf16_matmul_tflop_per_s": env.get("bf16_matmul_tflop_per_s"),
        "sd15_images_per_s": {b: r["images_per_s"] for b, r in sd15.items()},
        "sd15_peak_memory_gib": {b: r["peak_memory_gib"] for b, r in sd15.items()},
        "sd15_denoise_steps_per_s_single": single.get("denoise_steps_per_s"),
        "service_images_per_s": service.get("images_per_s"),
        "service_vs_plain": service.get("service_vs_plain"),
        "turbo_images_per_s": {str(r["images"]): r["images_per_s"] for r in latest(records, "turbo_batch")},
        "sdxl_images_per_s": {f"{r['images']} ({r['vae']})": r["images_per_s"] for r in sdxl},
        "sdxl_peak_memory_gib": {f"{r['images']} ({r['vae']})": r["peak_memory_gib"] for r in sdxl},
        **_dit(records, "flux_schnell", "flux_schnell_batch"),
        **_dit(records, "sd35_medium", "sd35_batch"),
        "wan_i2v_frames_per_s": video.get("frames_per_s"),
        "wan_i2v_clip_s": video.get("clip_s"),
        "wan_i2v_peak_memory_gib": video.get("peak_memory_gib"),
        "inpaint_images_per_s": {
            str(r["images"]): r["images_per_s"] for r in latest(records, "inpaint_batch")
        },
        "safety_checker_ms_per_image": next(latest(records, "safety_checker"), {}).get("ms_per_image"),
        "variants_images_per_s": {r["optimise"]: r["images_per_s"] for r in latest(records, "variant")},
        "profile_unet_time_by_kind": next(latest(records, "profile"), {}).get("unet_time_by_kind"),
        "bad_images": sum(r.get("nan_images", 0) + r.get("black_images", 0) for r in records),
        "not_done": [
            f"{r.get('name', r['step'])}: {r['status']} ({r.get('reason') or r.get('error')})"
            for r in records
            if r["status"] != "ok"
        ],
        "targets": {
            "sd15_batched_images_per_s": _met(best_sd15, TARGET_SD15_BATCHED_IMAGES_PER_S),
            "service_vs_plain": _met(service.get("service_vs_plain"), TARGET_SERVICE_VS_PLAIN),
            "single_steps_per_s": _met(single.get("denoise_steps_per_s"), TARGET_SINGLE_STEPS_PER_S),
        },
    }
    if not env.get("gpu"):
        figures["note"] = "CPU run on tiny stand-in architectures: not a GPU figure"
    return figures
