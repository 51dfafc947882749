"""The small interface between the bot and whatever runs generations.

`bot/` talks only to `GenerationBackend`. The local backend (`generation.backends.local.GenerationService`)
runs a worker thread in this process; a cluster backend can replace it without touching `bot/`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from generation.prompts.request import GenerationRequest, ModelProfile


class GenerationError(Exception):
    """Base of every error a job can end with; `str()` is safe to show to its owner."""


class JobFailed(GenerationError):
    """The pipeline raised, ran out of memory after retries, or passed the per-job time limit."""


SOURCE_GONE = "the source image is no longer available"
REFERENCE_GONE = "a reference picture is no longer available"


class JobCancelled(GenerationError):
    """The job was cancelled before it produced its images."""


@dataclass(frozen=True)
class Queued:
    """The job waits; `position` is 1 for 'next to run'."""

    position: int


@dataclass(frozen=True)
class Started:
    """The job's batch began running."""


@dataclass(frozen=True)
class Progress:
    """Step `step` of `total` finished; `preview_png` is a small cheap preview (or None)."""

    step: int
    total: int
    preview_png: bytes | None


JobEvent = Queued | Started | Progress


@dataclass(frozen=True)
class GeneratedImage:
    """One finished image: PNG bytes with a `parameters` text chunk, its seed, its safety flag; or,
    with `media` "mp4", a clip (Animate) whose `comment` carries the parameters."""

    png: bytes
    seed: int
    width: int
    height: int
    nsfw: bool = False
    media: str = "png"  # the file's kind and extension: png, or mp4 for a clip


@dataclass(frozen=True)
class GenerationResult:
    """All images of one job, in seed order."""

    job_id: str
    images: tuple[GeneratedImage, ...]


class JobHandle(Protocol):
    """A submitted job."""

    job_id: str

    def events(self) -> AsyncIterator[JobEvent]:
        """Progress events until the job ends (then the iterator stops)."""
        ...

    async def result(self) -> GenerationResult:
        """The images; raises `JobFailed` or `JobCancelled`."""
        ...


class TokenCounter(Protocol):
    """Counts a prompt's tokens for one model (picklable: it crosses to Ray's driver)."""

    def count_tokens(self, text: str) -> int:
        """Tokens of `text`, begin/end included."""
        ...


@dataclass(frozen=True)
class TokenizerCounter:
    """A `TokenCounter` over a Hugging Face tokenizer (a copy: the engine's own keeps call state)."""

    tokenizer: Any

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` as the tokenizer counts them, begin/end included."""
        return len(self.tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"])


class ModelEntry(NamedTuple):
    """One model an engine runs: its profile (named as requests name it) and its token counter."""

    profile: ModelProfile
    counter: TokenCounter


class GenerationBackend(Protocol):
    """What the bot needs from a generation engine."""

    profile: ModelProfile

    @property
    def catalog(self) -> Mapping[str, ModelEntry]:
        """Every model it runs by name, with its profile and token counter (set by `start`)."""
        ...

    async def start(self) -> None:
        """Load the model (off the event loop) and start working."""
        ...

    async def close(self) -> None:
        """Stop: cancel what is queued, finish nothing more, release the model."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens the model's tokenizer makes of `text`, begin/end tokens included."""
        ...

    def submit(self, job_id: str, owner: str, request: GenerationRequest) -> JobHandle:
        """Queue a job; `owner` is the fairness key (round-robin across owners)."""
        ...

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued job (leaves the queue) or a running one (stops at its next step)."""
        ...

    def queue_snapshot(self) -> list[tuple[str, str]]:
        """(job_id, owner) of running jobs first, then waiting ones in the order they will run."""
        ...
