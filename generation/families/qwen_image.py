"""Qwen-Image: a packed-latent MMDiT with a Qwen2.5-VL text encoder. `--cfg` is true CFG
(`true_cfg_scale`, with a blank negative prompt when none is given, as its model card runs it).

Qwen-Image-Edit (`QwenImageEditPipeline`) and Qwen-Image-Edit-Plus (`QwenImageEditPlusPipeline`, the
2509 and later releases) only edit: their call needs a picture, which the text encoder reads beside the
words and the transformer sees as tokens beside the latents. They edit from words (EDIT_MODEL), take
`image`, V and U through that same input (no strength: all their steps run), and take `--oref` and
`/blend` as input pictures: Edit one (several side by side in one strip, as Kontext), Plus up to three
of their own (its model card's range; more are put side by side into three). Plus's call takes one
prompt: a batch of several requests runs one request a call. A prompt with no picture is refused.
"""

from __future__ import annotations

from typing import Any

from generation.families.base import Configs, Family
from generation.families.features import Features, Guidance
from generation.families.sd3 import FLOW_PICTURE_SAMPLERS, FLOW_SAMPLERS_WITHOUT_DPM
from generation.prompts.request import GenerationRequest

QWEN_IMAGE = Family(
    Features(
        family="qwen-image",
        label="Qwen-Image",
        guidance=Guidance.TRUE_CFG,
        samplers=FLOW_SAMPLERS_WITHOUT_DPM,
        picture_samplers=FLOW_PICTURE_SAMPLERS,
        weights=False,
        tile=False,
        chaos=False,
        lora="transformer",
        size_step=16,
    ),
    denoiser="transformer",
    schedule="flow",
    packed=True,
)


class QwenEditFamily(Family):
    """The edit pipelines: the picture input is `image` (one per image), handed over as it is."""

    def reference_input(self, pictures: list[list[Any]]) -> dict[str, Any]:
        if self.one_prompt_per_call:  # one request a call: its images share their pictures
            return {"image": pictures[0]}
        return {"image": [one for [one] in pictures]}

    def call_arguments(self, pipe: Any, first: GenerationRequest, kwargs: dict[str, Any]) -> None:
        super().call_arguments(pipe, first, kwargs)
        if not self.one_prompt_per_call:
            return
        # one prompt, its images by `num_images_per_prompt`; a picture input given per image is one
        count = len(kwargs["prompt"])
        kwargs["prompt"] = kwargs["prompt"][0]
        kwargs["negative_prompt"] = kwargs["negative_prompt"][0]
        kwargs["num_images_per_prompt"] = count
        if isinstance(kwargs.get("image"), list):
            kwargs["image"] = kwargs["image"][:1]


def _edit_features(family: str, label: str) -> Features:
    return Features(
        family=family,
        label=label,
        guidance=Guidance.TRUE_CFG,
        samplers=FLOW_SAMPLERS_WITHOUT_DPM,
        weights=False,
        tile=False,
        chaos=False,
        from_text=False,
        strength=False,  # its picture input takes no strength: it edits
        instruct=True,
        references=True,
        reference_adapter=False,  # its own picture input: a subject or a blend, no style, no weight
        edits=False,  # QwenImageEditInpaintPipeline is not wired: no inpainting buttons
        lora="transformer",
        size_step=16,
    )


def _edit_family(features: Features, *, pictures: int, one_prompt: bool) -> QwenEditFamily:
    return QwenEditFamily(
        features,
        denoiser="transformer",
        schedule="flow",
        packed=True,
        input_pictures=pictures,
        one_prompt_per_call=one_prompt,
    )


QWEN_IMAGE_EDIT = _edit_family(
    _edit_features("qwen-image-edit", "Qwen-Image-Edit"), pictures=1, one_prompt=False
)
QWEN_IMAGE_EDIT_PLUS = _edit_family(
    _edit_features("qwen-image-edit-plus", "Qwen-Image-Edit-Plus"), pictures=3, one_prompt=True
)

_BY_PIPELINE = {
    "QwenImagePipeline": QWEN_IMAGE,
    "QwenImageEditPipeline": QWEN_IMAGE_EDIT,
    "QwenImageEditPlusPipeline": QWEN_IMAGE_EDIT_PLUS,
}


def recognise(pipeline_class: str, configs: Configs) -> Family | None:
    """Qwen-Image (text-to-image), Qwen-Image-Edit or Qwen-Image-Edit-Plus, from the pipeline class."""
    return _BY_PIPELINE.get(pipeline_class)
