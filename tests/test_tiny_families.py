# mypy: disable-error-code="no-untyped-call"
"""generation.pipelines.tiny_families: every family's tiny model builds, saves, loads back through
diffusers' real `from_pretrained`, and makes the same finite pixels twice from one seed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import (
    AuraFlowPipeline,
    DiffusionPipeline,
    FluxFillPipeline,
    FluxKontextPipeline,
    FluxPipeline,
    PixArtSigmaPipeline,
    QwenImageEditPipeline,
    QwenImageEditPlusPipeline,
    QwenImagePipeline,
    StableDiffusion3Pipeline,
    StableDiffusionXLPipeline,
)
from PIL import Image
from safetensors.torch import load_file

from generation.pipelines.processors import images_only_processors
from generation.pipelines.source import (
    BUILTIN_MODEL_IDS,
    TINY_FAMILY_FOLDERS,
    TINY_FAMILY_IDS,
    TINY_MODEL_ID,
    locate_model,
)
from generation.pipelines.tiny_families import (
    TINY_FAMILY_MODELS,
    TINY_FAMILY_NATIVE_SIZES,
    build_tiny_family,
    ensure_tiny_family,
    qwen_tokenizer,
    t5_tokenizer,
)

PIPELINE_CLASSES: dict[str, Any] = {
    "tiny-sdxl": StableDiffusionXLPipeline,
    "tiny-sd3": StableDiffusion3Pipeline,
    "tiny-flux": FluxPipeline,
    "tiny-flux-schnell": FluxPipeline,
    "tiny-flux-fill": FluxFillPipeline,
    "tiny-kontext": FluxKontextPipeline,
    "tiny-qwen": QwenImagePipeline,
    "tiny-qwen-edit": QwenImageEditPipeline,
    "tiny-qwen-edit-plus": QwenImageEditPlusPipeline,
    "tiny-pixart": PixArtSigmaPipeline,
    "tiny-aura": AuraFlowPipeline,
}


@pytest.fixture(scope="module")
def family_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every tiny family model, built once for this module."""
    root = tmp_path_factory.mktemp("tiny-families")
    folders = {}
    for model_id in TINY_FAMILY_IDS:
        build_tiny_family(model_id, root / model_id)
        folders[model_id] = root / model_id
    return folders


EDIT_ONLY = {"tiny-qwen-edit", "tiny-qwen-edit-plus"}  # they draw from a picture, never from words alone
EDIT_SIDE = 64  # an edit-only model edits a picture at any size: a small one here (its native is 1024)


def _generate(pipe: Any, model_id: str, seed: int) -> np.ndarray[Any, Any]:
    side = EDIT_SIDE if model_id in EDIT_ONLY else TINY_FAMILY_NATIVE_SIZES[model_id]
    extra: dict[str, Any] = {}
    if model_id in EDIT_ONLY:
        pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
        extra["image"] = Image.fromarray(pixels)
    if model_id == "tiny-kontext":
        extra["max_area"] = side * side  # else Kontext rescales to a megapixel
    if model_id == "tiny-pixart":
        extra["clean_caption"] = False  # needs beautifulsoup4 and ftfy
    if model_id == "tiny-flux-fill":  # a Fill model paints into a picture where a mask says
        picture = np.random.default_rng(0).random((side, side, 3), dtype=np.float32)
        extra["image"] = torch.from_numpy(picture).permute(2, 0, 1)[None]
        extra["mask_image"] = torch.ones(1, 1, side, side)
    images: np.ndarray[Any, Any] = pipe(
        prompt="a red cat sitting on the moon",
        height=side,
        width=side,
        num_inference_steps=2,
        output_type="np",
        generator=torch.Generator().manual_seed(seed),
        **extra,
    ).images
    return images


def test_the_ids_are_the_same_in_the_torch_free_source_module() -> None:
    assert tuple(TINY_FAMILY_MODELS) == TINY_FAMILY_IDS == tuple(TINY_FAMILY_NATIVE_SIZES)
    assert set(PIPELINE_CLASSES) == set(TINY_FAMILY_IDS)
    assert (TINY_MODEL_ID, *TINY_FAMILY_IDS) == BUILTIN_MODEL_IDS


@pytest.mark.parametrize("model_id", TINY_FAMILY_IDS)
def test_loads_back_and_generates_at_its_native_size_deterministically(
    family_folders: dict[str, Path], model_id: str
) -> None:
    folder = family_folders[model_id]  # a Qwen2-VL processor needs torchvision, unless made without it
    pipe: Any = DiffusionPipeline.from_pretrained(folder, **images_only_processors(folder))
    assert type(pipe) is PIPELINE_CLASSES[model_id]
    pipe.set_progress_bar_config(disable=True)
    side = TINY_FAMILY_NATIVE_SIZES[model_id]
    denoiser = getattr(pipe, "unet", None) or pipe.transformer
    latent_side = getattr(pipe, "default_sample_size", None) or denoiser.config.sample_size
    assert latent_side * pipe.vae_scale_factor == side  # the native size is in the configs

    first = _generate(pipe, model_id, seed=7)
    again = _generate(pipe, model_id, seed=7)

    drawn = EDIT_SIDE if model_id in EDIT_ONLY else side
    assert first.shape == (1, drawn, drawn, 3)
    assert np.isfinite(first).all()
    assert first.std() > 0.01  # a picture, not a flat colour
    np.testing.assert_array_equal(first, again)


def test_flux_variants_are_like_dev_and_schnell(family_folders: dict[str, Path]) -> None:
    dev: Any = DiffusionPipeline.from_pretrained(family_folders["tiny-flux"])
    schnell: Any = DiffusionPipeline.from_pretrained(family_folders["tiny-flux-schnell"])
    assert dev.transformer.config.guidance_embeds is True
    assert dev.scheduler.config.use_dynamic_shifting is True
    assert schnell.transformer.config.guidance_embeds is False
    assert schnell.scheduler.config.use_dynamic_shifting is False
    assert schnell.scheduler.config.shift == 1.0


def test_weights_follow_the_seed(family_folders: dict[str, Path], tmp_path: Path) -> None:
    build_tiny_family("tiny-flux", tmp_path / "same", seed=0)
    build_tiny_family("tiny-flux", tmp_path / "other", seed=1)
    weights = "transformer/diffusion_pytorch_model.safetensors"
    reference = load_file(family_folders["tiny-flux"] / weights)
    same = load_file(tmp_path / "same" / weights)
    other = load_file(tmp_path / "other" / weights)
    assert all(torch.equal(reference[k], same[k]) for k in reference)
    assert not torch.equal(reference["x_embedder.weight"], other["x_embedder.weight"])


def test_builtin_ids_resolve_to_versioned_cache_folders(tmp_path: Path) -> None:
    for model_id in TINY_FAMILY_IDS:
        source = locate_model(model_id, None, tmp_path)
        assert source.kind == "builtin"
        assert source.path == tmp_path / TINY_FAMILY_FOLDERS[model_id]
        assert source.path.name.startswith(f"{model_id}-v")


def test_ensure_tiny_family_builds_once_and_leaves_no_temp_folders(tmp_path: Path) -> None:
    folder = ensure_tiny_family(tmp_path, "tiny-sd3")
    assert folder == tmp_path / TINY_FAMILY_FOLDERS["tiny-sd3"]
    before = (folder / "model_index.json").stat().st_mtime_ns
    assert ensure_tiny_family(tmp_path, "tiny-sd3") == folder
    assert (folder / "model_index.json").stat().st_mtime_ns == before
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]
    with pytest.raises(ValueError, match="not a tiny family model"):
        ensure_tiny_family(tmp_path, "tiny-nothing")


def test_qwen_template_prefix_is_exactly_what_the_pipeline_drops(family_folders: dict[str, Path]) -> None:
    pipe: Any = DiffusionPipeline.from_pretrained(family_folders["tiny-qwen"])
    text = pipe.prompt_template_encode.format("a red cat")
    drop = pipe.prompt_template_encode_start_idx
    assert drop == 34
    ids = pipe.tokenizer(text).input_ids
    tokens = pipe.tokenizer.convert_ids_to_tokens(ids)
    assert tokens[:4] == ["<|im_start|>", "system", "Ċ", "Describe"]
    assert tokens[drop - 3 : drop + 1] == ["<|im_start|>", "user", "Ċ", "a"]  # the prompt follows
    assert pipe.tokenizer.decode(ids) == text
    assert len(qwen_tokenizer()) == len(pipe.tokenizer) == pipe.text_encoder.config.text_config.vocab_size


@pytest.mark.parametrize("model_id", sorted(EDIT_ONLY))
def test_qwen_edit_template_prefix_is_exactly_what_the_pipeline_drops(
    family_folders: dict[str, Path], model_id: str
) -> None:
    folder = family_folders[model_id]
    pipe: Any = DiffusionPipeline.from_pretrained(folder, **images_only_processors(folder))
    text = pipe.prompt_template_encode.format("a red cat")
    drop = pipe.prompt_template_encode_start_idx
    assert drop == 64
    ids = pipe.processor.tokenizer(text).input_ids
    tokens = pipe.processor.tokenizer.convert_ids_to_tokens(ids)
    assert tokens[:4] == ["<|im_start|>", "system", "Ċ", "Describe"]
    assert tokens[drop - 3 : drop] == ["<|im_start|>", "user", "Ċ"]  # the pictures and the words follow
    assert pipe.processor.tokenizer.decode(ids) == text


def test_t5_tokenizer_has_t5s_special_ids_and_ends_with_eos() -> None:
    tokenizer = t5_tokenizer()
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    ids = tokenizer("A red cat, on the Moon! ünïcode").input_ids
    assert ids[-1] == tokenizer.eos_token_id
    assert tokenizer.convert_ids_to_tokens(ids)[:3] == ["▁A", "▁red", "▁cat"]
    assert tokenizer.unk_token_id in ids  # no byte fallback, as T5's own vocabulary
