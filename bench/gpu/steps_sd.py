# mypy: disable-error-code="no-untyped-call"
"""The GPU run's steps on plain diffusers pipelines: the machine, SD 1.5 at each batch size and one
request's step rate, SD-Turbo, SDXL, inpainting, FLOPs, the safety checker and the VAE decode."""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from PIL import Image

from bench.gpu.context import Run, measure_call
from bench.gpu.flops import count_flops
from bench.gpu.plan import PROMPT
from bench.gpu.records import gpu_clocks
from bench.gpu.timing import (
    StepClock,
    allocated_gib,
    is_cuda,
    matmul_rate,
    peak_memory_gib,
    reset_peak,
    timed,
)
from bench.report import machine, source_commit
from generation.families.sd import SDXL
from generation.pipelines.tuning import apply_vae_precision


def env(run: Run) -> None:
    """The machine: GPU name, memory, clocks, driver, libraries, SDPA back-ends, commit; bf16 matmul rate."""
    device = run.device
    info: dict[str, Any] = {"device": device, "commit": source_commit(), "host": machine()}
    if is_cuda(device):
        props = torch.cuda.get_device_properties(device)
        info.update(
            gpu=props.name,
            capability=f"{props.major}.{props.minor}",
            multiprocessors=props.multi_processor_count,
            memory_gib=props.total_memory / 2**30,
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            sdpa_flash=torch.backends.cuda.flash_sdp_enabled(),
            sdpa_mem_efficient=torch.backends.cuda.mem_efficient_sdp_enabled(),
            sdpa_cudnn=torch.backends.cuda.cudnn_sdp_enabled(),
            clocks_before=gpu_clocks(),
        )
    else:
        info.update(gpu=None, note="CPU run: not a GPU figure", torch_threads=torch.get_num_threads())
    info["bf16_matmul_tflop_per_s"] = matmul_rate(device, run.plan.matmul_n) / 1e12
    info["clocks_after_matmul"] = gpu_clocks() if is_cuda(device) else None
    run.figures["peak_flops"] = info["bf16_matmul_tflop_per_s"] * 1e12
    run.results.write("env", **info)


def sd15_batches(run: Run) -> None:
    """SD 1.5 at 512², 20 steps, CFG, loaded with `from_pretrained` as a user does: images/s per batch."""
    from diffusers import StableDiffusionPipeline

    folder, save_s = run.folder("sd15")
    start = time.perf_counter()
    pipe = StableDiffusionPipeline.from_pretrained(str(folder), dtype=run.dtype).to(run.device)
    pipe.set_progress_bar_config(disable=True)
    run.pipes["sd15"] = pipe
    run.results.write("sd15_load", build_and_save_s=save_s, load_s=time.perf_counter() - start)
    arch = run.plan.arch("sd15")
    for batch in run.plan.sd15_batches:
        figures = measure_call(run, pipe, arch, batch)
        run.figures[f"sd15_b{batch}"] = figures["images_per_s"]
        run.results.write("sd15_batch", arch=arch.name, clocks=gpu_clocks(), **figures)


def sd15_single(run: Run) -> None:
    """One request alone (batch 1, CFG): denoising steps/s between step ends, and end to end."""
    arch = run.plan.arch("sd15")
    pipe = run.pipes.get("sd15") or run.pipe("sd15")
    clock = StepClock(run.device)

    def one() -> None:
        clock.marks.clear()
        pipe(
            PROMPT,
            width=arch.size,
            height=arch.size,
            num_inference_steps=arch.steps,
            guidance_scale=arch.guidance,
            generator=run.generators(1),
            callback_on_step_end=clock,
        )

    for _ in range(run.plan.warmup):
        one()
    rates, calls = [], []
    for _ in range(run.plan.runs):
        calls.append(timed(one, run.device, warmup=0, runs=1).median)
        rate = clock.steps_per_s()
        if rate is not None:
            rates.append(rate)
    run.results.write(
        "sd15_single",
        arch=arch.name,
        steps=arch.steps,
        denoise_steps_per_s=statistics.median(rates) if rates else None,
        end_to_end_steps_per_s=arch.steps / statistics.median(calls),
        unet_rows_per_step=arch.cfg_passes,
        source="callback_on_step_end, device synchronised at each step end",
    )


def turbo(run: Run) -> None:
    """SD-Turbo (SD 2.1-base architecture), one step, no guidance: images/s per batch."""
    arch = run.plan.arch("sd-turbo")
    pipe = run.pipe("sd-turbo")
    for batch in run.plan.turbo_batches:
        run.results.write("turbo_batch", arch=arch.name, **measure_call(run, pipe, arch, batch))
    run.drop("sd-turbo")


def sdxl(run: Run) -> None:
    """SDXL at 1024², 20 steps, CFG: plain diffusers (its VAE upcast to fp32 on every call), then the
    VAE kept in the dtype the project picks (`apply_vae_precision`) at the largest batch."""
    arch = run.plan.arch("sdxl")
    pipe = run.pipe("sdxl")
    for batch in run.plan.sdxl_batches:
        figures = measure_call(run, pipe, arch, batch)
        run.results.write("sdxl_batch", arch=arch.name, vae="diffusers' fp32 upcast per call", **figures)
    chosen = apply_vae_precision(pipe, run.dtype, SDXL.fp16_vae_overflows)
    batch = run.plan.sdxl_batches[-1]
    figures = measure_call(run, pipe, arch, batch)
    run.results.write("sdxl_batch", arch=arch.name, vae=str(chosen).removeprefix("torch."), **figures)
    run.drop("sdxl")


def inpaint(run: Run) -> None:
    """Inpainting, the edit kind, through `AutoPipelineForInpainting.from_pipe` on SD 1.5 (shared weights)."""
    from diffusers import AutoPipelineForInpainting

    arch = run.plan.arch("sd15")
    pipe = AutoPipelineForInpainting.from_pipe(run.pipes.get("sd15") or run.pipe("sd15"))
    pipe.set_progress_bar_config(disable=True)
    batch = run.plan.edit_batch
    size = arch.size
    image = Image.effect_noise((size, size), 64).convert("RGB")
    mask = Image.new("L", (size, size), 0)
    mask.paste(255, (size // 4, size // 4, 3 * size // 4, 3 * size // 4))
    figures = measure_call(run, pipe, arch, batch, image=[image] * batch, mask_image=[mask] * batch)
    run.results.write("inpaint_batch", arch=arch.name, strength=1.0, pipeline=type(pipe).__name__, **figures)


def flops(run: Run) -> None:
    """FLOPs per SD 1.5 image and the share of the measured bf16 rate each batch size reaches."""
    arch = run.plan.arch("sd15")
    counted = count_flops(run.pipes.get("sd15") or run.pipe("sd15"), arch, run.device)
    per_image = counted.per_image(arch)
    peak = run.figures.get("peak_flops")
    shares = {
        str(b): run.figures[f"sd15_b{b}"] * per_image / peak
        for b in run.plan.sd15_batches
        if peak and f"sd15_b{b}" in run.figures
    }
    run.results.write(
        "sd15_flops",
        unet_call_gflop=counted.unet_call / 1e9,
        text_gflop=counted.text / 1e9,
        vae_decode_gflop=counted.vae_decode / 1e9,
        per_image_tflop=per_image / 1e12,
        flop_limit_images_per_s=peak / per_image if peak else None,
        flop_limit_share_by_batch=shares,
    )


def safety(run: Run) -> None:
    """The safety checker's cost per image (as `load_pipeline` wraps it): CPU preprocessing and the whole."""
    from bench.gpu.build import build_safety_checker
    from generation.pipelines.safety import model_check

    checker, processor = build_safety_checker(run.device, run.dtype, tiny=run.plan.tiny)
    check = model_check(checker, processor, run.device, run.dtype)
    size = run.plan.arch("sd15").size
    batch = run.plan.edit_batch
    images = [Image.effect_noise((size, size), 64).convert("RGB") for _ in range(batch)]
    reset_peak(run.device)
    whole = timed(lambda: check(images), run.device, warmup=run.plan.warmup, runs=run.plan.runs)
    prep = timed(lambda: processor(images, return_tensors="pt"), "cpu", warmup=0, runs=run.plan.runs)
    run.results.write(
        "safety_checker",
        images=batch,
        ms_per_image=whole.median * 1000 / batch,
        preprocess_ms_per_image=prep.median * 1000 / batch,
        peak_memory_gib=peak_memory_gib(run.device),
    )


def vae_decode(run: Run) -> None:
    """The SD 1.5 VAE decoding a batch with slicing (one image at a time) and without: time and peak."""
    pipe = run.pipes.get("sd15") or run.pipe("sd15")
    vae, batch = pipe.vae, run.plan.vae_batch
    side = run.plan.arch("sd15").size // pipe.vae_scale_factor
    latents = torch.randn(batch, vae.config.latent_channels, side, side, device=run.device, dtype=vae.dtype)
    for slicing in (True, False):
        vae.enable_slicing() if slicing else vae.disable_slicing()
        reset_peak(run.device)
        with torch.no_grad():
            timing = timed(
                lambda: vae.decode(latents), run.device, warmup=run.plan.warmup, runs=run.plan.runs
            )
        run.results.write(
            "vae_decode",
            images=batch,
            slicing=slicing,
            ms_per_image=timing.median * 1000 / batch,
            peak_memory_gib=peak_memory_gib(run.device),
            weights_gib=allocated_gib(run.device),
        )
    vae.disable_slicing()
