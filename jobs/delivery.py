"""The delivery interface: what the runner needs of whatever posts about a job (`bot.delivery`'s
`DiscordOutbox` on discord.py; tests use fakes), the post it hands over, and the errors it understands."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import NamedTuple, Protocol

from generation.families.features import Features
from storage.interface import JobRecord

DEFAULT_UPLOAD_LIMIT = 8 * 1024 * 1024  # Discord's smallest per-file limit; interactions say the real one
TOKEN_LIFETIME_S = 15 * 60.0
TOKEN_MARGIN_S = 60.0


def token_expiry(created_at: float) -> float:
    """When to stop using an interaction token made at `created_at` (15 min minus a margin)."""
    return created_at + TOKEN_LIFETIME_S - TOKEN_MARGIN_S


class SecondModel(StrEnum):
    """A model besides the image models whose buttons a one-image result carries, where it is set."""

    ANIMATE = "animate"  # VIDEO_MODEL: Animate (Low motion), Animate (High motion)
    EDIT = "edit"  # EDIT_MODEL: Edit (in words)


@dataclass(frozen=True)
class ResultPost:
    """A finished job's message: text, the image file(s), and buttons for `image_count` images."""

    job_id: str
    content: str
    files: tuple[OutFile, ...]
    image_count: int
    features: Features = field(default_factory=Features)  # what its model can do next (the buttons)
    second_models: frozenset[SecondModel] = frozenset()  # whose buttons it carries (a one-image result)
    video: bool = False  # the file is a clip (MP4): Extend, 📋 and 🗑️


class OutFile(NamedTuple):
    """An attachment to upload: its name and bytes."""

    filename: str
    data: bytes


class TransientDeliveryError(Exception):
    """Discord answered 429/5xx or the network failed: worth trying again later."""


class TokenGone(Exception):
    """The interaction token no longer works (expired or unknown): post to the channel instead."""


class PermanentDeliveryError(Exception):
    """Discord refused the post for good (a missing permission, a deleted channel or message, an
    archived or locked thread, a file too large): the job fails at once and is never retried.
    `str()` says why, in words for the job's owner."""


class Outbox(Protocol):
    """Where messages about a job go. `via_token` means: through the job's interaction (editing its
    original response, or an ephemeral followup); otherwise a channel message mentioning the owner."""

    async def show_progress(self, job: JobRecord, text: str, preview_png: bytes | None) -> None:
        """Edit the original response to show progress (only called while the token is valid)."""
        ...

    async def post_result(self, job: JobRecord, post: ResultPost, *, via_token: bool) -> tuple[int, int]:
        """Post the result; returns (message_id, channel_id). Raises TransientDeliveryError, TokenGone
        or PermanentDeliveryError."""
        ...

    async def tell_owner(self, job: JobRecord, text: str, *, via_token: bool, private: bool) -> None:
        """Tell the owner something (failure, cancel, flagged images). `private` asks for an
        ephemeral message where there is an interaction (the original response is then removed)."""
        ...

    async def direct_message(self, job: JobRecord, text: str) -> bool:
        """Tell the owner in a direct message; False if they cannot be reached (DMs closed)."""
        ...

    async def channel_is_nsfw(self, channel_id: int) -> bool:
        """True if the channel is age-restricted (unknown channels count as not)."""
        ...

    def upload_limit(self, guild_id: int) -> int:
        """Per-file upload limit of a guild when no interaction said it."""
        ...


class ResultImages(Protocol):
    """What the runner needs of `generation.media.image_store.ImageStore`."""

    def save_result(self, job_id: str, index: int, png: bytes, ext: str = "png") -> Path: ...
