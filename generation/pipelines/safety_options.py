"""SAFETY as a value the settings and the Ray driver can hold without importing torch (the checks
themselves are in `generation.pipelines.safety`)."""

from __future__ import annotations

from dataclasses import dataclass

SAFETY_MODES = ("model", "require", "off")
DEFAULT_SAFETY_CHECKER = "CompVis/stable-diffusion-safety-checker"


@dataclass(frozen=True)
class SafetyOptions:
    """The SAFETY mode and, for `require`, where the standalone checker comes from."""

    mode: str = "model"
    checker_id: str = DEFAULT_SAFETY_CHECKER

    def __post_init__(self) -> None:
        if self.mode not in SAFETY_MODES:
            raise ValueError(f"SAFETY must be one of {', '.join(SAFETY_MODES)}, not {self.mode!r}")
