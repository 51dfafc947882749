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
    FlowMatchEulerDiscreteScheduler,
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

# Flow-matching models (SD 3, Flux, Qwen-Image): schedulers that step a velocity along flow sigmas.
# Which of these a family takes is its `Features.samplers` (a pipeline that always passes its own
# sigmas, like Qwen-Image's, takes only the Euler ones).
_FLOW = {"use_flow_sigmas": True, "prediction_type": "flow_prediction"}
FLOW_SCHEDULERS: dict[str, tuple[Any, dict[str, Any]]] = {
    "euler": (FlowMatchEulerDiscreteScheduler, {"stochastic_sampling": False}),
    "euler_a": (FlowMatchEulerDiscreteScheduler, {"stochastic_sampling": True}),
    "dpmpp_2m": (DPMSolverMultistepScheduler, {**_DPMPP_2M, **_FLOW}),
    "unipc": (UniPCMultistepScheduler, _FLOW),
}
TABLES = {"epsilon": SCHEDULERS, "flow": FLOW_SCHEDULERS}


class Samplers:
    """The model's own scheduler and, made on first use, one scheduler per sampler name from the
    `schedule`'s table (`epsilon` or `flow`: the family's)."""

    def __init__(self, own: Any, schedule: str = "epsilon") -> None:
        self.own = own
        self.table = TABLES[schedule]
        self._made: dict[str, Any] = {}

    def get(self, name: str | None) -> Any:
        """The scheduler for `name` (None: the model's own)."""
        if name is None:
            return self.own
        if name not in self._made:
            cls, overrides = self.table[name]
            if "use_flow_sigmas" in overrides:  # the flow's shift is the model's own
                overrides = {**overrides, "flow_shift": float(self.own.config.get("shift", 1.0))}
            self._made[name] = cls.from_config(self.own.config, **overrides)
        return self._made[name]
