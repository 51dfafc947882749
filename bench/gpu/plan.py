"""What the GPU run measures and at which sizes: `FULL` on a CUDA GPU, `DRY` (the tiny stand-in
architectures at 64 px on the CPU, one timed run each) to walk every step in CI."""

from __future__ import annotations

from dataclasses import dataclass

from bench.archs import Arch, get_arch
from bench.archs_dit import DiTArch, get_dit_arch
from bench.archs_video import VideoArch, get_video_arch

PROMPT = "a red fox in the snow, golden hour, highly detailed photograph"


@dataclass(frozen=True)
class Plan:
    """Sizes, repetitions and limits of one run."""

    tiny: bool
    sd15_batches: tuple[int, ...]  # images per plain pipeline call
    service_clients: int  # concurrent requests against the service
    service_rounds: int  # timed images per client
    turbo_batches: tuple[int, ...]
    sdxl_batches: tuple[int, ...]
    flux_batches: tuple[int, ...]  # Flux.1-schnell
    sd35_batches: tuple[int, ...]  # SD 3.5 medium
    video_steps: int  # Wan 2.1 image-to-video: denoising steps of the timed call (at least 2: step gaps)
    edit_batch: int  # inpainting, the VAE decode, the safety checker, the profile and the variants
    vae_batch: int  # the VAE decode with slicing on and off
    warmup: int  # untimed runs before each timing
    runs: int  # timed runs (the median is reported)
    compile_limit_s: float  # the torch.compile variant: attempted with this much left, abandoned past it
    matmul_n: int

    def arch(self, name: str) -> Arch:
        """The full-size architecture, or its tiny stand-in in a dry run."""
        return get_arch(name, tiny=self.tiny)

    def dit_arch(self, name: str) -> DiTArch:
        """The full-size transformer architecture, or its tiny stand-in in a dry run."""
        return get_dit_arch(name, tiny=self.tiny)

    def video_arch(self, name: str) -> VideoArch:
        """The full-size image-to-video architecture, or its tiny stand-in in a dry run."""
        return get_video_arch(name, tiny=self.tiny)


FULL = Plan(
    tiny=False,
    sd15_batches=(1, 4, 8, 16),
    service_clients=8,
    service_rounds=3,
    turbo_batches=(1, 16),
    sdxl_batches=(1, 4),
    flux_batches=(1, 4),
    sd35_batches=(1, 4),
    video_steps=3,
    edit_batch=8,
    vae_batch=16,
    warmup=1,
    runs=3,
    compile_limit_s=180.0,
    matmul_n=8192,
)

DRY = Plan(
    tiny=True,
    sd15_batches=(1, 2),
    service_clients=4,
    service_rounds=1,
    turbo_batches=(1, 2),
    sdxl_batches=(1, 2),
    flux_batches=(1, 2),
    sd35_batches=(1, 2),
    video_steps=2,
    edit_batch=2,
    vae_batch=2,
    warmup=1,
    runs=1,
    compile_limit_s=60.0,
    matmul_n=256,
)
