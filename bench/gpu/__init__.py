"""`python -m bench gpu`: every GPU figure in one run, most important first, each written to a results
file (JSON lines) the moment it is measured, within a time budget. See bench/README.md.

Steps (`STEPS`): the machine (GPU name, clocks, bf16 matmul rate); SD 1.5 at 512², 20 steps, CFG, fp16,
random weights from configs: images/s at batch 1, 4, 8, 16, and one request's steps/s; the service
(the project's scheduler and worker, 8 concurrent requests) against plain diffusers one at a time;
SD-Turbo, one step; SDXL at 1024², batch 1 and 4; Flux.1-schnell (4 steps) and SD 3.5 medium (20 steps,
CFG) at 1024² in bf16, every component full size, batch 1 and 4; Wan 2.1 image-to-video 14B at 480P
(81 frames, a few timed steps: frames/s and peak memory); inpainting (`from_pipe`) at batch 8;
FLOPs per image; the safety checker per image; the VAE decode with and without slicing; a profile of
one step; the `OPTIMISE` variants, torch.compile last and only if its warm-up fits. Each timing is CUDA
synchronised, after a warm-up run, the median of several runs; each records its peak memory.

`--dry-run` walks every step on the CPU with tiny stand-in architectures at 64 px (CI runs it);
its figures are CPU figures and say so. `--report FILE` appends a results file's summary to
bench/RESULTS.md (after a run on a machine that could not write it).
"""

from bench.gpu.cli import STEPS, main

__all__ = ["STEPS", "main"]
