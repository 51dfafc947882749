# mypy: disable-error-code="no-untyped-call"
"""`--sampler NAME` → a diffusers scheduler made with `from_config` of the model's own scheduler
config (so its betas, spacing and offsets carry over). Made once per name and kept: swapping
samplers between batches replaces only `pipe.scheduler`, never reloads a weight."""

from __future__ import annotations

from typing import Any

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    UniPCMultistepScheduler,
)

from generation.prompts.samplers import SAMPLER_LABELS

_DPMPP_2M = {"algorithm_type": "dpmsolver++", "solver_order": 2}
SCHEDULERS: dict[str, tuple[Any, dict[str, Any]]] = {
    "euler": (EulerDiscreteScheduler, {}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),
    "dpmpp_2m": (DPMSolverMultistepScheduler, {**_DPMPP_2M, "use_karras_sigmas": False}),
    "dpmpp_2m_karras": (DPMSolverMultistepScheduler, {**_DPMPP_2M, "use_karras_sigmas": True}),
    "unipc": (UniPCMultistepScheduler, {}),
    "ddim": (DDIMScheduler, {}),
    "heun": (HeunDiscreteScheduler, {}),
}
assert set(SCHEDULERS) == set(SAMPLER_LABELS), "every sampler name needs its scheduler"


class Samplers:
    """The model's own scheduler and, made on first use, one scheduler per sampler name."""

    def __init__(self, own: Any) -> None:
        self.own = own
        self._made: dict[str, Any] = {}

    def get(self, name: str | None) -> Any:
        """The scheduler for `name` (None: the model's own)."""
        if name is None:
            return self.own
        if name not in self._made:
            cls, overrides = SCHEDULERS[name]
            self._made[name] = cls.from_config(self.own.config, **overrides)
        return self._made[name]
