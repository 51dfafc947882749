"""`VideoFamily`: how an image-to-video ("Animate") pipeline is recognised and called.

Recognised from the loaded pipeline object (its class name, its call's signature and defaults, its
components' configs; duck-typed, never the model's name) by `recognise_video(pipe)`. Torch-free.

- "Wan image-to-video" (`WanImageToVideoPipeline`): 832×480 (the call's defaults; Wan 2.2 TI2V-5B,
  `expand_timesteps`, 1280×704), 81 frames at 16 fps (TI2V-5B: 121 at 24), frames 4k+1 (the VAE's
  temporal factor), sides multiples of 16 (VAE factor 8 × patch 2).
- "LTX-Video" (`LTXImageToVideoPipeline`): 704×512, 161 frames at 25 fps (the call's `frame_rate`,
  passed along: it scales the rotary positions), frames 8k+1, sides multiples of 32.
- "Stable Video Diffusion" (`StableVideoDiffusionPipeline`): 1024×576, the UNet's `num_frames` (14, or
  25 for XT) at the call's `fps` (7, also passed: SVD is conditioned on it), any frame count, sides
  multiples of 8; no prompt: `guidance` is its `max_guidance_scale`.
- "generic image-to-video": any other pipeline whose call takes `image` and `num_frames`, read from
  the call's signature and defaults (frames k·t+1 where the pipeline has a VAE temporal factor t).

A denoiser config may carry `VIDEO_DEFAULTS_KEY` (`{"width", "height", "frames", "fps"}`) that wins
over the call's defaults: the tiny models write it (`generation.pipelines.tiny_video`), since their
call's defaults are the full-size model's (832×480×81 frames would take minutes on a CPU). diffusers
keeps such a private config key through `save_pretrained`/`from_pretrained`.

Motion ("low" or "high"):

- Wan, LTX (and generic pipelines with a prompt): a motion phrase appended to the prompt, and its
  opposite to the negative prompt (where the call takes one). Low: ", subtle motion, slow steady
  camera" / "fast motion, shaky camera"; high: ", dynamic motion, fast camera movement" / "static,
  still frame". These models have no motion input: their text encoder is how motion is asked for
  (Wan's own recommended negative prompt lists static, still pictures; LTX's guide asks for the
  movement to be described). Guidance is left alone: it trades prompt adherence against artefacts
  (over-saturation at high values), it is not a motion control.
- SVD (and generic pipelines taking `motion_bucket_id`): `motion_bucket_id` 60 vs 180 and
  `noise_aug_strength` 0.02 vs 0.1: the two inputs SVD was micro-conditioned on for motion; diffusers'
  documentation raises both for more motion (180 and 0.1 are its example), and 0.02 is the default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from generation.families.base import call_defaults, call_parameters, configs_of
from generation.prompts.request import snap_size

__all__ = [
    "LTX",
    "MOTIONS",
    "PROMPT_MOTION",
    "SVD",
    "SVD_MOTION",
    "VIDEO_DEFAULTS_KEY",
    "WAN",
    "VideoFamily",
    "recognise_video",
]

WAN = "Wan image-to-video"
LTX = "LTX-Video"
SVD = "Stable Video Diffusion"
GENERIC = "generic image-to-video"

MOTIONS = ("low", "high")
"""The motion a member may ask for."""

PROMPT_MOTION: dict[str, tuple[str, str]] = {
    "low": (", subtle motion, slow steady camera", "fast motion, shaky camera"),
    "high": (", dynamic motion, fast camera movement", "static, still frame"),
}
"""Motion → (appended to the prompt, appended to the negative prompt), for prompted families."""

SVD_MOTION: dict[str, tuple[int, float]] = {"low": (60, 0.02), "high": (180, 0.1)}
"""Motion → (`motion_bucket_id`, `noise_aug_strength`), for SVD-style conditioning."""

VIDEO_DEFAULTS_KEY = "_video_defaults"
"""A denoiser config key overriding the call's default `width`, `height`, `frames` and `fps`."""

MAX_ASPECT = 4.0  # a source more elongated than 4:1 is animated at 4:1


@dataclass(frozen=True)
class VideoFamily:
    """One image-to-video pipeline's defaults and how it is called."""

    name: str
    width: int  # native size: the call's defaults (or `VIDEO_DEFAULTS_KEY`)
    height: int
    frames: int  # default frame count
    fps: int  # frames per second the clip is played (and, where the call takes it, conditioned) at
    steps: int
    guidance: float
    size_step: int  # width and height are multiples of this (VAE spatial factor × patch)
    frame_step: int = 1  # frames are frame_step·k + 1 (the VAE's temporal factor); 1: any count
    parameters: frozenset[str] = field(default=frozenset(), repr=False)  # what the call takes
    guidance_argument: str | None = "guidance_scale"  # None: the call has no guidance
    fps_argument: str | None = None  # `frame_rate` (LTX), `fps` (SVD): the call is told the rate
    motion_style: str = "prompt"  # "prompt" (a phrase) or "bucket" (SVD's motion_bucket_id)
    vae_float32: bool = False  # decode in float32 when loaded in half precision (Wan's advice)
    requires: tuple[str, ...] = ()  # Python modules the call imports lazily (Wan: ftfy)
    extra: Mapping[str, Any] = field(default_factory=dict)  # fixed call arguments

    @property
    def pixels(self) -> int:
        """The native pixel count: sizes for other aspects keep about this many."""
        return self.width * self.height

    def snap_frames(self, n: int) -> int:
        """The frame count nearest `n` that the model makes (frame_step·k + 1, k ≥ 1)."""
        k = max(1, int((max(n, 1) - 1) / self.frame_step + 0.5))
        return k * self.frame_step + 1

    def size_for(self, width: int, height: int) -> tuple[int, int]:
        """The video size for a source picture of `width`×`height`: its aspect (within 4:1) at about
        the native pixel count, both sides multiples of `size_step`."""
        if width <= 0 or height <= 0:
            raise ValueError(f"a source picture of {width}×{height} has no aspect")
        ratio = min(MAX_ASPECT, max(1 / MAX_ASPECT, width / height))
        return snap_size(ratio, self.pixels, self.size_step)

    def call_arguments(
        self,
        image: Any,
        prompt: str,
        negative: str,
        width: int,
        height: int,
        frames: int,
        steps: int,
        guidance: float,
        motion: str,
        generator: Any,
    ) -> dict[str, Any]:
        """The pipeline call's keyword arguments (without output type and callbacks). `width`,
        `height` and `frames` must already be the model's (`size_for`, `snap_frames`)."""
        if motion not in MOTIONS:
            raise ValueError(f"motion is one of {', '.join(MOTIONS)}, not {motion!r}")
        if width % self.size_step or height % self.size_step or width <= 0 or height <= 0:
            raise ValueError(
                f"{self.name} makes sizes in multiples of {self.size_step}, not {width}×{height}"
            )
        if frames != self.snap_frames(frames):
            raise ValueError(
                f"{self.name} makes {self.frame_step}k+1 frames: {self.snap_frames(frames)}, not {frames}"
            )
        if steps < 1:
            raise ValueError(f"at least one step, not {steps}")
        kwargs: dict[str, Any] = {
            "image": image,
            "width": width,
            "height": height,
            "num_frames": frames,
            "num_inference_steps": steps,
            "generator": generator,
        }
        if self.guidance_argument is not None:
            kwargs[self.guidance_argument] = guidance
        if self.fps_argument is not None:
            kwargs[self.fps_argument] = self.fps
        if self.motion_style == "bucket":
            kwargs["motion_bucket_id"], kwargs["noise_aug_strength"] = SVD_MOTION[motion]
        if "prompt" in self.parameters:
            more, less = PROMPT_MOTION[motion] if self.motion_style == "prompt" else ("", "")
            kwargs["prompt"] = f"{prompt.strip()}{more}" if prompt.strip() else more.lstrip(", ")
            if "negative_prompt" in self.parameters:
                kwargs["negative_prompt"] = ", ".join(p for p in (negative.strip(), less) if p)
        kwargs.update(self.extra)
        return {k: v for k, v in kwargs.items() if k in self.parameters}


def recognise_video(pipe: Any) -> VideoFamily:
    """The `VideoFamily` of a loaded image-to-video pipeline. Raises ValueError naming the class for
    a pipeline whose call takes no picture or makes no frames (text-to-image, text-to-video, …)."""
    kind = type(pipe).__name__
    parameters = frozenset(call_parameters(pipe))
    if "image" not in parameters:
        raise ValueError(f"{kind} cannot animate a picture: its call takes no `image`")
    if "num_frames" not in parameters:
        raise ValueError(f"{kind} is not an image-to-video pipeline: its call takes no `num_frames`")
    defaults = call_defaults(pipe)
    configs = configs_of(pipe)
    own = _own_defaults(configs)
    if kind == "WanImageToVideoPipeline":
        return _wan(pipe, parameters, defaults, configs, own)
    if kind == "LTXImageToVideoPipeline":
        return _ltx(pipe, parameters, defaults, configs, own)
    if kind == "StableVideoDiffusionPipeline":
        return _svd(pipe, parameters, defaults, configs, own)
    return _generic(pipe, parameters, defaults, configs, own)


# -- the families ------------------------------------------------------------------------------------


def _wan(
    pipe: Any,
    parameters: frozenset[str],
    defaults: Mapping[str, Any],
    configs: Mapping[str, Mapping[str, Any]],
    own: Mapping[str, Any],
) -> VideoFamily:
    vae = configs.get("vae", {})
    spatial = _int(getattr(pipe, "vae_scale_factor_spatial", None), _int(vae.get("scale_factor_spatial"), 8))
    temporal = _int(
        getattr(pipe, "vae_scale_factor_temporal", None), _int(vae.get("scale_factor_temporal"), 4)
    )
    transformer = configs.get("transformer") or configs.get("transformer_2") or {}
    patch = transformer.get("patch_size") or (1, 2, 2)
    patch_side = max(int(patch[1]), int(patch[2])) if isinstance(patch, list | tuple) else int(patch)
    five_b = bool(_config(pipe).get("expand_timesteps"))  # Wan 2.2 TI2V-5B: 720p, 24 fps
    width, height = _int(defaults.get("width"), 832), _int(defaults.get("height"), 480)
    if five_b:
        width, height = 1280, 704
    return VideoFamily(
        name=WAN,
        width=_int(own.get("width"), width),
        height=_int(own.get("height"), height),
        frames=_int(own.get("frames"), 121 if five_b else _int(defaults.get("num_frames"), 81)),
        fps=_int(own.get("fps"), 24 if five_b else 16),
        steps=_int(defaults.get("num_inference_steps"), 50),
        guidance=_float(defaults.get("guidance_scale"), 5.0),
        size_step=max(16, spatial * patch_side),  # the call refuses sides not multiples of 16
        frame_step=temporal,
        parameters=parameters,
        vae_float32=True,
        requires=("ftfy",),
    )


def _ltx(
    pipe: Any,
    parameters: frozenset[str],
    defaults: Mapping[str, Any],
    configs: Mapping[str, Mapping[str, Any]],
    own: Mapping[str, Any],
) -> VideoFamily:
    spatial = _int(getattr(pipe, "vae_spatial_compression_ratio", None), 32)
    temporal = _int(getattr(pipe, "vae_temporal_compression_ratio", None), 8)
    patch = _int(getattr(pipe, "transformer_spatial_patch_size", None), 1)
    patch_t = _int(getattr(pipe, "transformer_temporal_patch_size", None), 1)
    extra: dict[str, Any] = {}
    if configs.get("vae", {}).get("timestep_conditioning"):  # LTX-Video 0.9.1 on: decode at a timestep
        extra = {"decode_timestep": 0.03, "decode_noise_scale": 0.025}
    return VideoFamily(
        name=LTX,
        width=_int(own.get("width"), _int(defaults.get("width"), 704)),
        height=_int(own.get("height"), _int(defaults.get("height"), 512)),
        frames=_int(own.get("frames"), _int(defaults.get("num_frames"), 161)),
        fps=_int(own.get("fps"), _int(defaults.get("frame_rate"), 25)),
        steps=_int(defaults.get("num_inference_steps"), 50),
        guidance=_float(defaults.get("guidance_scale"), 3.0),
        size_step=max(32, spatial * patch),  # the call refuses sides not multiples of 32
        frame_step=temporal * patch_t,
        parameters=parameters,
        fps_argument="frame_rate",
        extra=extra,
    )


def _svd(
    pipe: Any,
    parameters: frozenset[str],
    defaults: Mapping[str, Any],
    configs: Mapping[str, Mapping[str, Any]],
    own: Mapping[str, Any],
) -> VideoFamily:
    unet = configs.get("unet", {})
    return VideoFamily(
        name=SVD,
        width=_int(own.get("width"), _int(defaults.get("width"), 1024)),
        height=_int(own.get("height"), _int(defaults.get("height"), 576)),
        frames=_int(own.get("frames"), _int(defaults.get("num_frames"), _int(unet.get("num_frames"), 14))),
        fps=_int(own.get("fps"), _int(defaults.get("fps"), 7)),
        steps=_int(defaults.get("num_inference_steps"), 25),
        guidance=_float(defaults.get("max_guidance_scale"), 3.0),
        size_step=_int(getattr(pipe, "vae_scale_factor", None), 8),
        parameters=parameters,
        guidance_argument="max_guidance_scale",
        fps_argument="fps",
        motion_style="bucket",
        extra={"decode_chunk_size": 8},  # all frames at once is SVD's default: gigabytes at 25 frames
    )


def _generic(
    pipe: Any,
    parameters: frozenset[str],
    defaults: Mapping[str, Any],
    configs: Mapping[str, Mapping[str, Any]],
    own: Mapping[str, Any],
) -> VideoFamily:
    spatial = 8
    for attribute in ("vae_scale_factor_spatial", "vae_spatial_compression_ratio", "vae_scale_factor"):
        spatial = _int(getattr(pipe, attribute, None), 0)
        if spatial:
            break
    spatial = spatial or 8
    temporal = 1
    for attribute in ("vae_scale_factor_temporal", "vae_temporal_compression_ratio"):
        temporal = _int(getattr(pipe, attribute, None), 0)
        if temporal:
            break
    temporal = temporal or 1
    denoiser = configs.get("transformer") or configs.get("unet") or {}
    patch = denoiser.get("patch_size") or 1
    patch_side = int(patch[-1]) if isinstance(patch, list | tuple) else int(patch)
    width, height = _int(defaults.get("width"), 0), _int(defaults.get("height"), 0)
    if not (width and height):  # CogVideoX: `sample_width`/`sample_height` latent pixels
        sample = _int(denoiser.get("sample_size"), 0)
        width = _int(denoiser.get("sample_width"), sample) * spatial or 512
        height = _int(denoiser.get("sample_height"), sample) * spatial or 512
    fps_argument = next((p for p in ("fps", "frame_rate", "target_fps") if p in parameters), None)
    guidance_argument = next((p for p in ("guidance_scale", "max_guidance_scale") if p in parameters), None)
    bucket = "motion_bucket_id" in parameters and "noise_aug_strength" in parameters
    guidance = defaults.get(guidance_argument) if guidance_argument else None
    return VideoFamily(
        name=GENERIC,
        width=_int(own.get("width"), width),
        height=_int(own.get("height"), height),
        frames=_int(own.get("frames"), _int(defaults.get("num_frames"), 16)),
        fps=_int(own.get("fps"), _int(defaults.get(fps_argument) if fps_argument else None, 8)),
        steps=_int(defaults.get("num_inference_steps"), 30),
        guidance=_float(guidance, 5.0),
        size_step=spatial * patch_side,
        frame_step=temporal,
        parameters=parameters,
        guidance_argument=guidance_argument,
        fps_argument=fps_argument,
        motion_style="bucket" if bucket else "prompt",
    )


# -- reading configs ---------------------------------------------------------------------------------


def _own_defaults(configs: Mapping[str, Mapping[str, Any]]) -> Mapping[str, Any]:
    """`VIDEO_DEFAULTS_KEY` of whichever component config carries it (the tiny models' denoiser)."""
    for config in configs.values():
        found = config.get(VIDEO_DEFAULTS_KEY)
        if isinstance(found, Mapping):
            return found
    return {}


def _config(pipe: Any) -> Mapping[str, Any]:
    config = getattr(pipe, "config", None)
    return config if isinstance(config, Mapping) else {}


def _int(value: Any, default: int) -> int:
    """`value` where it is a positive int (not a bool), else `default`."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return default


def _float(value: Any, default: float) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return default
