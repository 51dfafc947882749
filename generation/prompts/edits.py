"""The edits of one picture (PRODUCT.md "Working on one picture"): a small frozen spec per action.

`edit_spec` builds an `EditSpec` with the action's defaults (`EDIT_DEFAULTS`) and checks its
inputs with precise `EditError`s; `generation.media.canvas.prepare_canvas` turns a spec and a
source picture into what the pipeline starts from, and `generation.pipelines.inpaint.run_edits`
runs it. Nothing here imports torch or Discord.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from generation.prompts.errors import PromptError


class EditKind(StrEnum):
    """One button of a one-image result."""

    VARY_SUBTLE = "vary_subtle"
    VARY_STRONG = "vary_strong"
    VARY_REGION = "vary_region"
    ZOOM_OUT = "zoom_out"
    PAN = "pan"
    MAKE_SQUARE = "make_square"
    UPSCALE_SUBTLE = "upscale_subtle"
    UPSCALE_CREATIVE = "upscale_creative"


class Direction(StrEnum):
    """Which side a pan grows."""

    LEFT = "left"
    RIGHT = "right"
    UP = "up"
    DOWN = "down"


REGION_NAMES = (
    "top left",
    "top",
    "top right",
    "left",
    "center",
    "right",
    "bottom left",
    "bottom",
    "bottom right",
)
"""The 3×3 grid of `Vary (Region)`, row by row (PRODUCT.md's names, its multi-select's options)."""

MIN_ZOOM, MAX_ZOOM = 1.0, 2.0  # a zoom factor F is 1 < F <= 2


@dataclass(frozen=True)
class EditDefaults:
    """An action's pipeline and denoising strength (its steps are the original request's)."""

    inpaint: bool  # True: the inpainting pipeline with a mask; False: image-to-image
    strength: float
    label: str  # how `Action:` names it


EDIT_DEFAULTS: dict[EditKind, EditDefaults] = {
    EditKind.VARY_SUBTLE: EditDefaults(inpaint=False, strength=0.35, label="vary (subtle)"),
    EditKind.VARY_STRONG: EditDefaults(inpaint=False, strength=0.75, label="vary (strong)"),
    EditKind.VARY_REGION: EditDefaults(inpaint=True, strength=0.9, label="vary (region)"),
    EditKind.ZOOM_OUT: EditDefaults(inpaint=True, strength=0.9, label="zoom out"),
    EditKind.PAN: EditDefaults(inpaint=True, strength=0.9, label="pan"),
    EditKind.MAKE_SQUARE: EditDefaults(inpaint=True, strength=0.9, label="make square"),
    EditKind.UPSCALE_SUBTLE: EditDefaults(inpaint=False, strength=0.25, label="upscale (subtle)"),
    EditKind.UPSCALE_CREATIVE: EditDefaults(inpaint=False, strength=0.5, label="upscale (creative)"),
}


class EditError(PromptError):
    """An edit that cannot be made; `str()` is a one-line message for the member."""


@dataclass(frozen=True)
class EditSpec:
    """What to do to one picture. Build it with `edit_spec` (which checks it)."""

    kind: EditKind
    strength: float
    steps: int | None = None  # None: the original request's steps
    factor: float | None = None  # ZOOM_OUT only: 1 < factor <= 2
    direction: Direction | None = None  # PAN only
    regions: tuple[str, ...] = ()  # VARY_REGION: names from REGION_NAMES, in grid order
    mask_image: str | None = None  # VARY_REGION: sha256 of an uploaded mask in the image store
    of_job: str = ""  # the job whose picture this edits (for `Action: … of job …`)

    @property
    def inpaint(self) -> bool:
        """Whether it runs on the inpainting pipeline (with a mask) rather than image-to-image."""
        return EDIT_DEFAULTS[self.kind].inpaint

    def batch_key(self) -> tuple[Any, ...]:
        """Edits with equal keys (and equal canvas sizes) may run in one pipeline call."""
        return (self.kind, self.strength, self.steps)

    def action_text(self) -> str:
        """What the PNG's `parameters` say was done, e.g. `Action: zoom out 2x of job abc`."""
        source = f" of job {self.of_job}" if self.of_job else ""
        return f"Action: {self.describe()}{source}"

    def describe(self) -> str:
        """The action in a few words: `zoom out 1.5x`, `pan left`, `vary (region) top, center`."""
        label = EDIT_DEFAULTS[self.kind].label
        if self.kind is EditKind.ZOOM_OUT and self.factor is not None:
            return f"{label} {self.factor:g}x"
        if self.kind is EditKind.PAN and self.direction is not None:
            return f"{label} {self.direction.value}"
        if self.kind is EditKind.VARY_REGION:
            parts = [", ".join(self.regions)] if self.regions else []
            if self.mask_image:
                parts.append("uploaded mask")
            return f"{label} {' + '.join(parts)}"
        return label

    def to_json(self) -> str:
        """Serialise for storage beside the job's request."""
        data = asdict(self)
        data["regions"] = list(self.regions)
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> EditSpec:
        """Inverse of `to_json` (checked again, so a forged value is refused)."""
        try:
            data = json.loads(text)
            return edit_spec(
                EditKind(data["kind"]),
                strength=float(data["strength"]),
                steps=None if data["steps"] is None else int(data["steps"]),
                factor=None if data["factor"] is None else float(data["factor"]),
                direction=Direction(data["direction"]) if data["direction"] else None,
                regions=tuple(str(name) for name in data["regions"]),
                mask_image=str(data["mask_image"]) if data["mask_image"] else None,
                of_job=str(data.get("of_job") or ""),
            )
        except EditError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise EditError(f"not a stored edit: {exc}") from None


def edit_spec(
    kind: EditKind,
    *,
    strength: float | None = None,
    steps: int | None = None,
    factor: float | None = None,
    direction: Direction | None = None,
    regions: tuple[str, ...] = (),
    mask_image: str | None = None,
    of_job: str = "",
) -> EditSpec:
    """A checked `EditSpec`; `strength` defaults to the action's (`EDIT_DEFAULTS`)."""
    strength = EDIT_DEFAULTS[kind].strength if strength is None else strength
    if not 0.0 < strength <= 1.0:
        raise EditError(f"strength must be more than 0 and at most 1, not {strength:g}")
    if steps is not None and steps < 1:
        raise EditError(f"steps must be at least 1, not {steps}")
    if (kind is EditKind.ZOOM_OUT) != (factor is not None):
        raise EditError("a zoom factor goes with zoom out, and only with it")
    if factor is not None:
        factor = check_zoom(factor)
    if (kind is EditKind.PAN) != (direction is not None):
        raise EditError("a direction goes with pan, and only with it")
    if kind is EditKind.VARY_REGION:
        regions = canonical_regions(regions)
        if not regions and not mask_image:
            raise EditError("Choose a part of the picture to redraw, or upload a mask (white = redraw).")
    elif regions or mask_image:
        raise EditError("regions and masks go with vary (region), and only with it")
    return EditSpec(kind, strength, steps, factor, direction, regions, mask_image, of_job)


def check_zoom(factor: float) -> float:
    """`factor` if 1 < factor <= 2 (Custom Zoom, `--zoom F`), else an `EditError` saying so."""
    if not math.isfinite(factor) or not MIN_ZOOM < factor <= MAX_ZOOM:
        raise EditError(
            f"The zoom factor must be more than {MIN_ZOOM:g} and at most {MAX_ZOOM:g}, not {factor:g}."
        )
    return float(factor)


def parse_zoom(text: str) -> float:
    """A zoom factor typed by a member (`1.5`, `2x`), checked as `check_zoom` does."""
    cleaned = text.strip().lower().removesuffix("x").strip()
    try:
        value = float(cleaned)
    except ValueError:
        raise EditError(
            f"The zoom factor must be a number between 1 and 2 (like 1.5), not {text.strip()!r:.40}."
        ) from None
    return check_zoom(value)


def canonical_regions(names: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """`names` as REGION_NAMES spells them (case and spaces forgiven), each once, in grid order."""
    wanted = set()
    for name in names:
        key = " ".join(name.lower().replace("_", " ").replace("-", " ").split())
        key = "center" if key == "centre" else key
        if key not in REGION_NAMES:
            raise EditError(f"Unknown part {name!r:.40}: choose from {', '.join(REGION_NAMES)}.")
        wanted.add(key)
    return tuple(name for name in REGION_NAMES if name in wanted)
