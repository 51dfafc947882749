"""Any other diffusers text-to-image pipeline: plain text-to-image at its own defaults, with
`--cfg` and `--no` where its call takes them; every other feature is refused clearly."""

from __future__ import annotations

from typing import Any

from generation.families.base import Family, call_parameters
from generation.families.features import Features, Guidance


def generic_family(pipe: Any) -> Family:
    """The generic family of `pipe`, from what its `__call__` takes."""
    parameters = call_parameters(pipe)
    features = Features(
        family="generic",
        label=type(pipe).__name__.removesuffix("Pipeline") or "other",
        guidance=Guidance.CLASSIC if "guidance_scale" in parameters else Guidance.NONE,
        negative="negative_prompt" in parameters,
        weights=False,
        samplers=(),
        tile=False,
        chaos=False,
        stop="callback_on_step_end" in parameters and hasattr(type(pipe), "interrupt"),
        image=False,
        edits=False,
        lora=None,
        size_step=16,
    )
    denoiser = "transformer" if getattr(pipe, "transformer", None) is not None else "unet"
    return Family(features, denoiser=denoiser)
