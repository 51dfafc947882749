"""Does a LoRA file fit a model? Read from the safetensors headers alone (names and shapes; no weight
is loaded, no torch), so a bad adapter is refused before a job is queued.

The model side is its components' weight headers (`unet/` or `transformer/`, `text_encoder/`,
`text_encoder_2/` of a diffusers folder). The adapter side is every LoRA key in the names diffusers
reads: PEFT's (`unet.<layer>.lora_A.weight`, `transformer.<layer>…`), diffusers' older
`.lora.down.weight`, and kohya's (`lora_unet_<layer_with_underscores>.lora_down.weight`, `lora_te_`,
`lora_te1_`, `lora_te2_`; kohya calls a Flux transformer `unet` too, `lora_unet_double_blocks_…`).
Four checks, each one that diffusers would otherwise fail on at load:
0. the denoiser's kind: kohya names of a transformer (`double_blocks`, `single_blocks`, …) on a U-Net
   model, or of a U-Net (`down_blocks`, `input_blocks`, …) on a transformer model;
1. the cross-attention width: an adapter of `attn2.to_k`/`to_v` takes the text embeddings, 768 wide
   on SD 1.x, 1024 on SD 2.x, 2048 on SDXL (whatever its naming, so SDXL's kohya files are caught);
2. the components: an adapter of `text_encoder_2` needs a model that has one (SDXL);
3. each layer it names in diffusers' naming must exist in the model with the same input and output
   width. Layers in a naming this module cannot map (kohya's SDXL names) are left to the load.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from safetensors import safe_open

Shape = tuple[int, ...]
COMPONENTS = ("unet", "transformer", "text_encoder", "text_encoder_2")
DENOISER = "denoiser"  # kohya's `lora_unet_`: the UNet, or the transformer of a Flux-like model
_KOHYA = {
    "lora_unet_": DENOISER,
    "lora_transformer_": "transformer",
    "lora_te1_": "text_encoder",
    "lora_te2_": "text_encoder_2",
    "lora_te_": "text_encoder",
}
_DOWN = (".lora_A.weight", ".lora.down.weight", ".lora_down.weight")
_UP = (".lora_B.weight", ".lora.up.weight", ".lora_up.weight")
_CROSS = re.compile(r"attn2[._]to_[kv]$")
_WIDTHS = {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL"}
_TRANSFORMER_NAMES = ("double_blocks", "single_blocks", "transformer_blocks", "single_transformer_blocks")
_UNET_NAMES = ("down_blocks", "up_blocks", "mid_block", "input_blocks", "output_blocks", "middle_block")


class UnreadableLora(ValueError):
    """The file is not a safetensors file this check can read."""


def read_shapes(path: Path) -> dict[str, Shape]:
    """Every tensor's name and shape in a safetensors file, from its header only."""
    try:
        with safe_open(str(path), framework="numpy") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own errors for a truncated or foreign file
        raise UnreadableLora(f"{path.name} is not a readable safetensors file ({exc})") from exc


@dataclass(frozen=True)
class ModelLayers:
    """What a model's adapters can attach to: per component, each weight's layer name and shape
    (None: the component is there but its weights could not be read, so it is not checked)."""

    layers: Mapping[str, Mapping[str, Shape] | None]

    @property
    def cross_widths(self) -> set[int]:
        """The widths of the text embeddings the UNet's cross-attention takes."""
        unet = self.layers.get("unet") or {}
        return {shape[1] for name, shape in unet.items() if _CROSS.search(name) and len(shape) > 1}

    @classmethod
    def of_folder(cls, folder: Path) -> ModelLayers:
        """The layers of a diffusers model folder (its `model_index.json` says which components)."""
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
        layers: dict[str, Mapping[str, Shape] | None] = {}
        for component in COMPONENTS:
            entry = index.get(component)
            if not isinstance(entry, list) or not entry or entry[0] is None:
                continue
            files = sorted((folder / component).glob("*.safetensors"))
            shapes: dict[str, Shape] = {}
            try:
                for file in files:
                    shapes.update(read_shapes(file))
            except UnreadableLora:
                shapes = {}
            weights = {n.removesuffix(".weight"): s for n, s in shapes.items() if n.endswith(".weight")}
            layers[component] = weights or None
        return cls(layers)


@dataclass(frozen=True)
class _Key:
    component: str
    layer: str
    down: bool  # the A/down matrix (its second dimension is the layer's input width)
    dotted: bool  # diffusers' naming (else kohya's underscores)


def _parse(key: str) -> _Key | None:
    suffix = next((s for s in (*_DOWN, *_UP) if key.endswith(s)), None)
    if suffix is None:
        return None
    stem = key.removesuffix(suffix)
    for prefix, component in _KOHYA.items():
        if stem.startswith(prefix):
            return _Key(component, stem.removeprefix(prefix), suffix in _DOWN, dotted=False)
    component, _, layer = stem.partition(".")
    if component in COMPONENTS and layer:
        return _Key(component, layer, suffix in _DOWN, dotted=True)
    return None


def _on(key: _Key, denoiser: str | None) -> _Key:
    """`key` with kohya's `lora_unet_` taken as the model's own denoiser."""
    if key.component != DENOISER:
        return key
    return _Key(denoiser or "unet", key.layer, key.down, key.dotted)


def _width_name(width: int) -> str:
    family = _WIDTHS.get(width)
    return f"{width} wide ({family})" if family else f"{width} wide"


def incompatibility(lora: Mapping[str, Shape], model: ModelLayers) -> str | None:
    """Why the adapter with these tensors cannot be applied to `model`, or None when nothing says so."""
    keys = [(parsed, shape) for name, shape in lora.items() if (parsed := _parse(name)) is not None]
    if not any("lora" in name.lower() for name in lora):
        return "it holds no LoRA weights (no tensor named like lora_A, lora_down, …)"
    widths = model.cross_widths
    for key, shape in keys:
        cross = key.component in ("unet", DENOISER) and key.down and _CROSS.search(key.layer) is not None
        if cross and widths and len(shape) > 1 and shape[1] not in widths:
            ours = ", ".join(_width_name(w) for w in sorted(widths))
            return f"it was made for text embeddings {_width_name(shape[1])}; this model's are {ours}"
    by_underscores = {
        component: {name.replace(".", "_"): name for name in layers}
        for component, layers in model.layers.items()
        if layers is not None
    }
    denoiser = "unet" if "unet" in model.layers else "transformer" if "transformer" in model.layers else None
    for key, _shape in keys:
        if key.component != DENOISER or denoiser is None:
            continue
        if denoiser == "unet" and key.layer.startswith(_TRANSFORMER_NAMES):
            return "it was made for a transformer model (Flux-style layer names); this model is a U-Net"
        if denoiser == "transformer" and key.layer.startswith(_UNET_NAMES):
            return "it was made for a U-Net model (SD or SDXL layer names); this model is a transformer"
    keys = [(_on(key, denoiser), shape) for key, shape in keys]
    for key, shape in keys:
        if key.component not in model.layers:
            return f"it adapts `{key.component}`, which this model doesn't have"
        layers = model.layers[key.component]
        if layers is None:
            continue
        name = key.layer if key.dotted else by_underscores[key.component].get(key.layer)
        if name is None:
            continue  # a naming this check cannot map: left to the load
        base = layers.get(name)
        if base is None:
            return f"its layer `{key.component}.{name}` isn't in this model"
        if len(shape) < 2 or len(base) < 2:
            continue
        layer = f"`{key.component}.{name}`"
        if key.down and shape[1] != base[1]:
            return f"its layer {layer} takes {shape[1]} inputs; this model's takes {base[1]}"
        if not key.down and shape[0] != base[0]:
            return f"its layer {layer} gives {shape[0]} outputs; this model's gives {base[0]}"
    return None
