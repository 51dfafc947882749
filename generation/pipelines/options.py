"""Speed options for a loaded pipeline, as a value the settings can parse without importing torch."""

from __future__ import annotations

from dataclasses import dataclass, replace

# Setting name → OptimiseOptions field, for `OPTIMISE=channels_last,fuse_qkv,compile,xformers`.
OPTIMISE_FLAGS = {
    "channels_last": "channels_last",
    "fuse_qkv": "fuse_qkv",
    "compile": "compile_unet",
    "xformers": "xformers",
}


@dataclass(frozen=True)
class OptimiseOptions:
    """Speed options applied after loading. All off on CPU; see `generation.pipelines.loading.optimise`."""

    # Off by default: torch's SDPA runs flash / memory-efficient kernels itself, and an xformers build
    # must match the exact torch; on only if asked for, if it imports, on CUDA.
    xformers: bool = False
    vae_slicing: bool = True  # decode a batch one image at a time (lower peak memory, same pixels)
    channels_last: bool = False
    fuse_qkv: bool = False
    compile_unet: bool = False  # torch.compile the UNet; the engine warms it up at start


def parse_optimise(text: str) -> OptimiseOptions:
    """`"none"` (or empty) or a comma list of channels_last, fuse_qkv, compile, xformers → options."""
    options = OptimiseOptions()
    for part in (p.strip() for p in text.split(",")):
        if part in ("", "none"):
            continue
        if part not in OPTIMISE_FLAGS:
            raise ValueError(f"unknown speed option {part!r}: expected none or {', '.join(OPTIMISE_FLAGS)}")
        options = replace(options, **{OPTIMISE_FLAGS[part]: True})
    return options
