# mypy: disable-error-code="no-untyped-call"
"""Building the image-to-video pipeline (`bench.archs_video`: Wan 2.1 image-to-video 14B 480P) with seeded
random weights, every component at full size, straight on the device, as `bench.gpu.build_dit` builds
the image transformers: each module constructed under `torch.device(device)` with the dtype as torch's
default, so its parameters are allocated and initialised on the GPU at once (no CPU copy, no fp32
copy of the 16B-parameter transformer).

Dtypes as the project runs the model (`generation.pipelines.video_run.load_video_pipeline`): every
module in `dtype` but the VAE, kept in float32 (Wan's advice; the pipeline casts the latents to it).
The tokenizer (`generation.pipelines.tiny_tokenizers.t5_tokenizer`) and the CLIP image processor are
made locally: the vocabulary is small, but the pipeline pads every prompt to `max_sequence_length` and
the processor makes the checkpoint's 224 px inputs, so every tensor has its real shape.
"""

from __future__ import annotations

from typing import Any

import torch

from bench.archs_video import VideoArch
from bench.gpu.build_dit import _ready, default_dtype


def build_video_pipeline(arch: VideoArch, device: str, dtype: torch.dtype, seed: int = 0) -> Any:
    """The architecture's `WanImageToVideoPipeline` with seeded random weights, on `device`: in `dtype`,
    its VAE in float32."""
    from diffusers import (
        AutoencoderKLWan,
        UniPCMultistepScheduler,
        WanImageToVideoPipeline,
        WanTransformer3DModel,
    )
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
        UMT5Config,
        UMT5EncoderModel,
    )

    from generation.pipelines.tiny_tokenizers import t5_tokenizer

    tokenizer = t5_tokenizer()
    ids = {"pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id}
    with torch.device(device):
        with default_dtype(dtype):
            torch.manual_seed(seed)
            transformer = _ready(WanTransformer3DModel(**arch.transformer), dtype)
            torch.manual_seed(seed + 1)
            text_encoder = _ready(UMT5EncoderModel(UMT5Config(**arch.text_encoder, **ids)), dtype)
            torch.manual_seed(seed + 2)
            vision = CLIPVisionConfig(**arch.image_encoder)
            image_encoder = _ready(CLIPVisionModelWithProjection(vision), dtype)
        with default_dtype(torch.float32):
            torch.manual_seed(seed + 3)
            vae = _ready(AutoencoderKLWan(**arch.vae), torch.float32)
    pipe: Any = WanImageToVideoPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=UniPCMultistepScheduler(**arch.scheduler),
        image_processor=CLIPImageProcessor(**arch.image_processor),
        image_encoder=image_encoder,
        transformer=transformer,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
