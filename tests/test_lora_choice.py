"""Choosing LoRA styles: the `lora` option of `/imagine` with autocomplete over LORA_DIR (listed once
per change of the folder), and adapters that do not fit the model refused before anything is queued,
from the two files' safetensors headers. Through the real discord.py client where it is a command."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from generation.media.compose import read_parameters
from generation.pipelines.lora_check import ModelLayers, UnreadableLora, incompatibility, read_shapes
from generation.pipelines.lora_files import LoraCatalog
from generation.pipelines.tiny import TINY_FOLDER_NAME
from generation.prompts.errors import PromptError
from generation.prompts.loras import with_lora_option
from testkit.tiny_lora import build_tiny_lora
from tests.bot_harness import BotWorld
from tests.fixtures_generation import png_pixels

pytest_plugins = ["tests.fixtures_generation"]

CROSS = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"  # tiny's cross-attention: 32 wide
SELF = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"  # 64 in, 64 out


def build_wide_lora(tiny_model: Any, folder: Path, name: str) -> Path:
    """A real LoRA (peft, as diffusers saves it) for a UNet like tiny's but with 48-wide text
    embeddings: a LoRA of another base model."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    config = {**tiny_model.text2img.unet.config, "cross_attention_dim": 48}
    unet = UNet2DConditionModel.from_config(config)  # type: ignore[no-untyped-call]
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v"]))
    folder.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(
        folder, unet_lora_layers=get_peft_model_state_dict(unet), weight_name=f"{name}.safetensors"
    )
    return folder / f"{name}.safetensors"


def _header_file(path: Path, shapes: Mapping[str, tuple[int, ...]]) -> Path:
    save_file({k: np.zeros(s, np.float16) for k, s in shapes.items()}, str(path))
    return path


def test_the_option_becomes_a_tag_and_wins_over_an_inline_one() -> None:
    assert with_lora_option("a fox --ar 16:9", "ink") == "<lora:ink> a fox --ar 16:9"
    assert (
        with_lora_option("a <LORA:Ink:0.3> fox <lora:film>", "ink:0.7")
        == "<lora:ink:0.7> a   fox <lora:film>"
    )
    assert with_lora_option("a fox", None) == "a fox"
    with pytest.raises(PromptError, match="takes a LoRA's name"):
        with_lora_option("a fox", "<lora:ink>")


def test_header_checks_tell_which_base_model_a_lora_was_made_for(
    tiny_cache_dir: Path, tmp_path: Path
) -> None:
    model = ModelLayers.of_folder(tiny_cache_dir / TINY_FOLDER_NAME)
    assert model.cross_widths == {32} and set(model.layers) == {"unet", "text_encoder"}

    def why(shapes: Mapping[str, tuple[int, ...]]) -> str | None:
        return incompatibility(read_shapes(_header_file(tmp_path / "x.safetensors", shapes)), model)

    fits = {f"unet.{CROSS}.lora_A.weight": (4, 32), f"unet.{CROSS}.lora_B.weight": (64, 4)}
    assert why(fits) is None
    # SDXL's kohya naming (which diffusers maps itself): caught by the cross-attention width alone.
    sdxl = {"lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_down.weight": (8, 2048)}
    assert why(sdxl) == "it was made for text embeddings 2048 wide (SDXL); this model's are 32 wide"
    kohya = {f"lora_unet_{SELF.replace('.', '_')}.lora_down.weight": (4, 96)}
    assert why(kohya) == f"its layer `unet.{SELF}` takes 96 inputs; this model's takes 64"
    assert (
        why({f"unet.{SELF}.lora_B.weight": (80, 4)})
        == f"its layer `unet.{SELF}` gives 80 outputs; this model's gives 64"
    )
    two = {"text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight": (4, 1280)}
    assert why(two) == "it adapts `text_encoder_2`, which this model doesn't have"
    assert why({"unet.down_blocks.9.resnets.0.conv1.lora_A.weight": (4, 64, 3, 3)}) == (
        "its layer `unet.down_blocks.9.resnets.0.conv1` isn't in this model"
    )
    assert (
        why({"some.weight": (3, 3)}) == "it holds no LoRA weights (no tensor named like lora_A, lora_down, …)"
    )
    (tmp_path / "torn.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(UnreadableLora, match="not a readable safetensors file"):
        read_shapes(tmp_path / "torn.safetensors")


def test_loras_are_checked_against_the_familys_denoiser(tiny_cache_dir: Path, tmp_path: Path) -> None:
    from generation.pipelines.tiny_families import ensure_tiny_family

    flux = ModelLayers.of_folder(ensure_tiny_family(tiny_cache_dir, "tiny-flux"))
    sd = ModelLayers.of_folder(tiny_cache_dir / TINY_FOLDER_NAME)
    assert "transformer" in flux.layers and "unet" not in flux.layers

    def why(shapes: Mapping[str, tuple[int, ...]], model: ModelLayers) -> str | None:
        return incompatibility(read_shapes(_header_file(tmp_path / "x.safetensors", shapes)), model)

    # kohya's Flux naming: diffusers loads it onto the transformer, so it is not refused there
    kohya_flux = {"lora_unet_double_blocks_0_img_attn_proj.lora_down.weight": (4, 32)}
    assert why(kohya_flux, flux) is None
    assert why(kohya_flux, sd) == (
        "it was made for a transformer model (Flux-style layer names); this model is a U-Net"
    )
    kohya_sd = {"lora_unet_down_blocks_1_attentions_0_proj_in.lora_down.weight": (4, 64)}
    assert why(kohya_sd, flux) == (
        "it was made for a U-Net model (SD or SDXL layer names); this model is a transformer"
    )
    assert (
        why({f"unet.{SELF}.lora_A.weight": (4, 64)}, flux)
        == "it adapts `unet`, which this model doesn't have"
    )
    layer, shape = next((n, s) for n, s in (flux.layers["transformer"] or {}).items() if len(s) == 2)
    peft = {
        f"transformer.{layer}.lora_A.weight": (4, shape[1]),
        f"transformer.{layer}.lora_B.weight": (shape[0], 4),
    }
    assert why(peft, flux) is None
    assert why({f"transformer.{layer}.lora_A.weight": (4, shape[1] + 1)}, flux) == (
        f"its layer `transformer.{layer}` takes {shape[1] + 1} inputs; this model's takes {shape[1]}"
    )


def test_the_folder_is_listed_once_per_change(tmp_path: Path) -> None:
    folder = tmp_path / "loras"
    folder.mkdir()
    _header_file(folder / "ink.safetensors", {"unet.a.lora_A.weight": (1, 1)})
    (folder / "notes.txt").write_text("not an adapter")
    settled = time.time() - 60
    os.utime(folder, (settled, settled))
    catalog = LoraCatalog(folder)
    assert [catalog.names() for _ in range(3)] == [["ink"]] * 3 and catalog.listings == 1
    shutil.copy(folder / "ink.safetensors", folder / "pink-ink.safetensors")
    assert catalog.names() == ["ink", "pink-ink"] and catalog.listings == 2
    assert catalog.matching("INK") == ["ink", "pink-ink"] and catalog.matching("pi") == ["pink-ink"]


async def test_lora_option_with_autocomplete_draws_with_the_adapter(
    tmp_path: Path, tiny_cache_dir: Path
) -> None:
    from generation.pipelines.loading import load_pipeline

    own_tiny = load_pipeline("tiny", "cpu", cache_dir=tiny_cache_dir)  # adapters change its modules
    folder = tmp_path / "loras"
    build_tiny_lora(own_tiny, folder, "ink", seed=1)
    shutil.copy(folder / "ink.safetensors", folder / "pink-ink.safetensors")
    build_tiny_lora(own_tiny, folder, "film", seed=2)
    settled = time.time() - 60
    os.utime(folder, (settled, settled))
    async with BotWorld.open(tmp_path / "world", own_tiny) as world:
        world.extra_settings = {"lora_dir": folder, "model_cache_dir": tiny_cache_dir}
        await world.start_bot()
        choices = []
        for typed in ("in", "FI", ""):
            rec = world.server.autocomplete(
                "imagine",
                "lora",
                typed,
                {"prompt": "a fox"},
                guild=world.guild,
                channel=world.channel,
                member=world.bob,
            )
            await rec.wait_acked()
            assert rec.callback_type == 8 and not rec.rejected_callbacks
            choices.append([c["value"] for c in rec.autocomplete_choices or []])
        assert choices == [["ink", "pink-ink"], ["film"], ["film", "ink", "pink-ink"]]

        with_option = await world.wait_result(world.imagine("a fox --n 1 --seed 3", lora="ink"))
        inline = await world.wait_result(world.imagine("a fox <lora:ink> --n 1 --seed 3"))
        plain = await world.wait_result(world.imagine("a fox --n 1 --seed 3"))
        drawn = [png_pixels(m.attachments[0].data) for m in (with_option, inline, plain)]
        assert np.array_equal(drawn[0], drawn[1]) and np.abs(drawn[0] - drawn[2]).max() > 0
        assert (read_parameters(with_option.attachments[0].data) or "").startswith("a fox <lora:ink:1>\n")
        assert world.bot.services.loras.listings == 1  # autocomplete and three /imagine: one listing


async def test_a_lora_of_another_base_model_is_refused_before_queueing(
    tmp_path: Path, tiny_model: Any, tiny_cache_dir: Path
) -> None:
    folder = tmp_path / "loras"
    build_wide_lora(tiny_model, folder, "wide")
    async with BotWorld.open(tmp_path / "world", tiny_model) as world:
        world.extra_settings = {"lora_dir": folder, "model_cache_dir": tiny_cache_dir}
        await world.start_bot()
        for rec in (world.imagine("a fox <lora:wide:0.5> --n 2"), world.imagine("a fox", lora="wide")):
            refused = await world.wait_ephemeral(rec)
            assert refused.content == (
                "The LoRA `wide` doesn't fit the model `tiny`: it was made for text embeddings 48 wide; "
                "this model's are 32 wide. It wasn't queued."
            )
        usage = await world.store.usage(world.guild.id, world.alice.id, (), world.bot.services.clock())
        assert usage.used_last_hour == 0 and usage.queued == 0
        assert await world.store.queued_jobs(world.guild.id) == []
