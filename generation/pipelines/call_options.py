"""What a batch's requests ask of one pipeline call beyond diffusers' own arguments: the sampler,
`--tile`, `--stop`, `--chaos` and weighted prompts. `batch_call` applies them for that call and
restores the pipeline after, so the next batch finds it as loaded (no reload, no copy)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from diffusers.utils.torch_utils import randn_tensor

from generation.families.base import Family
from generation.pipelines.prompt_encoding import WeightedEncoder
from generation.pipelines.samplers import Samplers
from generation.prompts.request import GenerationRequest, Mode


@contextmanager
def circular_padding(*modules: Any) -> Iterator[int]:
    """Every `Conv2d` of `modules` pads circularly (edges wrap) inside the block; restored after.
    Yields how many convolutions it changed."""
    convs = [m for module in modules if module is not None for m in module.modules()]
    convs = [c for c in convs if isinstance(c, torch.nn.Conv2d)]
    before = [c.padding_mode for c in convs]
    for conv in convs:
        conv.padding_mode = "circular"
    try:
        yield len(convs)
    finally:
        for conv, mode in zip(convs, before, strict=True):
            conv.padding_mode = mode


@contextmanager
def scheduler_swapped(pipe: Any, scheduler: Any) -> Iterator[None]:
    """`pipe.scheduler` is `scheduler` inside the block, the one it had after."""
    own = pipe.scheduler
    pipe.scheduler = scheduler
    try:
        yield
    finally:
        pipe.scheduler = own


def stopping_callback(callback: Callable[..., Any], percent: int) -> Callable[..., Any]:
    """`callback`, then, once `percent`% of the steps ran, the pipeline's interrupt flag (diffusers
    skips the remaining steps and decodes the latents as they are: a softer, less finished picture)."""

    def wrapped(pipe: Any, step_index: int, timestep: Any, tensors: dict[str, Any]) -> Any:
        out = callback(pipe, step_index, timestep, tensors)
        if step_index + 1 >= math.ceil(int(pipe.num_timesteps) * percent / 100):
            pipe._interrupt = True
        return out

    return wrapped


def chaos_latents(
    pipe: Any, family: Family, requests: Sequence[GenerationRequest], generators: Sequence[torch.Generator]
) -> torch.Tensor:
    """Initial noise for every image: with chaos c, image i of a request is
    √(1 − c/100)·(its first image's noise) + √(c/100)·(its own noise), so 0 makes the grid one
    picture, 100 independent pictures; the first image is always its seed's own. Drawn in the
    family's shape (`Family.noise_shape`) and packed as its pipeline takes it."""
    first = requests[0]
    shape = family.noise_shape(pipe, first.width, first.height)
    denoiser = family.denoiser_of(pipe)
    device, dtype = denoiser.device, denoiser.dtype
    out: list[torch.Tensor] = []
    position = 0
    for request in requests:
        mine = generators[position : position + request.count]
        own = [randn_tensor(shape, generator=g, device=device, dtype=dtype) for g in mine]
        position += request.count
        if request.chaos is None:
            out += own
            continue
        share = request.chaos / 100
        out += [math.sqrt(1 - share) * own[0] + math.sqrt(share) * noise for noise in own]
    packed: torch.Tensor = family.pack(pipe, torch.cat(out))
    return packed


def batch_call(
    pipe: Any,
    requests: Sequence[GenerationRequest],
    kwargs: dict[str, Any],
    samplers: Samplers,
    encoder: WeightedEncoder | None,
    family: Family,
    sampler: str | None,
) -> ExitStack:
    """Adjust `kwargs` (the pipeline call's arguments) for `requests` (one batch key) and return the
    block that applies the rest to `pipe` for the call: `with batch_call(...): pipe(**kwargs)`.
    `sampler`: the one this call runs (the requests', where the call can run it; None: the model's)."""
    first = requests[0]
    stack = ExitStack()
    if sampler is not None:
        stack.enter_context(scheduler_swapped(pipe, samplers.get(sampler)))
    if first.tile:
        stack.enter_context(circular_padding(family.denoiser_of(pipe), pipe.vae))
    if first.stop < 100:
        kwargs["callback_on_step_end"] = stopping_callback(kwargs["callback_on_step_end"], first.stop)
    if first.mode is Mode.TXT2IMG and any(r.chaos is not None for r in requests):
        kwargs["latents"] = chaos_latents(pipe, family, requests, kwargs["generator"])
    if first.weighted:
        if encoder is None:
            raise ValueError("this model does not encode weighted prompts")
        del kwargs["prompt"]
        takes_negative = kwargs.pop("negative_prompt", None) is not None  # the family's call may not
        embeddings = encoder.batch(requests)
        kwargs.update({k: v for k, v in embeddings.items() if takes_negative or not k.startswith("negative")})
    return stack
