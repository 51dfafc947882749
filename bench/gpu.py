# mypy: disable-error-code="no-untyped-call"
"""`python -m bench gpu --arch sd15|sd-turbo|sdxl`: throughput of plain diffusers and of the service on
full-size architectures with random weights (speed does not depend on the weights).

1. Build the architecture from `bench.archs` (seeded random weights, a local byte-level tokenizer),
   in fp16 on CUDA, and `save_pretrained` it into a folder (a temp folder unless `--model-dir`).
2. Baseline, as a user runs diffusers: `StableDiffusionPipeline.from_pretrained(folder,
   torch_dtype=torch.float16)` (the XL pipeline for SDXL), one prompt at a time: images/s.
3. FLOPs per image with `torch.utils.flop_counter.FlopCounterMode`: one UNet call × steps × (2 with
   guidance) + text encoder(s) + one VAE decode; and the device's dense bf16 matmul rate, timed.
4. The service (`load_pipeline` on the folder + `DiffusersEngine` + `GenerationService`, batching
   on) at each `--concurrency` (closed loop: that many clients, each submitting its next request
   when its last one finished): images/s, peak memory, warm-up; the step rate of one request alone.
   `--optimise` (repeatable) picks `OptimiseOptions`; each given variant is measured in the same run.

`flop_limit_share` = FLOPs per image × images/s at the highest concurrency ÷ the measured bf16 rate.
`--tiny-arch` swaps in tiny stand-ins (fp32 on the CPU, peak memory from RSS) so the whole path runs
in seconds without a GPU; such figures are CPU figures and say so.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import os
import resource
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.archs import ARCH_NAMES, Arch, get_arch
from bench.config import BenchSettings
from bench.plain import plain_call
from bench.report import report
from generation.pipelines.options import OptimiseOptions, parse_optimise
from generation.prompts.request import GenerationRequest

PROMPT = "a red fox in the snow, golden hour, highly detailed photograph"


# --------------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------------


def parse_concurrency(text: str) -> list[int]:
    """`"1,4,8,16"` → [1, 4, 8, 16] (positive, in the order given, no repeats)."""
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or any(v < 1 for v in values) or len(set(values)) != len(values):
        raise ValueError(f"--concurrency {text!r}: expected distinct positive integers, e.g. 1,4,8,16")
    return values


def variant_label(text: str) -> str:
    """A stable name for an --optimise value: its flags sorted, or "none"."""
    parts = sorted({p.strip() for p in text.split(",") if p.strip() and p.strip() != "none"})
    return ",".join(parts) or "none"


# --------------------------------------------------------------------------------------------------
# Building the architecture
# --------------------------------------------------------------------------------------------------


def _cast(module: Any, dtype: torch.dtype) -> Any:
    return module if dtype == torch.float32 else module.to(dtype)


def build_pipeline(arch: Arch, device: str, dtype: torch.dtype, seed: int = 0) -> Any:
    """The architecture's diffusers pipeline with seeded random weights, on `device` in `dtype`."""
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from generation.pipelines.tiny import (  # byte_tokenizer: local, byte-level CLIP
        byte_tokenizer,
        sd_pipeline,
    )

    tokenizer = byte_tokenizer()
    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    with torch.device(device):  # initialise on the device: full-size SDXL takes minutes on a CPU
        torch.manual_seed(seed)
        unet = _cast(UNet2DConditionModel(**arch.unet), dtype)
        torch.manual_seed(seed + 1)
        vae = _cast(AutoencoderKL(**arch.vae), dtype)
        torch.manual_seed(seed + 2)
        text_encoder = _cast(CLIPTextModel(CLIPTextConfig(**arch.text_encoder, **ids)), dtype)
        text_encoder_2 = None
        if arch.text_encoder_2 is not None:
            torch.manual_seed(seed + 3)
            config_2 = CLIPTextConfig(**arch.text_encoder_2, **ids)
            text_encoder_2 = _cast(CLIPTextModelWithProjection(config_2), dtype)
    scheduler = EulerDiscreteScheduler(**arch.scheduler)
    if arch.is_xl:
        return StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
            tokenizer=tokenizer,
            tokenizer_2=byte_tokenizer(),
            unet=unet,
            scheduler=scheduler,
            add_watermarker=False,
            **arch.pipeline_config,
        )
    return sd_pipeline(vae, text_encoder, tokenizer, unet, scheduler)


def save_arch(arch: Arch, folder: Path, device: str, dtype: torch.dtype) -> float:
    """Build and `save_pretrained` into `folder` (skipped if a model is already there); seconds taken."""
    if (folder / "model_index.json").is_file():
        return 0.0
    start = time.perf_counter()
    pipe = build_pipeline(arch, device, dtype)
    pipe.save_pretrained(folder)
    del pipe
    _free(device)
    return time.perf_counter() - start


# --------------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------------


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _free(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def _reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device: str) -> float:
    """Peak allocated CUDA memory since the last reset; on the CPU the process's peak RSS (never reset)."""
    if device.startswith("cuda"):
        return round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)  # KiB on Linux


def matmul_rate(device: str, n: int, seconds: float = 1.0) -> float:
    """Measured dense bf16 matmul FLOP/s: an n×n by n×n product repeated for about `seconds`."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        torch.matmul(a, b)
    _sync(device)
    done, start = 0, time.perf_counter()
    while True:
        for _ in range(10):
            torch.matmul(a, b)
        done += 10
        _sync(device)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return 2.0 * n**3 * done / elapsed


@dataclass(frozen=True)
class Flops:
    """FLOPs of one image's parts (counted by FlopCounterMode: 2 per multiply-add)."""

    unet_call: int  # one UNet pass on one latent
    text: int  # the text encoder(s), one prompt
    vae_decode: int  # one image

    def per_image(self, arch: Arch) -> int:
        """UNet × steps × guidance passes + text encoding of prompt (and negative) + one decode."""
        return self.unet_call * arch.steps * arch.cfg_passes + self.text * arch.cfg_passes + self.vae_decode


def count_flops(pipe: Any, arch: Arch, device: str) -> Flops:
    """Count one UNet call, the text encoder(s) and one VAE decode of `pipe` (batch 1).

    SDPA runs its math backend while counting, so attention is counted on every device (the fused CPU
    kernel has no FLOP formula)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    unet, vae = pipe.unet, pipe.vae
    dtype = unet.dtype
    side = arch.size // pipe.vae_scale_factor
    sample = torch.randn(1, unet.config.in_channels, side, side, device=device, dtype=dtype)
    hidden = torch.randn(1, 77, unet.config.cross_attention_dim, device=device, dtype=dtype)
    timestep = torch.tensor([999], device=device)
    extra: dict[str, Any] = {}
    if arch.is_xl:
        time_dim = 6 * unet.config.addition_time_embed_dim
        pooled = unet.config.projection_class_embeddings_input_dim - time_dim
        extra["added_cond_kwargs"] = {
            "text_embeds": torch.randn(1, pooled, device=device, dtype=dtype),
            "time_ids": torch.tensor([[arch.size, arch.size, 0, 0, arch.size, arch.size]], device=device),
        }
    ids = pipe.tokenizer(PROMPT, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    input_ids = ids.input_ids.to(device)

    def counted(fn: Any) -> int:
        with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]), FlopCounterMode(display=False) as mode:
            fn()
        return int(mode.get_total_flops())

    unet_call = counted(lambda: unet(sample, timestep, encoder_hidden_states=hidden, **extra))
    text = counted(lambda: pipe.text_encoder(input_ids))
    if arch.is_xl:
        text += counted(lambda: pipe.text_encoder_2(input_ids))
    latents = torch.randn(1, vae.config.latent_channels, side, side, device=device, dtype=vae.dtype)
    vae_decode = counted(lambda: vae.decode(latents))
    return Flops(unet_call, text, vae_decode)


def run_baseline(folder: Path, arch: Arch, device: str, dtype: torch.dtype, images: int) -> dict[str, Any]:
    """Plain diffusers, one prompt at a time: load time, images/s, FLOPs (counted on its modules)."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    cls = StableDiffusionXLPipeline if arch.is_xl else StableDiffusionPipeline
    _reset_peak(device)
    start = time.perf_counter()
    pipe = cls.from_pretrained(str(folder), torch_dtype=dtype).to(device)
    pipe.set_progress_bar_config(disable=True)
    load_s = time.perf_counter() - start

    def one(seed: int) -> None:
        plain_call(pipe, _request(arch, seed), device)

    start = time.perf_counter()
    one(0)
    first_s = time.perf_counter() - start
    one(1)
    _sync(device)
    start = time.perf_counter()
    for seed in range(images):
        one(100 + seed)
    _sync(device)
    elapsed = time.perf_counter() - start
    flops = count_flops(pipe, arch, device)
    peak = peak_memory_gib(device)
    pipe = None  # free it before the service loads its own copy
    _free(device)
    return {
        "images_per_s": images / elapsed,
        "load_s": load_s,
        "first_image_s": first_s,
        "peak_memory_gib": peak,
        "flops": flops,
    }


class _NoImages:
    def get(self, digest: str) -> bytes:
        raise KeyError(digest)


def _request(arch: Arch, seed: int) -> GenerationRequest:
    return GenerationRequest(
        prompt=PROMPT,
        width=arch.size,
        height=arch.size,
        steps=arch.steps,
        guidance=arch.guidance,
        seeds=(seed,),
        model=arch.name,
    )


async def run_service(
    folder: Path,
    arch: Arch,
    device: str,
    options: OptimiseOptions,
    concurrencies: list[int],
    rounds: int,
    min_images: int,
) -> dict[str, Any]:
    """The service at each concurrency (closed loop); see the module docstring."""
    from generation.backends.local import GenerationService
    from generation.pipelines.engine import DiffusersEngine

    def factory() -> DiffusersEngine:  # as the bot loads it: a compiled UNet is warmed up here (load_s)
        return DiffusersEngine.load(str(folder), device, cache_dir=None, options=options)

    _reset_peak(device)
    start = time.perf_counter()
    # Progress at every step (the default reports at most every 0.25 s): the step rate of one request
    # alone is read from the progress events' times.
    service = GenerationService(factory, _NoImages(), job_timeout_s=3600.0, progress_interval_s=0.0)
    await service.start()
    load_s = time.perf_counter() - start
    seeds = itertools.count(1)
    step_rates: list[float] = []

    async def one(owner: str, record_steps: bool) -> None:
        seed = next(seeds)
        handle = service.submit(f"job{seed}", owner, _request(arch, seed))
        if record_steps:
            marks: list[tuple[float, int]] = []
            async for event in handle.events():
                step = getattr(event, "step", None)
                if step is not None:
                    marks.append((time.perf_counter(), step))
            if len(marks) >= 2 and marks[-1][1] > marks[0][1]:
                step_rates.append((marks[-1][1] - marks[0][1]) / (marks[-1][0] - marks[0][0]))
        await handle.result()

    async def closed_loop(clients: int, total: int, record_steps: bool = False) -> float:
        jobs = iter(range(total))

        async def client(k: int) -> None:
            for _ in jobs:
                await one(f"owner{k}", record_steps)

        begin = time.perf_counter()
        await asyncio.gather(*(client(k) for k in range(clients)))
        return time.perf_counter() - begin

    out: dict[str, Any] = {"images_per_s": {}, "peak_memory_gib": {}, "warmup_s": {}}
    try:
        start = time.perf_counter()
        await one("first", False)
        first_s = time.perf_counter() - start
        for c in concurrencies:
            _reset_peak(device)
            out["warmup_s"][str(c)] = round(await closed_loop(c, c), 3)  # new batch shapes (compile)
            total = max(rounds * c, min_images)
            elapsed = await closed_loop(c, total, record_steps=c == 1)
            out["images_per_s"][str(c)] = total / elapsed
            out["peak_memory_gib"][str(c)] = peak_memory_gib(device)
            if c == 1:
                out["end_to_end_steps_per_s_single"] = arch.steps * total / elapsed
    finally:
        await service.close()
        _free(device)
    out["load_s"] = load_s
    out["first_image_s"] = first_s
    out["denoise_steps_per_s_single"] = statistics.median(step_rates) if step_rates else None
    return out


# --------------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------------


def _round(value: Any, digits: int = 3) -> Any:
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: _round(v, digits) for k, v in value.items()}
    return value


def summarise(
    arch: Arch,
    device_name: str,
    baseline: dict[str, Any],
    variants: dict[str, dict[str, Any]],
    peak_flops: float,
    tiny: bool,
    build_s: float,
) -> dict[str, Any]:
    """The figures: the last variant's at the top level, every variant under `variants`."""
    flops: Flops = baseline["flops"]
    per_image = flops.per_image(arch)
    label, main = list(variants.items())[-1]
    rates: dict[str, float] = main["images_per_s"]
    top = str(max(int(c) for c in rates))
    steps_single = main["denoise_steps_per_s_single"] or main.get("end_to_end_steps_per_s_single")
    steps_source = "progress events" if main["denoise_steps_per_s_single"] else "end to end"

    def share(images_per_s: float) -> float:
        return images_per_s * per_image / peak_flops

    figures: dict[str, Any] = {
        "device": device_name,
        "arch": arch.name,
        "size": arch.size,
        "steps": arch.steps,
        "guidance": arch.guidance,
        "optimise": label,
        "baseline_images_per_s": baseline["images_per_s"],
        "baseline_load_s": baseline["load_s"],
        "baseline_first_image_s": baseline["first_image_s"],
        "baseline_peak_memory_gib": baseline["peak_memory_gib"],
        "images_per_s": rates,
        "speedup_vs_baseline": {c: r / baseline["images_per_s"] for c, r in rates.items()},
        "steps_per_s_single": steps_single,
        "steps_per_s_single_source": steps_source,
        "end_to_end_steps_per_s_single": main.get("end_to_end_steps_per_s_single"),
        "peak_memory_gib": max(main["peak_memory_gib"].values()),
        "peak_memory_gib_by_concurrency": main["peak_memory_gib"],
        "peak_memory_source": "torch.cuda.max_memory_allocated" if device_name != "cpu" else "process RSS",
        "load_s": main["load_s"],
        "first_image_s": main["first_image_s"],
        "warmup_s": main["warmup_s"],
        "unet_call_gflop": flops.unet_call / 1e9,
        "flop_per_image_tflop": per_image / 1e12,
        "measured_bf16_tflop_per_s": peak_flops / 1e12,
        "flop_limit_images_per_s": peak_flops / per_image,
        "flop_limit_share": share(rates[top]),
        "flop_limit_share_by_concurrency": {c: share(r) for c, r in rates.items()},
        "baseline_flop_limit_share": share(baseline["images_per_s"]),
        "build_s": build_s,
        "torch_threads": torch.get_num_threads(),
    }
    if len(variants) > 1:
        figures["variants"] = {
            name: {
                "images_per_s": v["images_per_s"],
                "steps_per_s_single": v["denoise_steps_per_s_single"]
                or v.get("end_to_end_steps_per_s_single"),
                "peak_memory_gib": max(v["peak_memory_gib"].values()),
                "load_s": v["load_s"],
                "first_image_s": v["first_image_s"],
            }
            for name, v in variants.items()
        }
    if tiny or device_name == "cpu":
        where = " on a tiny stand-in architecture" if tiny else ""
        figures["note"] = f"CPU run{where}: not a GPU figure"
    rounded: dict[str, Any] = _round(figures, 4)
    return rounded


def main(argv: list[str], settings: BenchSettings) -> int:
    """CLI entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m bench gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=ARCH_NAMES, required=True)
    parser.add_argument("--tiny-arch", action="store_true", help="tiny stand-in architecture (runs on a CPU)")
    parser.add_argument("--concurrency", default="1,4,8,16", help="concurrent requests (default 1,4,8,16)")
    parser.add_argument(
        "--optimise",
        action="append",
        help="none, or a comma list of channels_last,fuse_qkv,compile; repeat to measure several "
        "variants in one run (the last is reported at the top level). Default: none",
    )
    parser.add_argument("--device", default="auto", help="auto (cuda if present), cuda, cuda:N or cpu")
    parser.add_argument("--baseline-images", type=int, default=8, help="timed baseline images (default 8)")
    parser.add_argument("--rounds", type=int, default=3, help="timed images per client per level (default 3)")
    parser.add_argument("--min-images", type=int, default=8, help="timed images per level, at least")
    parser.add_argument("--matmul-n", type=int, default=0, help="bf16 matmul side (8192 GPU, 512 CPU)")
    parser.add_argument("--model-dir", type=Path, help="build the model here and keep it (reused if present)")
    args = parser.parse_args(argv)
    try:
        concurrencies = parse_concurrency(args.concurrency)
        optimise_values = args.optimise or ["none"]
        variants_options = {variant_label(v): parse_optimise(v) for v in optimise_values}
    except ValueError as err:
        parser.error(str(err))

    from generation.pipelines.loading import resolve_device

    device = resolve_device(args.device)
    if device != "cpu" and not device.startswith("cuda"):
        parser.error(f"device {device}: this benchmark runs on cuda or cpu")
    if device == "cpu" and not args.tiny_arch and args.device == "auto":
        parser.error("no CUDA GPU here: full-size architectures need one (use --tiny-arch, or --device cpu)")
    arch = get_arch(args.arch, tiny=args.tiny_arch)
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    device_name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"
    if device == "cpu":  # like for like with the service's worker, which load_pipeline sets so
        torch.set_num_threads(max(1, (os.cpu_count() or 1) - 1))

    temp = None if args.model_dir else Path(tempfile.mkdtemp(prefix=f"bench-{arch.name}-"))
    folder = args.model_dir or (temp / arch.name)  # type: ignore[operator]
    try:
        build_s = save_arch(arch, folder, device, dtype)
        baseline = run_baseline(folder, arch, device, dtype, args.baseline_images)
        peak_flops = matmul_rate(device, args.matmul_n or (8192 if device.startswith("cuda") else 512))
        variants = {
            label: asyncio.run(
                run_service(folder, arch, device, options, concurrencies, args.rounds, args.min_images)
            )
            for label, options in variants_options.items()
        }
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
    figures = summarise(arch, device_name, baseline, variants, peak_flops, args.tiny_arch, build_s)
    report("gpu", figures, argv, results_path=settings.results_path)
    return 0
