# mypy: disable-error-code="no-untyped-call"
"""What limits one SD 1.5 denoising step at the edit batch size: the step's parts timed apart (text
encoding, one UNet call over the guidance rows, one scheduler step, one image's VAE decode), and the
UNet call's device time by kind of operation (attention, convolution, matmul, norms, the rest) from
`torch.profiler`."""

from __future__ import annotations

from typing import Any

import torch

from bench.gpu.context import Run
from bench.gpu.plan import PROMPT
from bench.gpu.timing import is_cuda, timed

_KINDS = (  # (kind, substrings of an aten op's name), first match wins
    ("attention", ("attention", "sdp", "flash", "xformers")),
    ("convolution", ("conv",)),
    ("matmul", ("mm", "linear", "matmul")),
    ("norm", ("norm",)),
)


def op_kind(name: str) -> str:
    """The kind of a profiled op by its name: attention, convolution, matmul, norm, or other."""
    lowered = name.lower()
    for kind, needles in _KINDS:
        if any(needle in lowered for needle in needles):
            return kind
    return "other"


def _shares(prof: Any, cuda: bool) -> dict[str, float]:
    """Self time (device time on CUDA, else CPU time) of the profiled ops by kind, as shares of the total."""
    totals: dict[str, float] = {}
    for event in prof.key_averages():
        if getattr(event, "device_type", None) is not None and "CUDA" in str(event.device_type):
            continue  # kernels themselves: their time is already their launching op's
        value = float(event.self_device_time_total if cuda else event.self_cpu_time_total)
        totals[op_kind(event.key)] = totals.get(op_kind(event.key), 0.0) + value
    whole = sum(totals.values()) or 1.0
    return {kind: value / whole for kind, value in sorted(totals.items())}


def profile(run: Run) -> None:
    """See the module docstring."""
    pipe = run.pipes.get("sd15") or run.pipe("sd15")
    arch = run.plan.arch("sd15")
    batch, device = run.plan.edit_batch, run.device
    unet, vae, scheduler = pipe.unet, pipe.vae, pipe.scheduler
    rows = batch * arch.cfg_passes
    side = arch.size // pipe.vae_scale_factor
    sample = torch.randn(rows, unet.config.in_channels, side, side, device=device, dtype=unet.dtype)
    timestep = torch.tensor([500] * rows, device=device)
    latent = torch.randn(1, vae.config.latent_channels, side, side, device=device, dtype=vae.dtype)
    scheduler.set_timesteps(arch.steps, device=device)
    step_t = scheduler.timesteps[0]
    with torch.no_grad():
        hidden = pipe.encode_prompt(PROMPT, device, batch, arch.cfg_passes == 2)[0]
        if arch.cfg_passes == 2:
            hidden = torch.cat([hidden, hidden])

        def unet_call() -> Any:
            return unet(sample, timestep, encoder_hidden_states=hidden).sample

        def scheduler_step() -> None:
            scheduler._step_index = None  # each timed call is a first step (Euler keeps an index)
            scheduler.step(sample[:batch], step_t, sample[:batch])

        parts = {
            "text_encode_ms": lambda: pipe.encode_prompt(PROMPT, device, batch, arch.cfg_passes == 2),
            "unet_call_ms": unet_call,
            "scheduler_step_ms": scheduler_step,
            "vae_decode_one_ms": lambda: vae.decode(latent),
        }
        times: dict[str, Any] = {
            name: timed(fn, device, warmup=run.plan.warmup, runs=run.plan.runs).median * 1000
            for name, fn in parts.items()
        }
        activities = [torch.profiler.ProfilerActivity.CPU]
        if is_cuda(device):
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(activities=activities) as prof:
            unet_call()
            if is_cuda(device):
                torch.cuda.synchronize(device)
    per_step = times["unet_call_ms"] + times["scheduler_step_ms"]
    run.results.write(
        "profile",
        images=batch,
        unet_rows=rows,
        unet_share_of_step=times["unet_call_ms"] / per_step,
        unet_time_by_kind=_shares(prof, is_cuda(device)),
        time_source="device time" if is_cuda(device) else "CPU time",
        **times,
    )
