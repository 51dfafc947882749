"""`python -m bench edits`: batched edits of one picture against the same edits one at a time.

On the `tiny` model, on the CPU unless `--device` says otherwise. For each edit kind measured
(`zoom out 2x` on the inpainting pipeline, `vary (subtle)` on image-to-image), `--requests`
one-image edits of distinct pictures and seeds run as one `run_edits` call (**batched**) and as
that many calls in a loop (**sequential**), back to back in each of `--rounds` rounds (alternating
which goes first). `<kind>_speedup` is the median over rounds of sequential time / batched time,
with a 95% confidence interval. `from_pipe_added_bytes` is what the inpainting and image-to-image
pipelines made with `from_pipe` add in weights beyond the loaded model (`added_weight_bytes`);
on CUDA, `from_pipe_cuda_allocated_bytes` is the change in `torch.cuda.memory_allocated` across
making them.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from bench.config import BenchSettings
from bench.report import report
from bench.stats import median_ci95
from generation.prompts.edits import EditKind, EditSpec, edit_spec

KINDS: dict[str, EditSpec] = {
    "zoom_out_2x": edit_spec(EditKind.ZOOM_OUT, factor=2),
    "vary_subtle": edit_spec(EditKind.VARY_SUBTLE),
}


def pictures(count: int, size: int) -> list[Any]:
    """`count` distinct smooth pictures of `size`×`size` (sources for the edits)."""
    import numpy as np
    from PIL import Image

    yy, xx = np.mgrid[0:size, 0:size]
    out = []
    for i in range(count):
        channels = [128 + 90 * np.sin((xx + 11 * i + 5 * c) / 9 + yy / (7 + c)) for c in range(3)]
        out.append(Image.fromarray(np.stack(channels, axis=-1).astype(np.uint8), "RGB"))
    return out


def run(requests: int, rounds: int, size: int, steps: int, device: str, cache_dir: Path) -> dict[str, Any]:
    """Run the comparison and return the figures."""
    import torch

    from generation.media.canvas import SizeCap, prepare_canvas
    from generation.pipelines.inpaint import EditCall, EditPipelines, added_weight_bytes, run_edits
    from generation.pipelines.loading import load_pipeline

    model = load_pipeline("tiny", device, cache_dir=cache_dir)
    cuda = device.startswith("cuda")
    before = torch.cuda.memory_allocated() if cuda else 0
    pipes = EditPipelines.from_text2img(model.text2img)
    figures: dict[str, Any] = {"requests": requests, "rounds": rounds, "size": size, "steps": steps}
    figures["from_pipe_added_bytes"] = added_weight_bytes(model.text2img, pipes.inpaint) + added_weight_bytes(
        model.text2img, pipes.img2img
    )
    if cuda:
        figures["from_pipe_cuda_allocated_bytes"] = torch.cuda.memory_allocated() - before
    cap = SizeCap.for_native(model.profile.native_size)
    on = "cpu" if device == "mps" else device  # where the generators live
    sources = pictures(requests, size)
    for name, spec in KINDS.items():
        calls = [
            EditCall("a fox in the snow", "", (i,), prepare_canvas(spec, source, cap, seed=i))
            for i, source in enumerate(sources)
        ]

        def timed(batches: list[list[EditCall]], spec: EditSpec = spec) -> float:
            start = time.perf_counter()
            for batch in batches:
                run_edits(
                    pipes,
                    batch,
                    strength=spec.strength,
                    steps=steps,
                    guidance=7.5,
                    generator_device=on,
                )
            if cuda:
                torch.cuda.synchronize()
            return time.perf_counter() - start

        timed([calls[:1]])  # warm-up
        ratios, batched_s, sequential_s = [], [], []
        for i in range(rounds):
            if i % 2 == 0:
                b, s = timed([calls]), timed([[c] for c in calls])
            else:
                s, b = timed([[c] for c in calls]), timed([calls])
            batched_s.append(b)
            sequential_s.append(s)
            ratios.append(s / b)
        low, high = median_ci95(ratios)
        figures[f"{name}_speedup"] = round(statistics.median(ratios), 3)
        figures[f"{name}_speedup_ci95"] = [round(low, 3), round(high, 3)]
        figures[f"{name}_batched_s"] = round(statistics.median(batched_s), 4)
        figures[f"{name}_sequential_s"] = round(statistics.median(sequential_s), 4)
    return figures


def main(argv: list[str], settings: BenchSettings) -> int:
    """CLI entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m bench edits", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=8, help="one-image edits per batch (default 8)")
    parser.add_argument("--rounds", type=int, default=10, help="repetitions (default 10)")
    parser.add_argument("--size", type=int, default=64, help="picture side in pixels (default 64)")
    parser.add_argument("--steps", type=int, default=4, help="denoising steps (default 4)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N, mps")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.rounds < 1 or args.steps < 1:
        parser.error("--requests, --rounds and --steps must be at least 1")
    figures = run(args.requests, args.rounds, args.size, args.steps, args.device, settings.cache_dir())
    report("edits", figures, argv, results_path=settings.results_path)
    return 0
