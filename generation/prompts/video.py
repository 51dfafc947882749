"""Animate (PRODUCT.md "Animate"): a picture becomes a short clip on the image-to-video model
(`VIDEO_MODEL`). `VideoSpec` is what a `Mode.ANIMATE` request carries besides the prompt and seed:
the motion asked for, and whether it extends an earlier clip (its last frame is the start, the clips
are joined). The clip's size, frame count, steps and guidance are the video model's own, worked out
by the engine from the picture (`generation.families.video`); a request keeps 0 for them
(`generation.prompts.request.animate_of`, `extend_of`). Nothing here imports torch or Discord."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Motion(StrEnum):
    """How much the clip moves (`generation.families.video` maps it onto the model's call)."""

    LOW = "low"
    HIGH = "high"


@dataclass(frozen=True)
class VideoSpec:
    """What one clip is: its motion, and whether it continues a clip (the source is that MP4)."""

    motion: Motion
    extend: bool = False
    of_job: str | None = None  # the job whose picture or clip it starts from, for the parameters

    def describe(self) -> str:
        """`animate (low motion)` or `extend (high motion)`."""
        return f"{'extend' if self.extend else 'animate'} ({self.motion.value} motion)"

    def to_data(self) -> dict[str, Any]:
        """For `GenerationRequest.to_json`."""
        return {"motion": self.motion.value, "extend": self.extend, "of_job": self.of_job}

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> VideoSpec:
        """Inverse of `to_data`."""
        return cls(Motion(data["motion"]), bool(data.get("extend", False)), data.get("of_job"))
