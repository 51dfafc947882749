# mypy: disable-error-code="no-untyped-call"
"""`/describe`: prompts that could have made a picture, from a transformers image-to-text model.

`DESCRIBE_MODEL` names a captioning model (a BLIP or GIT checkpoint: a hub id or a local folder) loaded
with `AutoProcessor` and `AutoModelForImageTextToText.from_pretrained`, or `tiny` (built locally from
small configs, for tests). It is loaded on first use, on a thread of its own, never on the event
loop; later calls reuse it. Prompts are sampled, so a picture's four prompts differ.
"""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from generation.pipelines.source import default_cache_dir
from generation.pipelines.tiny import TINY_MODEL_ID
from generation.pipelines.tiny_describe import ensure_tiny_describer

log = logging.getLogger(__name__)

PROMPTS = 4
MAX_PROMPT_CHARS = 300
_SAMPLE_ROUNDS = 3  # rounds of sampling before settling for fewer distinct prompts


@dataclass(frozen=True)
class DescribeSettings:
    """Which captioning model, on which device, cached where."""

    model_id: str
    device: str = "cpu"
    cache_dir: Path | None = None
    max_new_tokens: int = 40


def distinct_prompts(
    candidates: Sequence[str], allowed: Callable[[str], bool], limit: int = PROMPTS
) -> list[str]:
    """Up to `limit` different, non-empty prompts of `candidates` that `allowed` accepts, in order
    (whitespace folded, cut to `MAX_PROMPT_CHARS`; case-insensitive duplicates dropped)."""
    seen: set[str] = set()
    kept: list[str] = []
    for text in candidates:
        prompt = " ".join(text.split())[:MAX_PROMPT_CHARS].strip()
        key = prompt.casefold()
        if not prompt or key in seen or not allowed(prompt):
            continue
        seen.add(key)
        kept.append(prompt)
        if len(kept) == limit:
            break
    return kept


class Describer:
    """Sampled captions of a picture. One worker thread owns the model (loaded on the first call)."""

    def __init__(self, settings: DescribeSettings) -> None:
        self.settings = settings
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="describe")
        self._model: Any = None
        self._processor: Any = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        """True once the model is in memory."""
        return self._model is not None

    async def describe(self, image_png: bytes, allowed: Callable[[str], bool]) -> list[str]:
        """Up to `PROMPTS` different prompts for the picture that `allowed` accepts (at least one
        unless every sample was refused)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._describe, image_png, allowed)

    def close(self) -> None:
        """Stop the worker thread (the model is dropped with the object)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _load(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            source = self.settings.model_id
            if source == TINY_MODEL_ID:
                source = str(ensure_tiny_describer(self._cache()))
            log.info("loading the describe model %s on %s", self.settings.model_id, self.settings.device)
            dtype = torch.float16 if self.settings.device.startswith("cuda") else torch.float32
            kwargs: dict[str, Any] = {"cache_dir": self.settings.cache_dir} if self.settings.cache_dir else {}
            self._processor = AutoProcessor.from_pretrained(source, **kwargs)
            auto: Any = AutoModelForImageTextToText  # its stubs type from_pretrained loosely
            model = auto.from_pretrained(source, dtype=dtype, **kwargs)
            self._model = model.to(self.settings.device).eval()

    def _cache(self) -> Path:
        return self.settings.cache_dir or default_cache_dir()

    def _describe(self, image_png: bytes, allowed: Callable[[str], bool]) -> list[str]:
        self._load()
        with Image.open(io.BytesIO(image_png)) as opened:
            image = opened.convert("RGB")
        inputs = self._processor(images=image, return_tensors="pt").to(
            self.settings.device, self._model.dtype
        )
        prompts: list[str] = []
        for _ in range(_SAMPLE_ROUNDS):
            with torch.inference_mode():
                tokens = self._model.generate(
                    **inputs,
                    do_sample=True,
                    top_p=0.9,
                    num_return_sequences=2 * PROMPTS,
                    max_new_tokens=self.settings.max_new_tokens,
                )
            texts = self._processor.batch_decode(tokens, skip_special_tokens=True)
            prompts = distinct_prompts([*prompts, *texts], allowed)
            if len(prompts) == PROMPTS:
                break
        return prompts
