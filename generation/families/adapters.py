"""Reference adapters as plain data: where an IP-Adapter or a Flux Redux model loads from, and how a
family scales an IP-Adapter for a style reference. The family modules declare their defaults
(`generation.families.sd`, `generation.families.flux`); `MODELS` may name another per model
(`name=source ref=SPEC`, `parse_adapter`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

IP_ADAPTER, REDUX = "ip-adapter", "redux"


@dataclass(frozen=True)
class AdapterSpec:
    """A reference adapter. An IP-Adapter: `diffusers`' `load_ip_adapter(source, subfolder, weight_name,
    image_encoder_folder)`; a Flux Redux model (`kind` REDUX): `FluxPriorReduxPipeline` at `source`."""

    source: str  # hub id or folder
    subfolder: str = ""
    weight_name: str = ""
    image_encoder_folder: str = "image_encoder"  # relative to `subfolder` unless it holds a "/"
    kind: str = IP_ADAPTER
    encoder: str = ""  # an image encoder of its own (hub id or folder: SD 3.5's SigLIP), else in `source`

    def describe(self) -> str:
        """As MODELS writes it: `source:subfolder/weight.safetensors[@encoder]`, or `redux:source`."""
        if self.kind == REDUX:
            return f"{REDUX}:{self.source}"
        inner = f"{self.subfolder}/{self.weight_name}" if self.subfolder else self.weight_name
        return f"{self.source}:{inner}" + (f"@{self.encoder}" if self.encoder else "")


NO_REFERENCE_ADAPTER = AdapterSpec("none", "", "")
"""`ref=none` in MODELS: the model takes no references, whatever its family's default."""


def parse_adapter(text: str) -> AdapterSpec:
    """`source:subfolder/weight.safetensors` (the image encoder in `subfolder/image_encoder`), or
    `source:weight.safetensors`, either with `@encoder` (an image encoder at another hub id or folder,
    as SD 3.5's IP-Adapter takes SigLIP), `redux:source` (a Flux Redux model), or `none`
    (`NO_REFERENCE_ADAPTER`); ValueError saying the form."""
    if text.strip().lower() == NO_REFERENCE_ADAPTER.source:
        return NO_REFERENCE_ADAPTER
    if text.strip().startswith(f"{REDUX}:") and text.strip()[len(REDUX) + 1 :]:
        return AdapterSpec(text.strip()[len(REDUX) + 1 :], kind=REDUX)
    text, at, encoder = text.strip().partition("@")
    if at and not encoder.strip():
        raise ValueError(f"ref={text}@ names no image encoder after the @")
    source, sep, inner = text.strip().rpartition(":")
    if not sep or not source or not inner.endswith((".safetensors", ".bin")):
        raise ValueError(
            f"ref={text!r} is not hub-id-or-folder:subfolder/weights.safetensors "
            "(e.g. h94/IP-Adapter:models/ip-adapter_sd15.safetensors) or redux:hub-id-or-folder"
        )
    subfolder, _, weight = inner.rpartition("/")
    return AdapterSpec(source, subfolder, weight, encoder=encoder.strip())


@dataclass(frozen=True)
class ReferenceLayers:
    """A family's IP-Adapter scales by kind: `style` the layers that carry style (InstantStyle), as
    `set_ip_adapter_scale` takes a per-block dict with 1.0 where the adapter acts; other kinds act on
    every layer."""

    style: dict[str, Any]

    def scale(self, style: bool, value: float) -> float | dict[str, Any]:
        """The scale to set: `value` everywhere, or (style) on the style layers only."""
        if not style:
            return value
        layers: dict[str, Any] = _scaled(self.style, value)
        return layers


def _scaled(layout: Any, value: float) -> Any:
    if isinstance(layout, dict):
        return {key: _scaled(inner, value) for key, inner in layout.items()}
    if isinstance(layout, list):
        return [_scaled(inner, value) for inner in layout]
    return float(layout) * value
