"""Pictures as prompts: what a request carries of its style and subject references (`--sref`, `--oref`,
`/imagine`'s `style_image`/`subject_image`, `/blend`'s pictures). Pure: no torch, no network.

A reference is a kind, its pictures (their hashes in the image store, once fetched, and where each
came from), and a weight on Midjourney's scale (`--sw` 0–1000, `--ow` 1–1000, 100 by default). The
engine turns the weight into the reference adapter's scale (`adapter_scale`); several pictures of one
kind are mixed into one (their image embeddings averaged).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

MAX_STYLE_PICTURES = 4  # `--sref` takes up to 4 pictures
MAX_BLEND_PICTURES = 5
MIN_BLEND_PICTURES = 2
DEFAULT_WEIGHT = 100
STYLE_WEIGHTS = (0, 1000)  # `--sw`
SUBJECT_WEIGHTS = (1, 1000)  # `--ow`
SCALE_AT_DEFAULT = 0.6  # the adapter scale of weight 100 (diffusers' and InstantStyle's usual)
SCALE_AT_MOST = 1.5  # the adapter scale of weight 1000 (past it IP-Adapters wash the prompt out)
NEEDS_ADAPTER = (
    "Reference pictures need a reference adapter (IP-Adapter on Stable Diffusion 1.x and XL, and SD 3.5"
    " Large; Redux on Flux.1; another named in MODELS with `ref=`) or a model that takes them as its own"
    " input (Flux Kontext, Qwen-Image-Edit: `--oref`, `/blend`)."
)


class ReferenceKind(StrEnum):
    """What a reference carries into the result."""

    STYLE = "style"  # palette, texture, medium (`--sref`): the adapter on the style layers only
    SUBJECT = "subject"  # a character or object (`--oref`): the adapter on every layer
    BLEND = "blend"  # `/blend`: the pictures mixed, content and style (every layer)


@dataclass(frozen=True)
class Reference:
    """One kind of reference of a request: its pictures and weight."""

    kind: ReferenceKind
    weight: int
    origins: tuple[str, ...]  # where each picture came from (a URL: an attachment's or a result's)
    images: tuple[str, ...] = ()  # each picture's sha256 in the image store, once fetched

    @property
    def fetched(self) -> bool:
        """Whether every picture is in the image store."""
        return len(self.images) == len(self.origins)

    def with_images(self, images: tuple[str, ...]) -> Reference:
        """The same reference with its pictures stored (one hash per origin, in order)."""
        if len(images) != len(self.origins):
            raise ValueError(f"{len(images)} pictures for {len(self.origins)} origins")
        return replace(self, images=images)

    def describe(self) -> str:
        """The reference as a PNG's `parameters` name it: kind, weight, each picture's hash and origin."""
        pictures = ", ".join(
            f"{image[:10]} ({origin})" for image, origin in zip(self.images, self.origins, strict=True)
        )
        return f"{self.kind.value} ×{self.weight}: {pictures}"

    def to_data(self) -> dict[str, Any]:
        """Plain data for a request's JSON."""
        return {
            "kind": self.kind.value,
            "weight": self.weight,
            "origins": list(self.origins),
            "images": list(self.images),
        }

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Reference:
        """Inverse of `to_data`."""
        return cls(
            ReferenceKind(data["kind"]),
            int(data["weight"]),
            tuple(str(o) for o in data["origins"]),
            tuple(str(i) for i in data.get("images", ())),
        )


def adapter_scale(weight: int) -> float:
    """The reference adapter's scale for a weight: 0 → 0 (off), 100 → SCALE_AT_DEFAULT, 1000 →
    SCALE_AT_MOST, linear in between (Midjourney's weights are a dial, not the adapter's own scale)."""
    if weight <= DEFAULT_WEIGHT:
        return SCALE_AT_DEFAULT * weight / DEFAULT_WEIGHT
    rise = (SCALE_AT_MOST - SCALE_AT_DEFAULT) * (weight - DEFAULT_WEIGHT) / (1000 - DEFAULT_WEIGHT)
    return SCALE_AT_DEFAULT + rise


def references_text(references: tuple[Reference, ...]) -> str:
    """The `References:` line of a PNG's parameters (empty without references)."""
    return "; ".join(r.describe() for r in references)
