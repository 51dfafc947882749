"""What the chosen device is, in one line (for `--check` and the start-up log), and how much GPU
memory is in use (for `/metrics`). `resolve_device` (in `loading`) says whether it exists."""

from __future__ import annotations

import torch

from generation.pipelines.loading import resolve_device

GIB = 1024**3


def describe_device(setting: str) -> str:
    """`DEVICE` resolved and described (the GPU's name and free/total memory on CUDA); `ValueError`
    with one line when the device is not there."""
    device = resolve_device(setting)
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        free, total = torch.cuda.mem_get_info(index)
        name = torch.cuda.get_device_name(index)
        return f"{device} ({name}, {free / GIB:.1f} of {total / GIB:.1f} GiB free)"
    if device == "mps":
        return "mps (Apple GPU)"
    hint = "" if setting == "cpu" else "; no CUDA or MPS found, so generation is slow"
    return f"cpu ({torch.get_num_threads()} threads{hint})"


def gpu_memory_in_use() -> dict[str, int]:
    """Bytes allocated by torch on each CUDA device (empty without CUDA)."""
    if not torch.cuda.is_available():
        return {}
    return {f"cuda:{i}": int(torch.cuda.memory_allocated(i)) for i in range(torch.cuda.device_count())}
