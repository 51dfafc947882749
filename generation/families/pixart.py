"""PixArt-α/Σ: DiT transformers with a T5 encoder and classic CFG; no image-to-image pipeline in
diffusers (SANA, Lumina, AuraFlow and the rest are the generic family's). PixArt's pipelines only
call back through the legacy per-step `callback`, so `--stop` (which needs `callback_on_step_end`
to end a call early) is refused there."""

from __future__ import annotations

from generation.families.base import Configs, Family
from generation.families.features import Features

# Prompts reach the model as members wrote them (caption cleaning would need bs4 and ftfy).
_CALL = {"clean_caption": False}
PIXART = Family(
    Features(
        family="pixart",
        label="PixArt",
        weights=False,
        tile=False,
        stop=False,
        image=False,
        edits=False,
        lora=None,
        size_step=16,
    ),
    denoiser="transformer",
    extra=_CALL,
)


def recognise(pipeline_class: str, configs: Configs) -> Family | None:
    """PixArt-α or -Σ from the pipeline class."""
    return PIXART if pipeline_class.startswith("PixArt") else None
