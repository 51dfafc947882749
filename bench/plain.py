"""Diffusers as a user calls it: the plain pipeline call that the benchmarks' baselines time."""

from __future__ import annotations

from typing import Any

from generation.prompts.request import GenerationRequest


def plain_call(pipe: Any, request: GenerationRequest, device: str = "cpu") -> Any:
    """`pipe(prompt, ...)` for `request` (its first seed, one generator on `device`); the output."""
    import torch

    return pipe(
        request.prompt,
        negative_prompt=request.negative_prompt or None,  # unset, as a user leaves it (SDXL zeroes it)
        width=request.width,
        height=request.height,
        num_inference_steps=request.steps,
        guidance_scale=request.guidance,
        generator=torch.Generator(device).manual_seed(request.seeds[0]),
    )
