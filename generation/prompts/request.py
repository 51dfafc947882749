"""Generation requests: the frozen value every other part passes around.

`GenerationRequest` says exactly what to draw; `parse_prompt` (in `generation.prompts.parser`) builds one
from a member's text and slash options. Nothing here imports torch or Discord.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

from generation.families.features import Features
from generation.prompts.edits import EditSpec
from generation.prompts.references import Reference
from generation.prompts.video import Motion, VideoSpec


class Mode(StrEnum):
    """What the pipeline starts from."""

    TXT2IMG = "txt2img"
    IMG2IMG = "img2img"  # from a member's own picture, at `strength`
    VARIATION = "variation"  # image-to-image of one result image, new seeds
    UPSCALE = "upscale"  # one result image resized up, then image-to-image at moderate strength
    EDIT = "edit"  # one picture's edit (`edit`: vary, zoom, pan, make square, region, upscale)
    ANIMATE = "animate"  # a clip from one picture, or more of a clip (`video`; generation.prompts.video)
    INSTRUCT = "instruct"  # one picture changed as the prompt (an instruction) says, on EDIT_MODEL


MAX_IMAGES = 4
UPSCALE_FACTOR = 2
UPSCALE_STRENGTH = 0.35
VARIATION_STRENGTH = 0.6
IMG2IMG_STRENGTH = 0.6  # default `strength` for a member's own picture
SEED_MODULUS = 2**32  # seeds are 0..2**32-1


@dataclass(frozen=True)
class ModelProfile:
    """What the parser and the scheduler need to know about the loaded model."""

    name: str
    native_size: int  # e.g. 512 for SD 1.5, 768 for SD 2.x, 1024 for SDXL, 64 for `tiny`
    default_steps: int
    default_guidance: float
    min_steps: int = 1
    max_steps: int = 100
    token_limit: int = 77  # including the begin/end tokens, as CLIP counts
    is_turbo: bool = False
    has_safety_checker: bool = False
    prompt_windows: int = 1  # token windows a prompt may fill (more than 1: long prompts are joined)
    supports_weights: bool = False  # weights and long prompts are encoded (SD 1.x/2.x text encoders)
    features: Features = field(default_factory=Features)  # what its family carries (`generation.families`)


@dataclass(frozen=True)
class PromptOptions:
    """Settings given as slash-command options; None means 'not given' (inline flag or default)."""

    negative: str | None = None
    aspect: str | None = None
    steps: int | None = None
    guidance: float | None = None
    seed: int | None = None
    count: int | None = None
    strength: float | None = None
    model: str | None = None


@dataclass(frozen=True)
class PromptDefaults:
    """A member's or guild's defaults (`/settings`); None means 'not set'."""

    count: int | None = None
    aspect: str | None = None
    negative: str | None = None
    sampler: str | None = None
    suffix: str | None = None

    def over(self, fallback: PromptDefaults) -> PromptDefaults:
        """These defaults, each unset one taken from `fallback` (a member's over the guild's)."""
        pick = {k: v if v is not None else getattr(fallback, k) for k, v in asdict(self).items()}
        return PromptDefaults(**pick)


@dataclass(frozen=True)
class GenerationRequest:
    """Everything that decides the pixels. Equal requests on one model and device give equal images."""

    prompt: str
    width: int
    height: int
    steps: int
    guidance: float
    seeds: tuple[int, ...]  # one per image; len(seeds) is the image count (1..MAX_IMAGES)
    model: str
    negative_prompt: str = ""
    aspect: str = "1:1"
    mode: Mode = Mode.TXT2IMG
    strength: float | None = None  # img2img / variation / upscale only
    source_image: str | None = None  # sha256 hex of the source PNG/JPEG bytes in the image store
    sampler: str | None = None  # a name of generation.prompts.samplers; None: the model's own
    tile: bool = False  # edges wrap (circular padding in the UNet's and VAE's convolutions)
    stop: int = 100  # percent of the steps to run
    chaos: int | None = None  # 0-100: how unlike each other the images are; None: independent seeds
    # 0: diffusers encodes the prompts; n: weighted encoding in n 75-token windows (pipelines.prompt_encoding)
    prompt_windows: int = 0
    loras: tuple[tuple[str, float], ...] = ()  # (name, weight) of each LoRA adapter, sorted by name
    edit: EditSpec | None = None  # EDIT only: what to do to the source picture
    true_cfg: float = 0.0  # >0: `--no` through true CFG (a second pass) on a model with embedded guidance
    video: VideoSpec | None = None  # ANIMATE only: the clip's motion, and whether it extends one
    references: tuple[Reference, ...] = ()  # style/subject pictures (`--sref`, `--oref`, `/blend`)
    warnings: tuple[str, ...] = field(default=(), compare=False)  # e.g. "12 tokens dropped"

    @property
    def count(self) -> int:
        """How many images this request makes (and spends)."""
        return len(self.seeds)

    @property
    def reference_images(self) -> tuple[str, ...]:
        """The hashes of its reference pictures (the engine is handed their bytes with the batch)."""
        return tuple(image for reference in self.references for image in reference.images)

    @property
    def weighted(self) -> bool:
        """True when the prompts are encoded with weights and token windows."""
        return self.prompt_windows > 0

    def batch_key(self) -> tuple[Any, ...]:
        """Requests with equal keys may run in one batch (same shapes and schedule)."""
        shape = (self.model, self.mode, self.width, self.height, self.steps, self.guidance, self.strength)
        edit = self.edit.batch_key() if self.edit is not None else None
        video = self.video.to_data()["motion"] if self.video is not None else None
        references = tuple((r.kind, r.weight) for r in self.references)  # pictures differ per sample
        extras = (
            self.sampler,
            self.tile,
            self.stop,
            self.chaos,
            self.prompt_windows,
            self.loras,
            self.true_cfg,
            video,
            references,
        )
        return (*shape, *extras, edit)

    def with_seeds(self, seeds: tuple[int, ...]) -> GenerationRequest:
        """The same settings with other seeds (a reroll)."""
        return replace(self, seeds=seeds)

    def to_json(self) -> str:
        """Serialise for storage (warnings are not kept)."""
        data = asdict(self)
        data["seeds"] = list(self.seeds)
        data["mode"] = self.mode.value
        data["loras"] = [list(pair) for pair in self.loras]
        data["edit"] = json.loads(self.edit.to_json()) if self.edit is not None else None
        data["video"] = self.video.to_data() if self.video is not None else None
        data["references"] = [r.to_data() for r in self.references]
        data.pop("warnings")
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> GenerationRequest:
        """Inverse of `to_json`."""
        data = json.loads(text)
        data["seeds"] = tuple(data["seeds"])
        data["mode"] = Mode(data["mode"])
        data["loras"] = tuple((str(n), float(w)) for n, w in data.get("loras", ()))
        edit = data.get("edit")
        data["edit"] = EditSpec.from_json(json.dumps(edit)) if edit else None
        video = data.get("video")
        data["video"] = VideoSpec.from_data(video) if video else None
        data["references"] = tuple(Reference.from_data(r) for r in data.get("references", ()))
        return cls(**data)


def consecutive_seeds(first: int, count: int) -> tuple[int, ...]:
    """`count` seeds from `first` upwards, wrapping at 2**32: the seeds of an n-image request."""
    return tuple((first + i) % SEED_MODULUS for i in range(count))


def model_unit(profile: ModelProfile) -> int:
    """The size step of `profile`'s model: `size_unit` of its native size, and never finer than its
    family's (`Features.size_step`: the VAE's factor × the transformer's patch)."""
    return max(size_unit(profile.native_size), profile.features.size_step)


def size_unit(native: int) -> int:
    """Both sides of a picture are multiples of this: 64 for real models (native >= 512), else 8."""
    return 64 if native >= 512 else 8


def snap_size(ratio: float, pixels: float, unit: int, max_pixels: float | None = None) -> tuple[int, int]:
    """Width and height, multiples of `unit`, with about `pixels` pixels and width/height closest
    to `ratio` (ratio matters more than area). With `max_pixels`, never more pixels than that."""
    ideal_w = math.sqrt(pixels * ratio)
    centre = max(1, round(ideal_w / unit))
    best: tuple[float, int, int] | None = None
    for k in range(max(1, centre - 4), centre + 5):
        w = k * unit
        for h in {
            max(unit, math.floor(w / ratio / unit) * unit),
            max(unit, math.ceil(w / ratio / unit) * unit),
        }:
            score = abs(math.log(w / h / ratio)) + 0.5 * abs(math.log(w * h / pixels))
            if max_pixels is not None and w * h > max_pixels:
                score += 1000.0  # only if nothing fits
            if best is None or score < best[0] - 1e-12:
                best = (score, w, h)
    assert best is not None
    return best[1], best[2]


def _check_seeds(seeds: tuple[int, ...]) -> None:
    if not 1 <= len(seeds) <= MAX_IMAGES:
        raise ValueError(f"a request makes 1 to {MAX_IMAGES} images, not {len(seeds)}")
    if any(not 0 <= s < SEED_MODULUS for s in seeds):
        raise ValueError("seeds must be between 0 and 2**32-1")


def _check_index(parent: GenerationRequest, index: int) -> None:
    if not 0 <= index < parent.count:
        raise IndexError(f"image {index + 1} does not exist: the job made {parent.count}")


def variation_of(
    parent: GenerationRequest, index: int, source_hash: str, seeds: tuple[int, ...]
) -> GenerationRequest:
    """Variations of the parent's image `index` (0-based): image-to-image from it with new seeds."""
    _check_index(parent, index)
    _check_seeds(seeds)
    return replace(
        parent,
        mode=Mode.VARIATION,
        strength=VARIATION_STRENGTH,
        source_image=source_hash,
        seeds=seeds,
        warnings=(),
    )


def upscale_of(
    parent: GenerationRequest, index: int, source_hash: str, profile: ModelProfile
) -> GenerationRequest:
    """The parent's image `index` alone at UPSCALE_FACTOR× its size (at most 4× the model's native
    pixel count), redrawn from itself at UPSCALE_STRENGTH with the seed it was made with."""
    _check_index(parent, index)
    unit = model_unit(profile)
    cap = 4 * profile.native_size**2
    area = parent.width * parent.height
    target = min(area * UPSCALE_FACTOR**2, cap)
    if target <= area:  # already at the cap: redraw at the same size
        width, height = parent.width, parent.height
    else:
        width, height = snap_size(parent.width / parent.height, target, unit, max_pixels=cap)
    return replace(
        parent,
        mode=Mode.UPSCALE,
        width=width,
        height=height,
        strength=UPSCALE_STRENGTH,
        source_image=source_hash,
        seeds=(parent.seeds[index],),
        warnings=(),
    )


def edit_of(
    parent: GenerationRequest,
    spec: EditSpec,
    source_hash: str,
    size: tuple[int, int],
    seeds: tuple[int, ...],
) -> GenerationRequest:
    """`spec` done to the parent's one picture (stored as `source_hash`): a request of `size` (the
    canvas `generation.media.canvas.canvas_size` gives) with the parent's prompt and new seeds."""
    _check_seeds(seeds)
    return replace(
        parent,
        mode=Mode.EDIT,
        width=size[0],
        height=size[1],
        strength=spec.strength,
        source_image=source_hash,
        seeds=seeds,
        edit=spec,
        warnings=(),
    )


def reroll_of(parent: GenerationRequest, seeds: tuple[int, ...]) -> GenerationRequest:
    """The same settings (source image included) with new seeds."""
    _check_seeds(seeds)
    return replace(parent, seeds=seeds, warnings=())


def animate_of(
    parent: GenerationRequest,
    *,
    source_hash: str,
    size: tuple[int, int],
    motion: Motion,
    video_model: str,
    seed: int,
    of_job: str | None = None,
    prompt: str | None = None,
) -> GenerationRequest:
    """A clip of one picture (`source_hash`, of `size`) on `video_model`, prompted by `prompt` (default:
    the picture's own prompt). Size, steps and guidance are 0: the video model's own (the engine's)."""
    width, height = size
    return replace(
        parent,
        prompt=parent.prompt if prompt is None else prompt,
        width=width,
        height=height,
        steps=0,
        guidance=0.0,
        seeds=(seed,),
        model=video_model,
        mode=Mode.ANIMATE,
        strength=None,
        source_image=source_hash,
        sampler=None,
        tile=False,
        stop=100,
        chaos=None,
        prompt_windows=0,
        loras=(),
        edit=None,
        true_cfg=0.0,
        video=VideoSpec(motion, extend=False, of_job=of_job),
        references=(),
        warnings=(),
    )


def instruct_of(
    *,
    source_hash: str,
    size: tuple[int, int],
    instruction: str,
    edit_model: str,
    seed: int,
    aspect: str | None = None,
) -> GenerationRequest:
    """`Edit` in words: one picture (`source_hash`, of `size`; `aspect` as its job said it, else its
    sides' ratio) changed as `instruction` says, on `edit_model`, at the picture's size (a model that
    draws at multiples of its own is resized back to it by the engine). Steps and guidance are 0: the
    edit model's own (`with_model_defaults`, where it is loaded)."""
    width, height = size
    common = math.gcd(*size)
    return GenerationRequest(
        prompt=instruction,
        width=width,
        height=height,
        steps=0,
        guidance=0.0,
        seeds=(seed,),
        model=edit_model,
        aspect=aspect or f"{size[0] // common}:{size[1] // common}",
        mode=Mode.INSTRUCT,
        source_image=source_hash,
    )


def with_model_defaults(request: GenerationRequest, profile: ModelProfile) -> GenerationRequest:
    """A request that left its steps to its model (0: an Edit in words, made before the edit model was
    loaded) with the model's own steps and guidance."""
    if request.steps:
        return request
    return replace(request, steps=profile.default_steps, guidance=profile.default_guidance)


def picture_request(prompt: str, size: tuple[int, int], video_model: str) -> GenerationRequest:
    """The stand-in parent of `/animate`'s own picture (no earlier job): its prompt and size."""
    return GenerationRequest(
        prompt=prompt, width=size[0], height=size[1], steps=0, guidance=0.0, seeds=(0,), model=video_model
    )


def extend_of(clip: GenerationRequest, *, source_hash: str, seed: int, of_job: str) -> GenerationRequest:
    """About as long again from the clip's last frame (`source_hash`: the clip's MP4), the clips joined."""
    if clip.video is None:
        raise ValueError("only a clip can be extended")
    return replace(
        clip,
        seeds=(seed,),
        source_image=source_hash,
        video=VideoSpec(clip.video.motion, extend=True, of_job=of_job),
        warnings=(),
    )
