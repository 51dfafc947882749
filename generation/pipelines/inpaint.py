# mypy: disable-error-code="no-untyped-call"
"""Edits of one picture on the weights already loaded: image-to-image and inpainting pipelines made
with diffusers' `from_pipe`, which share the text-to-image pipeline's modules (no second copy).

A plain model inpaints as diffusers does for it (the known latents are blended back each step); an
inpainting model (a 9-channel UNet, Flux Fill: the mask and the masked picture as extra input
channels; `Family.fills`) is used as one, and also runs the unmasked edits, with a mask that redraws
everything. A loaded pipeline that is itself an inpainting pipeline (its call takes `mask_image`:
`FluxFillPipeline`) serves as both. `run_edits` runs edits
of one kind, size and strength as one pipeline call with one generator per image, then pastes each
canvas's kept pixels back. Not thread-safe: the worker thread that owns the model owns these.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting
from PIL import Image

from generation.media.canvas import Canvas, paste_back

Pipeline = Any  # a diffusers pipeline (see generation.pipelines.loading.Pipeline)
StepEnd = Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]  # diffusers' callback_on_step_end


@dataclass(frozen=True)
class EditCall:
    """One request's part of a batch: its prompts, its seeds (one image each) and its canvas."""

    prompt: str
    negative_prompt: str
    seeds: tuple[int, ...]
    canvas: Canvas


@dataclass
class EditPipelines:
    """The loaded model's image-to-image and inpainting pipelines, sharing its modules."""

    img2img: Pipeline
    inpaint: Pipeline
    fills: bool = False  # the loaded model is an inpainting model: every edit runs on `inpaint`

    @classmethod
    def from_text2img(
        cls, text2img: Pipeline, img2img: Pipeline | None = None, *, fills: bool = False
    ) -> EditPipelines:
        """Both pipelines over `text2img`'s modules through `from_pipe` (`img2img`: one already made
        so, as `LoadedModel.img2img` is; `fills`: `Family.fills` of the loaded model)."""
        if "mask_image" in inspect.signature(type(text2img).__call__).parameters:
            return cls(img2img=text2img, inpaint=text2img, fills=True)  # Flux Fill: itself
        inpaint = AutoPipelineForInpainting.from_pipe(text2img)
        inpaint.set_progress_bar_config(disable=True)
        if img2img is None:
            img2img = AutoPipelineForImage2Image.from_pipe(text2img)
            img2img.set_progress_bar_config(disable=True)
        return cls(img2img=img2img, inpaint=inpaint, fills=fills)


def added_weight_bytes(base: Pipeline, derived: Pipeline) -> int:
    """Bytes of `derived`'s parameters and buffers whose storage `base` does not hold: what a
    pipeline made with `from_pipe` adds to memory beyond the model already loaded (0: nothing)."""

    def storages(pipe: Pipeline) -> dict[int, int]:
        found: dict[int, int] = {}
        for module in pipe.components.values():
            if isinstance(module, torch.nn.Module):
                for tensor in (*module.parameters(), *module.buffers()):
                    storage = tensor.untyped_storage()
                    found[storage.data_ptr()] = storage.nbytes()
        return found

    held = storages(base)
    return sum(size for pointer, size in storages(derived).items() if pointer not in held)


def pipeline_steps(steps: int, strength: float) -> int:
    """`num_inference_steps` for an edit of `steps` at `strength`: diffusers runs
    int(num_inference_steps * strength) of them, so ask for enough that at least one runs."""
    return max(steps, math.ceil(1 / strength))


def edit_arguments(
    pipes: EditPipelines, canvases: Sequence[Canvas], *, strength: float, steps: int
) -> tuple[Pipeline, dict[str, Any]]:
    """The pipeline for edits from `canvases` (one per image: one size, all masked or all not) and
    its image arguments: image, strength, steps, and for inpainting the masks and the size."""
    if not canvases:
        raise ValueError("an edit batch needs at least one canvas")
    size = canvases[0].size
    masked = canvases[0].mask is not None
    if any(c.size != size for c in canvases):
        raise ValueError("edits in one batch must have canvases of one size")
    if any((c.mask is not None) != masked for c in canvases):
        raise ValueError("edits in one batch must all be inpainting, or all image-to-image")
    kwargs: dict[str, Any] = {
        "image": [canvas.image for canvas in canvases],
        "strength": strength,
        "num_inference_steps": pipeline_steps(steps, strength),
    }
    if masked or pipes.fills:
        kwargs.update(mask_image=[_mask_of(canvas) for canvas in canvases], width=size[0], height=size[1])
        return pipes.inpaint, kwargs
    return pipes.img2img, kwargs


def run_edits(
    pipes: EditPipelines,
    calls: Sequence[EditCall],
    *,
    strength: float,
    steps: int,
    guidance: float,
    generator_device: str = "cpu",
    callback_on_step_end: StepEnd | None = None,
) -> list[list[Image.Image]]:
    """Every image of `calls` in one pipeline call (their canvases of one size, all masked or all
    not), each from its own seeded generator; per call, its images with the kept pixels pasted back."""
    if not calls:
        raise ValueError("run_edits needs at least one call")
    canvases = [c.canvas for c in calls for _ in c.seeds]
    pipe, kwargs = edit_arguments(pipes, canvases, strength=strength, steps=steps)
    kwargs.update(
        prompt=[c.prompt for c in calls for _ in c.seeds],
        negative_prompt=[c.negative_prompt for c in calls for _ in c.seeds],
        guidance_scale=guidance,
        generator=[torch.Generator(generator_device).manual_seed(s) for c in calls for s in c.seeds],
        output_type="pil",
    )
    if callback_on_step_end is not None:
        kwargs["callback_on_step_end"] = callback_on_step_end
    images: list[Image.Image] = pipe(**kwargs).images
    pasted = [paste_back(image, canvas) for image, canvas in zip(images, canvases, strict=True)]
    results, position = [], 0
    for call in calls:
        results.append(pasted[position : position + len(call.seeds)])
        position += len(call.seeds)
    return results


def _mask_of(canvas: Canvas) -> Image.Image:
    """The canvas's mask, or (image-to-image on an inpainting UNet) one that redraws everything."""
    return canvas.mask if canvas.mask is not None else Image.new("L", canvas.size, 255)
