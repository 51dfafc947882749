# mypy: disable-error-code="no-untyped-call"
"""generation.pipelines.tiny_ip_adapter: the tiny IP-Adapter loads into the `tiny` model through diffusers'
real `load_ip_adapter`, changes its pictures at scale 1, leaves them bit-identical at scale 0, and is
built once, seeded, into its cache folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from PIL import Image
from safetensors.torch import load_file

from generation.pipelines import tiny_ip_adapter
from generation.pipelines.source import TINY_FOLDER_NAME
from generation.pipelines.tiny_ip_adapter import (
    TINY_IP_ADAPTER_CLIP_DIM,
    TINY_IP_ADAPTER_ENCODER,
    TINY_IP_ADAPTER_FOLDER,
    TINY_IP_ADAPTER_WEIGHT,
    build_tiny_ip_adapter,
    ensure_tiny_ip_adapter,
    ip_adapter_key_shapes,
)

# Mean absolute pixel difference (in [0, 1]) a working adapter must make. Measured on the CPU (adapter
# seeds 0-4, 4 steps, 64 px): scale 1 against scale 0 0.040-0.052; two reference pictures 0.023-0.034.
# Repeating a call gives bit-identical pixels, so the noise floor is 0.
VISIBLE = 1e-2

RED = Image.new("RGB", (64, 64), (200, 40, 40))
BLUE = Image.new("RGB", (64, 64), (30, 60, 220))


def _unet_config(tiny_cache_dir: Path) -> dict[str, Any]:
    """The `tiny` model's UNet config, as saved in its folder."""
    config: dict[str, Any] = UNet2DConditionModel.load_config(tiny_cache_dir / TINY_FOLDER_NAME / "unet")
    return config


def _pipeline(tiny_cache_dir: Path) -> Any:
    """A fresh `tiny` pipeline (the session's `tiny_model` is shared and must not be changed)."""
    pipe = StableDiffusionPipeline.from_pretrained(tiny_cache_dir / TINY_FOLDER_NAME)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def adapter_folder(tiny_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny IP-Adapter for the `tiny` model's UNet, built once for this module."""
    return ensure_tiny_ip_adapter(tmp_path_factory.mktemp("ip-adapter"), _unet_config(tiny_cache_dir))


@pytest.fixture(scope="module")
def adapted(tiny_cache_dir: Path, adapter_folder: Path) -> Any:
    """A `tiny` pipeline with the tiny IP-Adapter loaded (tests set the scale they need)."""
    pipe = _pipeline(tiny_cache_dir)
    pipe.load_ip_adapter(
        adapter_folder,
        subfolder="",
        weight_name=TINY_IP_ADAPTER_WEIGHT,
        image_encoder_folder=TINY_IP_ADAPTER_ENCODER,
    )
    return pipe


def _pixels(pipe: Any, **extra: Any) -> np.ndarray[Any, Any]:
    """One fixed-seed 4-step picture at the tiny model's native 64 px, as floats in [0, 1]."""
    images: np.ndarray[Any, Any] = pipe(
        prompt="a red fox in the snow",
        num_inference_steps=4,
        height=64,
        width=64,
        output_type="np",
        generator=torch.Generator().manual_seed(1),
        **extra,
    ).images
    return images


def _mean_abs(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def test_loads_through_load_ip_adapter(adapted: Any, adapter_folder: Path) -> None:
    assert adapted.image_encoder is not None
    assert adapted.image_encoder.config.projection_dim == TINY_IP_ADAPTER_CLIP_DIM
    assert adapted.feature_extractor is not None  # made by diffusers at the encoder's image_size
    assert adapted.unet.encoder_hid_proj is not None
    assert adapted.unet.config.encoder_hid_dim_type == "ip_image_proj"
    # Every file tensor landed where diffusers reads it: the numbering matches its processor order.
    weights = load_file(adapter_folder / TINY_IP_ADAPTER_WEIGHT)
    projection = adapted.unet.encoder_hid_proj.image_projection_layers[0]
    torch.testing.assert_close(projection.image_embeds.weight, weights["image_proj.proj.weight"])
    torch.testing.assert_close(projection.norm.bias, weights["image_proj.norm.bias"])
    ip_processors = [p for p in adapted.unet.attn_processors.values() if hasattr(p, "to_k_ip")]
    key_ids = sorted({int(k.split(".")[1]) for k in weights if k.startswith("ip_adapter.")})
    assert key_ids == [1, 3, 5, 7]  # the tiny UNet's four cross-attentions
    for key_id, processor in zip(key_ids, ip_processors, strict=True):
        prefix = f"ip_adapter.{key_id}"
        torch.testing.assert_close(processor.to_k_ip[0].weight, weights[f"{prefix}.to_k_ip.weight"])
        torch.testing.assert_close(processor.to_v_ip[0].weight, weights[f"{prefix}.to_v_ip.weight"])


def test_scale_one_changes_pictures(adapted: Any) -> None:
    adapted.set_ip_adapter_scale(0.0)
    off = _pixels(adapted, ip_adapter_image=RED)
    adapted.set_ip_adapter_scale(1.0)
    red = _pixels(adapted, ip_adapter_image=RED)
    blue = _pixels(adapted, ip_adapter_image=BLUE)
    assert np.isfinite(red).all() and np.isfinite(blue).all()
    assert _mean_abs(red, off) > VISIBLE
    assert _mean_abs(red, blue) > VISIBLE
    np.testing.assert_array_equal(_pixels(adapted, ip_adapter_image=RED), red)  # deterministic


def test_scale_zero_is_the_plain_model(adapted: Any, tiny_cache_dir: Path) -> None:
    adapted.set_ip_adapter_scale(0.0)
    off = _pixels(adapted, ip_adapter_image=RED)
    np.testing.assert_array_equal(off, _pixels(_pipeline(tiny_cache_dir)))


def test_ensure_builds_once(tiny_cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _unet_config(tiny_cache_dir)
    folder = ensure_tiny_ip_adapter(tmp_path, config)
    assert folder == tmp_path / TINY_IP_ADAPTER_FOLDER
    assert list(tmp_path.iterdir()) == [folder]  # no temporary folders left
    assert (folder / TINY_IP_ADAPTER_WEIGHT).is_file()
    assert (folder / TINY_IP_ADAPTER_ENCODER / "model.safetensors").is_file()
    stamps = {path: path.stat().st_mtime_ns for path in folder.rglob("*")}

    def no_rebuild(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("rebuilt")

    monkeypatch.setattr(tiny_ip_adapter, "build_tiny_ip_adapter", no_rebuild)
    assert ensure_tiny_ip_adapter(tmp_path, config) == folder
    assert {path: path.stat().st_mtime_ns for path in folder.rglob("*")} == stamps
    assert list(tmp_path.iterdir()) == [folder]


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    """The adapter's and its image encoder's tensors, by name."""
    adapter = load_file(folder / TINY_IP_ADAPTER_WEIGHT)
    encoder = load_file(folder / TINY_IP_ADAPTER_ENCODER / "model.safetensors")
    return {**adapter, **{f"encoder.{k}": v for k, v in encoder.items()}}


def test_seeded_weights(tiny_cache_dir: Path, tmp_path: Path) -> None:
    config = _unet_config(tiny_cache_dir)
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        build_tiny_ip_adapter(tmp_path / name, config, seed)
    a, b, c = (_tensors(tmp_path / name) for name in "abc")
    assert a.keys() == b.keys() == c.keys()
    for key, tensor in a.items():
        assert torch.isfinite(tensor).all(), key
        torch.testing.assert_close(tensor, b[key], rtol=0, atol=0)
    adapter_keys = [k for k in a if not k.startswith("encoder.")]
    assert all(not torch.equal(a[key], c[key]) for key in adapter_keys)
    assert any(not torch.equal(a[key], c[key]) for key in a if key.startswith("encoder."))
    # The layout: ImageProjection's four tensors and to_k_ip/to_v_ip per cross-attention, shaped as to_k.
    shapes = ip_adapter_key_shapes(config)
    cross = config["cross_attention_dim"]
    expected = {
        "image_proj.proj.weight": (4 * cross, TINY_IP_ADAPTER_CLIP_DIM),
        "image_proj.proj.bias": (4 * cross,),
        "image_proj.norm.weight": (cross,),
        "image_proj.norm.bias": (cross,),
    }
    for key_id, shape in shapes.items():
        expected[f"ip_adapter.{key_id}.to_k_ip.weight"] = shape
        expected[f"ip_adapter.{key_id}.to_v_ip.weight"] = shape
    assert {key: tuple(a[key].shape) for key in adapter_keys} == expected
