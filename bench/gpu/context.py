"""What the steps of one GPU run share: the plan, the device, the results file, the budget, the models
built so far and the figures later steps compare against."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.archs import Arch
from bench.archs_dit import DiTArch
from bench.gpu.build import build_pipeline, save_arch
from bench.gpu.plan import PROMPT, Plan
from bench.gpu.records import Budget, ResultsFile
from bench.gpu.timing import allocated_gib, free, is_cuda, peak_memory_gib, reset_peak, timed
from generation.families.registry import recognise
from generation.pipelines.tuning import batch_memory_bytes


@dataclass
class Run:
    """One run's shared state (steps run one after another on one thread)."""

    plan: Plan
    device: str
    dtype: torch.dtype
    results: ResultsFile
    budget: Budget
    workdir: Path
    pipes: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)

    def pipe(self, name: str) -> Any:
        """The plain diffusers pipeline of architecture `name`, built on first use and kept."""
        if name not in self.pipes:
            self.pipes[name] = build_pipeline(self.plan.arch(name), self.device, self.dtype)
        return self.pipes[name]

    @property
    def dit_dtype(self) -> torch.dtype:
        """The transformer architectures' dtype: bf16 on CUDA (as they ship and are run; Flux overflows
        in fp16), the run's own (fp32) on the CPU."""
        return torch.bfloat16 if is_cuda(self.device) else self.dtype

    def drop(self, name: str) -> None:
        """Free architecture `name`'s pipeline."""
        self.pipes.pop(name, None)
        free(self.device)

    def folder(self, name: str) -> tuple[Path, float]:
        """`name` saved with `save_pretrained` (for the loaders that read a folder) and the seconds taken."""
        folder = self.workdir / name
        return folder, save_arch(self.plan.arch(name), folder, self.device, self.dtype)

    def generators(self, count: int, first_seed: int = 0) -> list[torch.Generator]:
        """One seeded generator per image, on the device (as `DiffusersEngine` makes them)."""
        return [torch.Generator(self.device).manual_seed(first_seed + i) for i in range(count)]


def bad_images(images: Any) -> dict[str, int]:
    """Images with NaN pixels and all-black images in a pipeline's `np` output (fp16 overflow shows
    as either: diffusers turns NaN into black when it makes PIL images)."""
    array = np.asarray(images, dtype=np.float32)
    flat = array.reshape(array.shape[0], -1)
    return {
        "nan_images": int(np.isnan(flat).any(axis=1).sum()),
        "black_images": int((np.nan_to_num(flat, nan=0.0).max(axis=1) <= 0.0).sum()),
    }


def measure_call(run: Run, pipe: Any, arch: Arch | DiTArch, images: int, **call: Any) -> dict[str, Any]:
    """Time `pipe(...)` making `images` images of `arch` (median of the plan's runs after its warm-up):
    images/s, seconds, peak memory, the weights' memory, `batch_memory_bytes`' estimate, bad images."""
    outputs: list[Any] = []
    steps = call.pop("num_inference_steps", arch.steps)

    def one() -> None:
        out = pipe(
            prompt=[PROMPT] * images,
            width=arch.size,
            height=arch.size,
            num_inference_steps=steps,
            guidance_scale=arch.guidance,
            generator=run.generators(images),
            output_type="np",
            **call,
        )
        outputs[:] = [out.images]

    weights = allocated_gib(run.device)
    reset_peak(run.device)
    timing = timed(one, run.device, warmup=run.plan.warmup, runs=run.plan.runs)
    scale = recognise(pipe).activation_scale  # the family's, as the engine sizes batches with it
    estimate = batch_memory_bytes(images, arch.size, arch.size, arch.guidance, scale) / 2**30
    return {
        "images": images,
        "size": arch.size,
        "steps": steps,
        "guidance": arch.guidance,
        "images_per_s": images / timing.median,
        "median_s": timing.median,
        "runs_s": timing.runs,
        "peak_memory_gib": peak_memory_gib(run.device),
        "weights_gib": weights,
        "activation_estimate_gib": estimate,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,  # process-wide: on once the engine loaded
        **bad_images(outputs[0]),
    }
