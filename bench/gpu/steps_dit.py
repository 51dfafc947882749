"""The GPU run's steps on the transformer (MMDiT) pipelines: Flux.1-schnell and SD 3.5 medium at 1024²,
bf16, every component full size with random weights (`bench.gpu.build_dit`), images/s and peak memory
at each of the plan's batch sizes; each model dropped after its step to free the GPU for the next."""

from __future__ import annotations

import time

from bench.gpu.build_dit import build_dit_pipeline, parameter_counts, weights_bytes
from bench.gpu.context import Run, measure_call
from bench.gpu.records import gpu_clocks
from bench.gpu.timing import allocated_gib, sync


def flux_schnell(run: Run) -> None:
    """Flux.1-schnell at 1024², 4 steps, no guidance, bf16: images/s and peak memory per batch."""
    _batches(run, "flux-schnell", "flux_schnell_batch", run.plan.flux_batches)


def sd35_medium(run: Run) -> None:
    """SD 3.5 medium at 1024², 20 steps, CFG 4.5, bf16: images/s and peak memory per batch."""
    _batches(run, "sd35-medium", "sd35_batch", run.plan.sd35_batches)


def _batches(run: Run, name: str, record: str, batches: tuple[int, ...]) -> None:
    """Build `name`, record how (`dit_build`), then time each batch size (one `record` each). A batch is
    started only if its estimate (the last batch's seconds per image × images × timed calls) fits in
    the budget left; otherwise it is recorded as skipped, and so is every larger batch."""
    arch = run.plan.dit_arch(name)
    dtype = run.dit_dtype
    held_before = allocated_gib(run.device)  # what earlier steps still hold (in every peak below)
    start = time.perf_counter()
    pipe = build_dit_pipeline(arch, run.device, dtype)
    sync(run.device)
    run.pipes[name] = pipe
    try:
        counts = parameter_counts(pipe)
        run.results.write(
            "dit_build",
            arch=arch.name,
            pipeline=type(pipe).__name__,
            source=arch.source,
            dtype=str(dtype).removeprefix("torch."),
            build_s=time.perf_counter() - start,
            parameters=counts,
            weights_gib=weights_bytes(pipe) / 2**30,
            held_before_gib=held_before,
            t5_layers=arch.t5["num_layers"],
            t5_tokens=arch.max_sequence_length,
            shortcuts=list(arch.shortcuts),
        )
        seconds_per_image: float | None = None
        calls = run.plan.warmup + run.plan.runs
        for i, batch in enumerate(batches):
            if seconds_per_image is not None:
                needed, left = seconds_per_image * batch * calls, run.budget.remaining()
                if left < needed:
                    reason = f"{left:.0f} s left, about {needed:.0f} s needed"
                    for skipped in batches[i:]:
                        run.results.write(record, "skipped", arch=arch.name, images=skipped, reason=reason)
                    break
            figures = measure_call(run, pipe, arch, batch, max_sequence_length=arch.max_sequence_length)
            seconds_per_image = figures["median_s"] / batch
            run.results.write(
                record,
                arch=arch.name,
                dtype=str(dtype).removeprefix("torch."),
                t5_tokens=arch.max_sequence_length,
                clocks=gpu_clocks(),
                **figures,
            )
    finally:
        run.drop(name)
