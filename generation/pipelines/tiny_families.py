# mypy: disable-error-code="no-untyped-call"
"""Built-in tiny models of every model family: seeded random weights, small configs, local tokenizers.

Like diffusers' own tests' `get_dummy_components()`, one per family, each saved with `save_pretrained`
into a folder that diffusers' real `from_pretrained` loads back (no download, no hub). One place for
tests, benchmarks and the loopback. Native sizes (what the pipeline generates when no size is given):

- `tiny-sdxl`: `StableDiffusionXLPipeline`, 64 px (UNet `sample_size` 8 × VAE factor 8).
- `tiny-sd3`: `StableDiffusion3Pipeline`, 64 px (transformer `sample_size` 8 × VAE factor 8; 16 latent
  channels, two CLIPs with projection and a T5).
- `tiny-flux`: `FluxPipeline` like Flux.1-dev (guidance embedding, dynamic shifting), 128 px: Flux's
  pipelines fix `default_sample_size` at 128 latent pixels, so the VAE has factor 1.
- `tiny-flux-schnell`: `FluxPipeline` like Flux.1-schnell (no guidance embedding, shift 1.0), 128 px.
- `tiny-kontext`: `FluxKontextPipeline` (the same components as `tiny-flux`), 128 px; Kontext rescales
  every call to `max_area` (a megapixel unless given), so pass `max_area=height * width`.
- `tiny-flux-fill`: `FluxFillPipeline` like FLUX.1-Fill-dev (the transformer also reads the mask and the
  masked picture), 128 px: an inpainting model, run as SD's 9-channel ones are.
- `tiny-qwen`: `QwenImagePipeline` (a tiny Qwen2.5-VL text encoder, a byte-level BPE tokenizer whose
  prompt template's system prefix is exactly the 34 tokens the pipeline drops), 128 px (the pipeline's
  `default_sample_size` is 128 latent pixels; the VAE has factor 1).
- `tiny-qwen-edit`: `QwenImageEditPipeline` (Qwen-Image's components with a factor-8 VAE, and a Qwen2-VL
  processor whose vision tower sees at most 112² pixels), 1024 px native as the real model (the
  pipeline fixes 128 latent pixels): it only edits, so call it with `image` and a smaller size.
- `tiny-qwen-edit-plus`: `QwenImageEditPlusPipeline` (the same components), 1024 px: several pictures
  as its input at once, one prompt per call.
- `tiny-pixart`: `PixArtSigmaPipeline` (T5), 256 px (transformer `sample_size` 32 × VAE factor 8: the
  smallest size PixArt's resolution binning knows, so binning keeps the native size).
- `tiny-aura`: `AuraFlowPipeline` (UMT5), 64 px (transformer `sample_size` 8 × VAE factor 8; the
  pipeline's own `height`/`width` default to 1024 whatever the config says, so pass them): a family with
  no image-to-image pipeline in diffusers.

Tokenizers are made locally: T5's and Qwen's by `tiny_tokenizers`, CLIP's by `tiny.byte_tokenizer()`;
the shared components (text encoders, VAEs, schedulers) come from `tiny_parts`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch
from diffusers import (
    AuraFlowPipeline,
    AuraFlowTransformer2DModel,
    AutoencoderKLQwenImage,
    DPMSolverMultistepScheduler,
    FluxFillPipeline,
    FluxKontextPipeline,
    FluxPipeline,
    FluxTransformer2DModel,
    PixArtSigmaPipeline,
    PixArtTransformer2DModel,
    QwenImageEditPipeline,
    QwenImageEditPlusPipeline,
    QwenImagePipeline,
    QwenImageTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionXLPipeline,
)
from transformers import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
)

from generation.pipelines.processors import images_only
from generation.pipelines.source import TINY_FAMILY_FOLDERS, TINY_FAMILY_IDS
from generation.pipelines.tiny import byte_tokenizer, ensure_built, sd_scheduler, tiny_unet
from generation.pipelines.tiny_parts import PACKED_MMDIT, clip, flow_match, save, t5, vae, vae16
from generation.pipelines.tiny_tokenizers import qwen_tokenizer, t5_tokenizer

__all__ = [
    "TINY_FAMILY_FOLDERS",
    "TINY_FAMILY_IDS",
    "TINY_FAMILY_MODELS",
    "TINY_FAMILY_NATIVE_SIZES",
    "build_tiny_family",
    "ensure_tiny_family",
    "qwen_tokenizer",
    "t5_tokenizer",
]

Builder = Callable[[Path, int], None]
"""Writes one tiny pipeline, built with seeded random weights, to a folder (`save_pretrained`)."""


def build_tiny_sdxl(folder: Path, seed: int = 0) -> None:
    """`StableDiffusionXLPipeline`, 64 px: a two-level UNet with SDXL's text-time conditioning on 8×8
    latents (cross-attention over both encoders' 32 + 32 features), SDXL's VAE scale and scheduler."""
    unet = tiny_unet(
        seed,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=6 * 8 + 32,  # 6 size/crop numbers × 8 + pooled text
        cross_attention_dim=64,
    )
    autoencoder = vae(seed + 1, latent_channels=4, levels=4, scaling_factor=0.13025)
    tokenizer, tokenizer_2 = byte_tokenizer(), byte_tokenizer()
    save(
        StableDiffusionXLPipeline(
            vae=autoencoder,
            text_encoder=clip(tokenizer, seed + 2, projection=False),
            text_encoder_2=clip(tokenizer_2, seed + 3, projection=True),
            tokenizer=tokenizer,
            tokenizer_2=tokenizer_2,
            unet=unet,
            scheduler=sd_scheduler(),
            add_watermarker=False,
        ),
        folder,
    )


def build_tiny_sd3(folder: Path, seed: int = 0) -> None:
    """`StableDiffusion3Pipeline`, 64 px: an MMDiT on 8×8×16 latents (2×2 patches), two CLIPs with
    projection (pooled 32 + 32) and a T5 whose 64 features the CLIPs' are padded to, as in SD3."""
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=16,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=64,
        caption_projection_dim=32,
        pooled_projection_dim=64,
        out_channels=16,
        pos_embed_max_size=32,  # up to 32 patches a side: 512 px
    )
    vae = vae16(seed + 1, levels=4, scaling_factor=1.5305, shift_factor=0.0609)
    tokenizer, tokenizer_2, tokenizer_3 = byte_tokenizer(), byte_tokenizer(), t5_tokenizer()
    save(
        StableDiffusion3Pipeline(
            transformer=transformer,
            scheduler=flow_match(shift=3.0),
            vae=vae,
            text_encoder=clip(tokenizer, seed + 2, projection=True),
            tokenizer=tokenizer,
            text_encoder_2=clip(tokenizer_2, seed + 3, projection=True),
            tokenizer_2=tokenizer_2,
            text_encoder_3=t5(tokenizer_3, seed + 4, d_model=64),
            tokenizer_3=tokenizer_3,
        ),
        folder,
    )


def _flux_components(seed: int, *, guidance: bool, schnell: bool, fill: bool = False) -> dict[str, Any]:
    """Flux's components: a one-double, one-single block transformer on 16-channel latents packed
    2×2 (64 inputs), a factor-1 VAE (Flux's pipelines fix 128 latent pixels: 128 px), CLIP + T5.
    `fill`: Flux Fill's transformer, which also reads the masked picture's packed latents (64) and the
    packed mask (2×2 × the VAE's factor², 4 here), and still outputs 64."""
    torch.manual_seed(seed)
    channels = {"in_channels": 64 + 64 + 4, "out_channels": 64} if fill else {}
    transformer = FluxTransformer2DModel(
        patch_size=1,
        num_single_layers=1,
        pooled_projection_dim=32,
        guidance_embeds=guidance,
        **{**PACKED_MMDIT, **channels},
    )
    vae = vae16(
        seed + 1,
        levels=1,
        scaling_factor=0.3611,
        shift_factor=0.1159,
        mid_block_add_attention=False,  # 128×128 latents: attention there would cost more than the rest
    )
    tokenizer, tokenizer_2 = byte_tokenizer(), t5_tokenizer()
    if schnell:  # Flux.1-schnell's scheduler_config.json
        scheduler = flow_match(shift=1.0, use_dynamic_shifting=False)
    else:  # Flux.1-dev's (and Kontext's)
        scheduler = flow_match(
            shift=3.0,
            use_dynamic_shifting=True,
            base_shift=0.5,
            max_shift=1.15,
            base_image_seq_len=256,
            max_image_seq_len=4096,
        )
    return {
        "scheduler": scheduler,
        "vae": vae,
        "text_encoder": clip(tokenizer, seed + 2, projection=False),
        "tokenizer": tokenizer,
        "text_encoder_2": t5(tokenizer_2, seed + 3),
        "tokenizer_2": tokenizer_2,
        "transformer": transformer,
    }


def build_tiny_flux(folder: Path, seed: int = 0) -> None:
    """`FluxPipeline` like Flux.1-dev (guidance embedding, dynamically shifted schedule), 128 px."""
    save(FluxPipeline(**_flux_components(seed, guidance=True, schnell=False)), folder)


def build_tiny_flux_schnell(folder: Path, seed: int = 0) -> None:
    """`FluxPipeline` like Flux.1-schnell (no guidance embedding, shift 1.0, no dynamic shifting), 128 px."""
    save(FluxPipeline(**_flux_components(seed, guidance=False, schnell=True)), folder)


def build_tiny_kontext(folder: Path, seed: int = 0) -> None:
    """`FluxKontextPipeline` (the components of `tiny-flux`), 128 px."""
    save(FluxKontextPipeline(**_flux_components(seed, guidance=True, schnell=False)), folder)


def build_tiny_flux_fill(folder: Path, seed: int = 0) -> None:
    """`FluxFillPipeline` like FLUX.1-Fill-dev (an inpainting transformer: the mask and the masked
    picture as extra inputs), 128 px: the loaded model is itself the inpainting model."""
    save(FluxFillPipeline(**_flux_components(seed, guidance=True, schnell=False, fill=True)), folder)


def _qwen_components(seed: int, *, vae_levels: int, vae_width: int = 16) -> dict[str, Any]:
    """Qwen-Image's components: an MMDiT on 16-channel latents packed 2×2, a Qwen VAE of factor
    2^(levels − 1) with `vae_width` channels, a two-layer Qwen2.5-VL text encoder (with a one-block
    vision tower, which the edit pipelines' prompts use) and a local tokenizer."""
    tokenizer = qwen_tokenizer()
    torch.manual_seed(seed)
    transformer = QwenImageTransformer2DModel(
        patch_size=2, out_channels=16, guidance_embeds=False, **PACKED_MMDIT
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLQwenImage(
        base_dim=vae_width,
        z_dim=16,
        dim_mult=[1] * vae_levels,
        num_res_blocks=1,
        temperal_downsample=[False] * (vae_levels - 1),
        latents_mean=[0.0] * 16,
        latents_std=[1.0] * 16,
    )

    def ids(token: str) -> int:
        return int(cast(int, tokenizer.convert_tokens_to_ids(token)))

    torch.manual_seed(seed + 2)
    text_encoder = Qwen2_5_VLForConditionalGeneration(
        Qwen2_5_VLConfig(
            text_config={
                "vocab_size": len(tokenizer),
                "hidden_size": 32,
                "intermediate_size": 37,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "num_key_value_heads": 2,
                "max_position_embeddings": 2048,
                "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3], "rope_theta": 1000000.0},
                "bos_token_id": ids("<|endoftext|>"),
                "eos_token_id": ids("<|im_end|>"),
                "pad_token_id": ids("<|endoftext|>"),
            },
            vision_config={
                "depth": 1,
                "hidden_size": 16,
                "intermediate_size": 16,
                "num_heads": 2,
                "out_hidden_size": 32,
                "fullatt_block_indexes": [0],
            },
            image_token_id=ids("<|image_pad|>"),
            video_token_id=ids("<|video_pad|>"),
            vision_start_token_id=ids("<|vision_start|>"),
            vision_end_token_id=ids("<|vision_end|>"),
        )
    )
    scheduler = flow_match(  # Qwen-Image's scheduler_config.json
        shift=1.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=0.9,
        base_image_seq_len=256,
        max_image_seq_len=8192,
        shift_terminal=0.02,
        time_shift_type="exponential",
    )
    return {
        "scheduler": scheduler,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "transformer": transformer,
    }


def build_tiny_qwen(folder: Path, seed: int = 0) -> None:
    """`QwenImagePipeline`, 128 px: a factor-1 Qwen VAE (the pipeline fixes 128 latent pixels)."""
    save(QwenImagePipeline(**_qwen_components(seed, vae_levels=1)), folder)


def _qwen_edit_components(seed: int) -> dict[str, Any]:
    """Qwen-Image-Edit's: Qwen-Image's with a factor-8 VAE of 4 channels (the edit pipelines encode
    every input picture at about a megapixel: 4096 packed tokens here, as on the real model; its
    full-size convolutions are most of a tiny call's time) and a Qwen2-VL
    processor whose image processor shows the vision tower at most 112² pixels (16 merged tokens)."""
    components = _qwen_components(seed, vae_levels=4, vae_width=4)
    image_processor = Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=112 * 112)
    processor = images_only(Qwen2VLProcessor)(
        image_processor=image_processor, tokenizer=components["tokenizer"]
    )
    return {**components, "processor": processor}


def build_tiny_qwen_edit(folder: Path, seed: int = 0) -> None:
    """`QwenImageEditPipeline` like Qwen/Qwen-Image-Edit: edits one picture as its words say; 1024 px
    native (128 latent pixels × 8), as the real one."""
    save(QwenImageEditPipeline(**_qwen_edit_components(seed)), folder)


def build_tiny_qwen_edit_plus(folder: Path, seed: int = 0) -> None:
    """`QwenImageEditPlusPipeline` like Qwen/Qwen-Image-Edit-2509: edits from several pictures at
    once (each its own input); 1024 px native."""
    save(QwenImageEditPlusPipeline(**_qwen_edit_components(seed)), folder)


def build_tiny_pixart(folder: Path, seed: int = 0) -> None:
    """`PixArtSigmaPipeline`, 256 px: a two-layer PixArt transformer on 32×32 latents (2×2 patches;
    `sample_size` 32 is the smallest that resolution binning knows), the usual factor-8 VAE, a T5."""
    torch.manual_seed(seed)
    transformer = PixArtTransformer2DModel(
        sample_size=32,
        num_layers=2,
        patch_size=2,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_channels=32,
        in_channels=4,
        cross_attention_dim=32,
        out_channels=8,  # learned sigma, as PixArt's
        attention_bias=True,
        activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
        use_additional_conditions=False,
        interpolation_scale=None,
    )
    autoencoder = vae(seed + 1, latent_channels=4, levels=4, scaling_factor=0.13025)
    tokenizer = t5_tokenizer()
    save(
        PixArtSigmaPipeline(
            tokenizer=tokenizer,
            text_encoder=t5(tokenizer, seed + 2),
            vae=autoencoder,
            transformer=transformer,
            scheduler=DPMSolverMultistepScheduler(
                beta_start=0.0001, beta_end=0.02, beta_schedule="linear", num_train_timesteps=1000
            ),
        ),
        folder,
    )


def build_tiny_aura(folder: Path, seed: int = 0) -> None:
    """`AuraFlowPipeline`, 64 px: one MMDiT and one single DiT layer on 8×8 latents, a factor-8 VAE, UMT5.
    diffusers has no image-to-image AuraFlow pipeline: the generic family."""
    torch.manual_seed(seed)
    transformer = AuraFlowTransformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=4,
        num_mmdit_layers=1,
        num_single_dit_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=32,
        caption_projection_dim=32,
        out_channels=4,
        pos_embed_max_size=256,  # a 16×16 patch grid: up to 256 px
    )
    autoencoder = vae(seed + 1, latent_channels=4, levels=4, scaling_factor=0.13025)
    tokenizer = t5_tokenizer()
    save(
        AuraFlowPipeline(
            tokenizer=tokenizer,
            text_encoder=t5(tokenizer, seed + 2, umt5=True),
            vae=autoencoder,
            transformer=transformer,
            scheduler=flow_match(shift=1.73),
        ),
        folder,
    )


TINY_FAMILY_MODELS: dict[str, Builder] = {
    "tiny-sdxl": build_tiny_sdxl,
    "tiny-sd3": build_tiny_sd3,
    "tiny-flux": build_tiny_flux,
    "tiny-flux-schnell": build_tiny_flux_schnell,
    "tiny-kontext": build_tiny_kontext,
    "tiny-flux-fill": build_tiny_flux_fill,
    "tiny-qwen": build_tiny_qwen,
    "tiny-qwen-edit": build_tiny_qwen_edit,
    "tiny-qwen-edit-plus": build_tiny_qwen_edit_plus,
    "tiny-pixart": build_tiny_pixart,
    "tiny-aura": build_tiny_aura,
}
"""Model id → the builder writing its pipeline to a folder. The ids are `source.TINY_FAMILY_IDS`."""

TINY_FAMILY_NATIVE_SIZES: dict[str, int] = {
    "tiny-sdxl": 64,
    "tiny-sd3": 64,
    "tiny-flux": 128,
    "tiny-flux-schnell": 128,
    "tiny-kontext": 128,
    "tiny-flux-fill": 128,
    "tiny-qwen": 128,
    "tiny-qwen-edit": 1024,
    "tiny-qwen-edit-plus": 1024,
    "tiny-pixart": 256,
    "tiny-aura": 64,
}
"""Model id → its native side in pixels: the pipeline's `default_sample_size` (Flux, Qwen-Image), else
the denoiser's `sample_size`, times the VAE's factor. Pass it as `height`/`width`: AuraFlow's pipeline
defaults to 1024 whatever its config says, and Kontext rescales to `max_area` (pass `height * width`)."""

assert tuple(TINY_FAMILY_MODELS) == TINY_FAMILY_IDS, "source.TINY_FAMILY_IDS lists the same ids"


def build_tiny_family(model_id: str, folder: Path, seed: int = 0) -> None:
    """Write the tiny `model_id` pipeline (seeded random weights) to `folder` in diffusers format."""
    try:
        builder = TINY_FAMILY_MODELS[model_id]
    except KeyError:
        raise ValueError(
            f"{model_id!r} is not a tiny family model: one of {', '.join(TINY_FAMILY_IDS)}"
        ) from None
    builder(folder, seed)


def ensure_tiny_family(cache_dir: Path, model_id: str, seed: int = 0) -> Path:
    """The folder of the tiny `model_id` under `cache_dir` (versioned: `TINY_FAMILY_FOLDERS`), built on
    first use; concurrent processes are safe (`tiny.ensure_built`)."""
    if model_id not in TINY_FAMILY_MODELS:
        raise ValueError(f"{model_id!r} is not a tiny family model: one of {', '.join(TINY_FAMILY_IDS)}")
    return ensure_built(
        cache_dir / TINY_FAMILY_FOLDERS[model_id],
        "model_index.json",
        lambda tmp: build_tiny_family(model_id, tmp, seed),
    )
