# mypy: disable-error-code="no-untyped-call"
"""FLOPs per image, counted with `torch.utils.flop_counter.FlopCounterMode` on the pipeline's own modules:
one UNet call × steps × (2 with guidance) + the text encoder(s) + one VAE decode."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from bench.archs import Arch
from bench.gpu.plan import PROMPT


@dataclass(frozen=True)
class Flops:
    """FLOPs of one image's parts (counted by FlopCounterMode: 2 per multiply-add)."""

    unet_call: int  # one UNet pass on one latent
    text: int  # the text encoder(s), one prompt
    vae_decode: int  # one image

    def per_image(self, arch: Arch) -> int:
        """UNet × steps × guidance passes + text encoding of prompt (and negative) + one decode."""
        return self.unet_call * arch.steps * arch.cfg_passes + self.text * arch.cfg_passes + self.vae_decode


def count_flops(pipe: Any, arch: Arch, device: str) -> Flops:
    """Count one UNet call, the text encoder(s) and one VAE decode of `pipe` (batch 1).

    SDPA runs its math backend while counting, so attention is counted on every device (the fused CPU
    kernel has no FLOP formula)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    unet, vae = pipe.unet, pipe.vae
    dtype = unet.dtype
    side = arch.size // pipe.vae_scale_factor
    sample = torch.randn(1, unet.config.in_channels, side, side, device=device, dtype=dtype)
    hidden = torch.randn(1, 77, unet.config.cross_attention_dim, device=device, dtype=dtype)
    timestep = torch.tensor([999], device=device)
    extra: dict[str, Any] = {}
    if arch.is_xl:
        time_dim = 6 * unet.config.addition_time_embed_dim
        pooled = unet.config.projection_class_embeddings_input_dim - time_dim
        extra["added_cond_kwargs"] = {
            "text_embeds": torch.randn(1, pooled, device=device, dtype=dtype),
            "time_ids": torch.tensor([[arch.size, arch.size, 0, 0, arch.size, arch.size]], device=device),
        }
    ids = pipe.tokenizer(PROMPT, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    input_ids = ids.input_ids.to(device)

    def counted(fn: Any) -> int:
        with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]), FlopCounterMode(display=False) as mode:
            fn()
        return int(mode.get_total_flops())

    unet_call = counted(lambda: unet(sample, timestep, encoder_hidden_states=hidden, **extra))
    text = counted(lambda: pipe.text_encoder(input_ids))
    if arch.is_xl:
        text += counted(lambda: pipe.text_encoder_2(input_ids))
    latents = torch.randn(1, vae.config.latent_channels, side, side, device=device, dtype=vae.dtype)
    vae_decode = counted(lambda: vae.decode(latents))
    return Flops(unet_call, text, vae_decode)
