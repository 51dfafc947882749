"""Generation requests: the frozen value every other part passes around.

`GenerationRequest` says exactly what to draw; `parse_prompt` (in `generation.parser`) builds one
from a member's text and slash options. Nothing here imports torch or Discord.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any


class Mode(StrEnum):
    """What the pipeline starts from."""

    TXT2IMG = "txt2img"
    IMG2IMG = "img2img"  # from a member's own picture, at `strength`
    VARIATION = "variation"  # image-to-image of one result image, new seeds
    UPSCALE = "upscale"  # one result image resized up, then image-to-image at moderate strength


MAX_IMAGES = 4
UPSCALE_FACTOR = 2
UPSCALE_STRENGTH = 0.35
VARIATION_STRENGTH = 0.6


@dataclass(frozen=True)
class ModelProfile:
    """What the parser and the scheduler need to know about the loaded model."""

    name: str
    native_size: int  # e.g. 512 for SD 1.5, 768 for SD 2.x, 1024 for SDXL, 64 for `tiny`
    default_steps: int
    default_guidance: float
    min_steps: int = 1
    max_steps: int = 100
    token_limit: int = 77  # including the begin/end tokens, as CLIP counts
    is_turbo: bool = False
    has_safety_checker: bool = False


@dataclass(frozen=True)
class PromptOptions:
    """Settings given as slash-command options; None means 'not given' (inline flag or default)."""

    negative: str | None = None
    aspect: str | None = None
    steps: int | None = None
    guidance: float | None = None
    seed: int | None = None
    count: int | None = None
    strength: float | None = None


@dataclass(frozen=True)
class GenerationRequest:
    """Everything that decides the pixels. Equal requests on one model and device give equal images."""

    prompt: str
    width: int
    height: int
    steps: int
    guidance: float
    seeds: tuple[int, ...]  # one per image; len(seeds) is the image count (1..MAX_IMAGES)
    model: str
    negative_prompt: str = ""
    aspect: str = "1:1"
    mode: Mode = Mode.TXT2IMG
    strength: float | None = None  # img2img / variation / upscale only
    source_image: str | None = None  # sha256 hex of the source PNG/JPEG bytes in the image store
    warnings: tuple[str, ...] = field(default=(), compare=False)  # e.g. "12 tokens dropped"

    @property
    def count(self) -> int:
        """How many images this request makes (and spends)."""
        return len(self.seeds)

    def batch_key(self) -> tuple[Any, ...]:
        """Requests with equal keys may run in one batch (same shapes and schedule)."""
        return (self.model, self.mode, self.width, self.height, self.steps, self.guidance, self.strength)

    def with_seeds(self, seeds: tuple[int, ...]) -> GenerationRequest:
        """The same settings with other seeds (a reroll)."""
        return replace(self, seeds=seeds)

    def to_json(self) -> str:
        """Serialise for storage (warnings are not kept)."""
        data = asdict(self)
        data["seeds"] = list(self.seeds)
        data["mode"] = self.mode.value
        data.pop("warnings")
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> GenerationRequest:
        """Inverse of `to_json`."""
        data = json.loads(text)
        data["seeds"] = tuple(data["seeds"])
        data["mode"] = Mode(data["mode"])
        return cls(**data)
