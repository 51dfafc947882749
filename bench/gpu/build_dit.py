# mypy: disable-error-code="no-untyped-call"
"""Building the transformer pipelines (`bench.archs_dit`: Flux.1-schnell, SD 3.5 medium) with seeded
random weights, every component at full size, straight on the device in its dtype.

Each module is constructed under `torch.device(device)` with `dtype` as torch's default dtype, so its
parameters are allocated and randomly initialised (the modules' own initialisers) on the GPU in bf16
at once: no CPU copy, no fp32 copy (Flux's 11.9B-parameter transformer would need 48 GB in fp32), a
few seconds for the lot. Speed does not depend on the weights' values.

The prompts are encoded inside each timed call, as a user's call does, by the real-size encoders
(Flux: CLIP-L and T5 v1.1 XXL; SD 3.5: CLIP-L, CLIP-bigG and T5 XXL, 4.8B parameters, 9.5 GB in bf16)
through tokenizers made locally (`generation.pipelines.tiny.byte_tokenizer` for CLIP,
`generation.pipelines.tiny_tokenizers.t5_tokenizer` for T5): their vocabularies are small, but the
pipelines pad every prompt to the same lengths as the real tokenizers (77 and `max_sequence_length`),
so every tensor has its real shape.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from bench.archs_dit import DiTArch


@contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """torch's default floating dtype set to `dtype` inside (modules built there are made in it)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def _ready(module: Any, dtype: torch.dtype) -> Any:
    """In eval mode (T5's dropout off, as `from_pretrained` leaves it) and wholly in `dtype` (buffers
    a module makes in fp32 on purpose too, as `from_pretrained(torch_dtype=...)` casts them: SD3's
    positional table). `nn.Module.to` itself: diffusers' override only adds a warning about modules it
    would keep in fp32, and these have none."""
    module.eval()
    tensors = [*module.parameters(), *module.buffers()]
    if any(t.is_floating_point() and t.dtype != dtype for t in tensors):
        torch.nn.Module.to(module, dtype)
    return module


def build_dit_pipeline(arch: DiTArch, device: str, dtype: torch.dtype, seed: int = 0) -> Any:
    """The architecture's `FluxPipeline` or `StableDiffusion3Pipeline` with seeded random weights, on
    `device` in `dtype`."""
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxPipeline,
        FluxTransformer2DModel,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        T5Config,
        T5EncoderModel,
    )

    from generation.pipelines.tiny import byte_tokenizer
    from generation.pipelines.tiny_tokenizers import t5_tokenizer

    flux = arch.pipeline_class == "FluxPipeline"
    clip_tokenizers = [byte_tokenizer() for _ in arch.clips]
    t5_tok = t5_tokenizer()
    clip_ids = {
        "bos_token_id": clip_tokenizers[0].bos_token_id,
        "eos_token_id": clip_tokenizers[0].eos_token_id,
        "pad_token_id": clip_tokenizers[0].pad_token_id,
    }
    t5_ids = {"pad_token_id": t5_tok.pad_token_id, "eos_token_id": t5_tok.eos_token_id}
    clip_class = CLIPTextModel if flux else CLIPTextModelWithProjection
    with torch.device(device), default_dtype(dtype):
        torch.manual_seed(seed)
        transformer_class = FluxTransformer2DModel if flux else SD3Transformer2DModel
        transformer = _ready(transformer_class(**arch.transformer), dtype)
        torch.manual_seed(seed + 1)
        vae = _ready(AutoencoderKL(**arch.vae), dtype)
        clips = []
        for i, config in enumerate(arch.clips):
            torch.manual_seed(seed + 2 + i)
            clips.append(_ready(clip_class(CLIPTextConfig(**config, **clip_ids)), dtype))
        torch.manual_seed(seed + 2 + len(arch.clips))
        t5 = _ready(T5EncoderModel(T5Config(**arch.t5, **t5_ids)), dtype)
    scheduler = FlowMatchEulerDiscreteScheduler(**arch.scheduler)
    pipe: Any
    if flux:
        pipe = FluxPipeline(
            scheduler=scheduler,
            vae=vae,
            text_encoder=clips[0],
            tokenizer=clip_tokenizers[0],
            text_encoder_2=t5,
            tokenizer_2=t5_tok,
            transformer=transformer,
        )
    else:
        pipe = StableDiffusion3Pipeline(
            transformer=transformer,
            scheduler=scheduler,
            vae=vae,
            text_encoder=clips[0],
            tokenizer=clip_tokenizers[0],
            text_encoder_2=clips[1],
            tokenizer_2=clip_tokenizers[1],
            text_encoder_3=t5,
            tokenizer_3=t5_tok,
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def parameter_counts(pipe: Any) -> dict[str, int]:
    """Parameters of each of the pipeline's modules (transformer, vae, text encoders)."""
    counts: dict[str, int] = {}
    for name, component in pipe.components.items():
        if isinstance(component, torch.nn.Module):
            counts[name] = sum(p.numel() for p in component.parameters())
    return counts


def weights_bytes(pipe: Any) -> int:
    """Bytes of every parameter and buffer of the pipeline's modules (its weights' memory, whatever
    else the device holds)."""
    total = 0
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            tensors = [*component.parameters(), *component.buffers()]
            total += sum(t.numel() * t.element_size() for t in tensors)
    return total
