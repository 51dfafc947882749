"""`DiffusersEngine`: runs batches of compatible requests as one diffusers pipeline call.

Each image has its own `torch.Generator`, so an image is the same whether it runs alone or in a
batch. The safety checker runs apart from the pipeline: flagged images come back flagged, never
blacked out. A batch's result PNGs are encoded in parallel on a small shared thread pool (Pillow's
zip encoder releases the GIL while it filters and deflates; `python -m bench encode` measures it).
Not thread-safe: the worker thread that owns the model owns its engine.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from generation.backends.protocol import GeneratedImage, TokenizerCounter
from generation.families.adapters import IP_ADAPTER, NO_REFERENCE_ADAPTER, REDUX, AdapterSpec
from generation.media.canvas import Canvas, SizeCap, paste_back, prepare_canvas
from generation.media.compose import encode_png
from generation.media.image_store import decode_image, fit_source, load_source
from generation.pipelines.call_options import batch_call
from generation.pipelines.contract import (
    BatchFailed,
    BatchInterrupted,
    NonFiniteOutput,
    NoPreview,
    OutOfMemory,
    PreviewFn,
    StepCallback,
)
from generation.pipelines.inpaint import EditPipelines, edit_arguments
from generation.pipelines.ip_adapters import ReferenceAdapter, TransformerReferenceAdapter
from generation.pipelines.loading import LoadedModel, SafetyCheck, load_pipeline
from generation.pipelines.lora import LoraAdapters
from generation.pipelines.options import OptimiseOptions
from generation.pipelines.preview import preview_png
from generation.pipelines.prompt_encoding import prompt_encoder
from generation.pipelines.redux import ReduxReferences
from generation.pipelines.references import (
    InputReferences,
    ReferenceAdapterError,
    References,
    takes_transformer_ip_adapter,
    tiny_adapter_spec,
)
from generation.pipelines.safety_options import SafetyOptions
from generation.pipelines.samplers import Samplers
from generation.pipelines.source import BUILTIN_MODEL_IDS
from generation.pipelines.tuning import apply_vae_plan, images_that_fit, vae_plan
from generation.prompts.request import (
    UPSCALE_STRENGTH,
    VARIATION_STRENGTH,
    GenerationRequest,
    Mode,
    ModelProfile,
    size_unit,
    snap_size,
    with_model_defaults,
)
from generation.prompts.samplers import SAMPLER_LABELS

log = logging.getLogger(__name__)

CPU_MAX_BATCH_IMAGES = 8
GPU_MAX_BATCH_IMAGES = 16
IMG2IMG_DEFAULT_STRENGTH = 0.6  # as generation.prompts.request.IMG2IMG_STRENGTH

ENCODE_WORKERS = min(8, os.cpu_count() or 1)  # threads encoding a batch's PNGs at once

# Scheduler class → the sampler name written into each PNG's `parameters` (AUTOMATIC1111's names).
SAMPLER_NAMES = {
    "EulerDiscreteScheduler": "Euler",
    "EulerAncestralDiscreteScheduler": "Euler a",
    "DPMSolverMultistepScheduler": "DPM++ 2M",
    "DDIMScheduler": "DDIM",
    "PNDMScheduler": "PLMS",
    "LMSDiscreteScheduler": "LMS",
    "HeunDiscreteScheduler": "Heun",
    "LCMScheduler": "LCM",
    "UniPCMultistepScheduler": "UniPC",
    "FlowMatchEulerDiscreteScheduler": "Euler",  # SD 3, Flux, Qwen-Image, AuraFlow
    "FlowMatchHeunDiscreteScheduler": "Heun",
}


class DiffusersEngine:
    """The `generation.pipelines.contract.Engine` over a loaded diffusers model."""

    def __init__(
        self,
        model: LoadedModel,
        *,
        safety_checker: SafetyCheck | None = None,
        lora_dir: Path | None = None,
        reference_adapter: AdapterSpec | None = None,
    ) -> None:
        """`safety_checker` replaces the model's own checker (tests inject one that flags chosen images);
        `lora_dir` holds the LoRA adapters jobs may name; `reference_adapter` the IP-Adapter of `--sref`
        and `--oref` (None: the family's default; `NO_REFERENCE_ADAPTER`: none)."""
        self.model = model
        self.loras = LoraAdapters(lora_dir)
        self._check = safety_checker or model.safety_check
        self.profile: ModelProfile = model.profile
        if safety_checker is not None and not model.profile.has_safety_checker:
            self.profile = replace(model.profile, has_safety_checker=True)
        gen_device = "cpu" if model.device == "mps" else model.device
        self.family = model.family
        scheduler = type(model.text2img.scheduler).__name__
        self.sampler = SAMPLER_NAMES.get(scheduler, scheduler.removesuffix("Scheduler"))
        self._samplers = Samplers(model.text2img.scheduler, self.family.schedule)
        self._encoder = prompt_encoder(self.family, model.text2img)
        if self._encoder is not None:
            self.profile = replace(
                self.profile, prompt_windows=self.family.prompt_windows, supports_weights=True
            )
        self._generator_device = torch.device(gen_device)
        self._edits: EditPipelines | None = None
        self._inpainting_model = self.family.fills(model.text2img)  # SD's 9-channel UNets, Flux Fill
        # count_tokens runs on the event loop beside a running batch; a tokenizer keeps its padding and
        # truncation settings as state, so sharing the pipeline's races (its prompts lose their padding).
        # It counts with the tokenizer of the encoder that reads the longest prompts (Flux's T5).
        self._count_tokenizer = copy.deepcopy(model.tokenizer)
        self.references = self._reference_adapter(reference_adapter)
        features = replace(self.profile.features, references=self.references is not None)
        self.profile = replace(self.profile, features=features)

    def _reference_adapter(self, spec: AdapterSpec | None) -> References | None:
        """The model's reference adapter: `spec` (MODELS' `ref=`), else its family's default (a
        built-in tiny model's: a tiny one built locally); its own picture input where the family takes
        references so (Kontext); None where the family takes none."""
        if not self.family.features.references or spec == NO_REFERENCE_ADAPTER:
            return None
        if not self.family.features.reference_adapter:
            return InputReferences(self.family)
        pipe = self.model.text2img
        if spec is None:
            spec = self.family.reference_adapter
            if self.model.model_id in BUILTIN_MODEL_IDS:  # a built-in tiny model: a tiny adapter of its kind
                spec = tiny_adapter_spec(pipe, spec.kind if spec is not None else IP_ADAPTER)
        if spec is None:
            return None
        if spec.kind == REDUX:
            return ReduxReferences(pipe, spec)
        if takes_transformer_ip_adapter(pipe):
            return TransformerReferenceAdapter(pipe, spec)
        return ReferenceAdapter(pipe, spec, self.family.reference_layers)

    @classmethod
    def load(
        cls,
        model_id: str,
        device: str,
        *,
        cache_dir: Path | None,
        options: OptimiseOptions | None = None,
        safety: SafetyOptions | None = None,
        lora_dir: Path | None = None,
        reference_adapter: AdapterSpec | None = None,
    ) -> DiffusersEngine:
        """Load `model_id` onto `device` with `options`; if that compiled the UNet (`optimise` does on
        CUDA only), compile it now (see `warm_up`), so no member ever waits on a compile. Call it on
        the thread that will own the engine."""
        from diffusers.utils.torch_utils import is_compiled_module

        model = load_pipeline(model_id, device, cache_dir=cache_dir, options=options, safety=safety)
        engine = cls(model, lora_dir=lora_dir, reference_adapter=reference_adapter)
        if is_compiled_module(getattr(engine.model.text2img, "unet", None)):
            engine.warm_up()
        return engine

    # -- small queries ------------------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` as the model's (first) tokenizer counts them, begin/end included."""
        ids = self._count_tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"]
        return len(ids)

    def token_counter(self) -> TokenizerCounter:
        """A counter over this engine's own copy of the tokenizer (safe beside a running batch)."""
        return TokenizerCounter(self._count_tokenizer)

    def held_modules(self) -> list[torch.nn.Module]:
        """Every module this engine holds: its pipeline's components (an IP-Adapter's image encoder and
        attention layers among them, once loaded) and a reference adapter's own (Redux's)."""
        modules = [m for m in self.model.text2img.components.values() if isinstance(m, torch.nn.Module)]
        extra = getattr(self.references, "modules", None)
        return modules + (list(extra()) if callable(extra) else [])

    def max_batch_images(self, request: GenerationRequest) -> int:
        """The most images of this shape for one batch: a free-memory estimate on CUDA, a cap elsewhere."""
        if self.family.one_prompt_per_call:  # its call takes one prompt: one request a batch
            return request.count
        if not self.model.device.startswith("cuda"):
            return CPU_MAX_BATCH_IMAGES
        free, _total = torch.cuda.mem_get_info(torch.device(self.model.device))
        return images_that_fit(
            request.width,
            request.height,
            request.guidance,
            self.family.activation_scale,
            free,
            GPU_MAX_BATCH_IMAGES,
        )

    def warm_up(self, shapes: Sequence[tuple[int, int, int]] | None = None) -> float:
        """Run a short generation for each (images, width, height) in `shapes` (default:
        `warm_up_shapes(profile)`) so that a compiled UNet has compiled for every shape a member can
        ask for before any member waits; call it on the worker thread at start. Returns the seconds."""
        started = time.perf_counter()
        profile = self.profile
        shapes = warm_up_shapes(profile) if shapes is None else shapes
        for images, width, height in shapes:
            request = GenerationRequest(
                prompt="warm-up",
                width=width,
                height=height,
                steps=max(profile.min_steps, 2) if not profile.is_turbo else profile.default_steps,
                guidance=profile.default_guidance,
                seeds=tuple(range(images)),
                model=profile.name,
            )
            self.run_batch([request], [None], lambda _step, _total, _preview: True)
        elapsed = time.perf_counter() - started
        log.info("warm-up done in %.1f s (%d shapes)", elapsed, len(shapes))
        return elapsed

    # -- the batch ----------------------------------------------------------------------------------

    def run_batch(
        self,
        requests: Sequence[GenerationRequest],
        sources: Sequence[bytes | None],
        on_step: StepCallback,
        pictures: Mapping[str, bytes] | None = None,
    ) -> list[list[GeneratedImage]]:
        """One pipeline call for every image of `requests` (equal `batch_key()`); see `Engine.run_batch`."""
        self._check_batch(requests, sources)
        if self.family.one_prompt_per_call and len(requests) > 1:
            return self._one_request_a_call(requests, sources, on_step, pictures)
        if requests[0].mode is Mode.INSTRUCT and not self.profile.features.instruct:
            raise BatchFailed(self.profile.features.refusal("Editing in words", self.profile.name))
        requests = [with_model_defaults(r, self.profile) for r in requests]  # an Edit's 0 steps: the model's
        first = requests[0]
        prompts = [r.prompt for r in requests for _ in r.seeds]
        negatives = [r.negative_prompt for r in requests for _ in r.seeds]
        seeds = [seed for r in requests for seed in r.seeds]
        first_index = _first_image_indices(requests)
        generators = [torch.Generator(self._generator_device).manual_seed(seed) for seed in seeds]

        kwargs: dict[str, Any] = {
            "prompt": prompts,
            "negative_prompt": negatives,
            "num_inference_steps": first.steps,
            "guidance_scale": first.guidance,
            "generator": generators,
            "output_type": "np",  # floats, so a NaN or infinite pixel is seen (as PIL it is black)
            "callback_on_step_end": self._step_callback(on_step, first_index, (first.width, first.height)),
        }
        if self.model.device.startswith("cuda"):  # slicing for batches, tiling only where one won't fit
            free, _total = torch.cuda.mem_get_info(torch.device(self.model.device))
            apply_vae_plan(self.model.text2img.vae, vae_plan(len(seeds), first.width, first.height, free))
        canvases = self._canvases(requests, sources)
        if canvases is not None:  # edits, and any request on an inpainting model
            strength = 1.0 if first.mode is Mode.TXT2IMG else _strength(first)
            steps = first.edit.steps if first.edit is not None and first.edit.steps else first.steps
            pipes = self.edit_pipelines()
            pipe, image_args = edit_arguments(pipes, canvases, strength=strength, steps=steps)
            kwargs.update(image_args)
            self.family.sized(pipe, first, kwargs)  # the canvas's size, where the family's call takes one
        elif first.mode is Mode.TXT2IMG:
            pipe = self.model.text2img
            kwargs.update(width=first.width, height=first.height)
        else:
            pipe = self.model.img2img
            if pipe is None:
                raise BatchFailed(self.profile.features.refusal("Starting from a picture", self.profile.name))
            per_request = [_source_for(source, r) for r, source in zip(requests, sources, strict=True)]
            kwargs["image"] = [image for r, image in zip(requests, per_request, strict=True) for _ in r.seeds]
            self.family.sized(pipe, first, kwargs)
            if self.profile.features.strength:  # Kontext's image input takes none: all its steps run
                strength = _strength(first)
                kwargs["strength"] = strength
                # diffusers runs int(steps * strength) steps; always run at least one
                kwargs["num_inference_steps"] = max(first.steps, math.ceil(1 / strength))

        self.family.call_arguments(pipe, first, kwargs)
        if self.references is None and first.references:
            raise BatchFailed(
                self.profile.features.refusal("Style and subject references", self.profile.name)
            )
        references = (
            self.references.applied(pipe, requests, pictures or {}, kwargs)
            if self.references is not None
            else contextlib.nullcontext()
        )
        # a derived request (V, U, an edit) keeps its parent's sampler, which a flow model may not
        # run from a picture: then its own runs, and its PNGs say so
        from_picture = canvases is not None or first.mode is not Mode.TXT2IMG
        runs = self.profile.features.samplers_from(from_picture)
        sampler_name = first.sampler if first.sampler in runs else None
        try:
            with (
                self.loras.applied(pipe, first.loras),
                batch_call(pipe, requests, kwargs, self._samplers, self._encoder, self.family, sampler_name),
                references,  # after batch_call: Redux appends to the weighted encoder's embeddings
            ):
                pixels = pipe(**kwargs).images
        except ReferenceAdapterError as exc:
            raise BatchFailed(str(exc)) from exc
        except RuntimeError as exc:
            if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower():
                self._release_memory()
                raise OutOfMemory(
                    f"out of device memory for {len(seeds)} image(s) at {first.width}×{first.height}"
                ) from exc
            raise

        finite = finite_images(pixels)
        if not all(finite):  # the finite requests are still delivered; the others fail (`NonFiniteOutput`)
            pixels = np.nan_to_num(pixels, nan=0.0, posinf=1.0, neginf=0.0)
        images: list[Image.Image] = pipe.numpy_to_pil(pixels)
        wanted = (first.width, first.height)
        if any(image.size != wanted for image in images):  # an Edit's size, drawn at Kontext's multiple of 16
            images = [image.resize(wanted, Image.Resampling.LANCZOS) for image in images]
        if canvases is not None:  # the kept pixels back exactly, blended only across the seam
            images = [paste_back(image, canvas) for image, canvas in zip(images, canvases, strict=True)]
        flags = self._check(images) if self._check is not None else [False] * len(images)
        if len(flags) != len(images):
            raise RuntimeError(f"safety checker returned {len(flags)} flags for {len(images)} images")
        # a model whose image input takes no strength (Kontext) claims none in its PNGs
        said = requests if self.profile.features.strength else [replace(r, strength=None) for r in requests]
        owners = [(request, seed) for request in said for seed in request.seeds]
        sampler = SAMPLER_LABELS[sampler_name] if sampler_name else self.sampler
        pngs = encode_images(images, owners, sampler=sampler, model_hash=self.model.model_hash)
        results: list[list[GeneratedImage]] = []
        position = 0
        for request in requests:
            out = []
            for seed in request.seeds:
                image = images[position]
                out.append(
                    GeneratedImage(
                        png=pngs[position],
                        seed=seed,
                        width=image.width,
                        height=image.height,
                        nsfw=bool(flags[position]),
                    )
                )
                position += 1
            results.append(out)
        failed = _requests_of(requests, [i for i, ok in enumerate(finite) if not ok])
        if failed:
            raise NonFiniteOutput(failed, [[] if i in failed else r for i, r in enumerate(results)])
        return results

    def _one_request_a_call(
        self,
        requests: Sequence[GenerationRequest],
        sources: Sequence[bytes | None],
        on_step: StepCallback,
        pictures: Mapping[str, bytes] | None,
    ) -> list[list[GeneratedImage]]:
        """A batch on a model whose call takes one prompt (`Family.one_prompt_per_call`): its requests
        one after another, each previewed as itself (the others have no preview while it runs)."""
        results: list[list[GeneratedImage]] = []
        failed: set[int] = set()
        for k, (request, source) in enumerate(zip(requests, sources, strict=True)):

            def step_of_k(step: int, total: int, preview: PreviewFn, k: int = k) -> bool:
                def preview_k(i: int) -> bytes:
                    if i != k:
                        raise NoPreview(f"request {i} is not running")
                    return preview(0)

                return on_step(step, total, preview_k)

            try:
                results += self.run_batch([request], [source], step_of_k, pictures)
            except NonFiniteOutput as exc:
                failed.add(k)
                results += exc.results
        if failed:
            raise NonFiniteOutput(frozenset(failed), results)
        return results

    def edit_pipelines(self) -> EditPipelines:
        """Image-to-image and inpainting over the loaded weights (`from_pipe`), made on first use."""
        if self._edits is None:
            self._edits = EditPipelines.from_text2img(
                self.model.text2img, self.model.img2img, fills=self._inpainting_model
            )
        return self._edits

    def _canvases(
        self, requests: Sequence[GenerationRequest], sources: Sequence[bytes | None]
    ) -> list[Canvas] | None:
        """One canvas per image for an edit batch, or for any batch on an inpainting model
        (text-to-image: a blank canvas redrawn whole; from a picture: the picture, redrawn whole);
        None where the plain pipelines run."""
        first = requests[0]
        if first.mode is not Mode.EDIT and not self._inpainting_model:
            return None
        cap = SizeCap.for_profile(self.profile)
        canvases = []
        for request, source in zip(requests, sources, strict=True):
            size = (request.width, request.height)
            if request.edit is not None:
                assert source is not None  # _check_batch
                canvas = prepare_canvas(request.edit, decode_image(source), cap, seed=request.seeds[0])
            elif source is not None:
                canvas = Canvas(_source_for(source, request), None, None)
            else:
                canvas = Canvas(Image.new("RGB", size, (127, 127, 127)), None, None)
            if canvas.size != size:
                raise ValueError(f"a canvas of {canvas.size} for a request of {size}")
            canvases.extend([canvas] * request.count)
        return canvases

    def _step_callback(
        self, on_step: StepCallback, first_index: list[int], size: tuple[int, int]
    ) -> Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]:
        family = self.family

        def callback(pipe: Any, step_index: int, _timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            latents = tensors["latents"]

            def preview(i: int) -> bytes:
                width, height = size
                one = family.unpack(pipe, latents[first_index[i] : first_index[i] + 1], width, height)[0]
                return preview_png(one.detach().float().cpu().numpy(), family.preview)

            fn: PreviewFn = preview
            if not on_step(step_index + 1, total_steps(pipe), fn):
                raise BatchInterrupted(f"stopped after step {step_index + 1}")
            return tensors

        return callback

    def _check_batch(self, requests: Sequence[GenerationRequest], sources: Sequence[bytes | None]) -> None:
        if not requests:
            raise ValueError("run_batch needs at least one request")
        if len(sources) != len(requests):
            raise ValueError(f"{len(sources)} sources for {len(requests)} requests")
        key = requests[0].batch_key()
        if any(r.batch_key() != key for r in requests):
            raise ValueError("requests in one batch must have equal batch_key()")
        if requests[0].mode is not Mode.TXT2IMG and any(s is None for s in sources):
            raise ValueError(f"{requests[0].mode.value} needs a source image for every request")

    def _release_memory(self) -> None:
        if self.model.device.startswith("cuda"):
            torch.cuda.empty_cache()
        elif self.model.device == "mps":
            torch.mps.empty_cache()


def warm_up_shapes(profile: ModelProfile) -> list[tuple[int, int, int]]:
    """(images, width, height) to warm a compiled UNet up with: two batch sizes, then two other
    aspects. torch.compile first specialises on the shapes it sees; a dimension seen with a second
    value is recompiled as dynamic, so after these four runs one graph serves every batch size and
    aspect (CUDA graphs are still recorded once per new shape, which takes milliseconds, not a compile)."""
    native = profile.native_size
    unit = size_unit(native)
    landscape = snap_size(4 / 3, float(native * native), unit)
    portrait = snap_size(2 / 3, float(native * native), unit)
    return [(1, native, native), (2, native, native), (1, *landscape), (2, *portrait)]


_encode_pool: ThreadPoolExecutor | None = None
_encode_pool_lock = threading.Lock()


def _encoder_pool() -> ThreadPoolExecutor:
    """The process-wide PNG encoding pool, made on first use (shared by every engine)."""
    global _encode_pool
    with _encode_pool_lock:
        if _encode_pool is None:
            _encode_pool = ThreadPoolExecutor(ENCODE_WORKERS, thread_name_prefix="png-encode")
        return _encode_pool


def encode_images(
    images: Sequence[Image.Image],
    owners: Sequence[tuple[GenerationRequest, int]],
    *,
    sampler: str,
    model_hash: str | None = None,
) -> list[bytes]:
    """`encode_png(images[i], *owners[i])` for every i, in order: the same bytes as encoding them one
    after the other, but two or more images are encoded in parallel on the shared pool."""
    if len(images) != len(owners):
        raise ValueError(f"{len(owners)} owners for {len(images)} images")
    if len(images) < 2 or ENCODE_WORKERS < 2:
        pairs = zip(images, owners, strict=True)
        return [
            encode_png(image, request, seed, sampler=sampler, model_hash=model_hash)
            for image, (request, seed) in pairs
        ]

    def encode(i: int) -> bytes:
        request, seed = owners[i]
        return encode_png(images[i], request, seed, sampler=sampler, model_hash=model_hash)

    return list(_encoder_pool().map(encode, range(len(images))))


def total_steps(pipe: Any) -> int:
    """The steps of the call in progress (`num_timesteps`; older pipelines: the scheduler's)."""
    total = getattr(pipe, "_num_timesteps", None)
    return int(total) if total else len(pipe.scheduler.timesteps)


def finite_images(pixels: Any) -> list[bool]:
    """Per image of a (images, height, width, channels) float batch: are all its values finite?"""
    return [bool(ok) for ok in np.isfinite(pixels).reshape(len(pixels), -1).all(axis=1)]


def _requests_of(requests: Sequence[GenerationRequest], images: Sequence[int]) -> frozenset[int]:
    """The indices of the requests that own the flat batch's `images`."""
    owner = [i for i, request in enumerate(requests) for _ in request.seeds]
    return frozenset(owner[image] for image in images)


def _first_image_indices(requests: Sequence[GenerationRequest]) -> list[int]:
    """Index in the flat image batch of each request's first image."""
    indices, position = [], 0
    for request in requests:
        indices.append(position)
        position += request.count
    return indices


def _strength(request: GenerationRequest) -> float:
    if request.strength is not None:
        return request.strength
    defaults = {Mode.VARIATION: VARIATION_STRENGTH, Mode.UPSCALE: UPSCALE_STRENGTH}
    return defaults.get(request.mode, IMG2IMG_DEFAULT_STRENGTH)


def _source_for(source: bytes | None, request: GenerationRequest) -> Image.Image:
    """A stored source picture, upright and flattened (`load_source`), fit to the request's size
    (`fit_source`: centre crop to the aspect, then resize)."""
    if source is None:
        raise ValueError(f"{request.mode.value} needs a source image")
    return fit_source(load_source(source), request.width, request.height)
