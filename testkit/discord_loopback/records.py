"""Records of what happened on the loopback: messages and their edits, interactions, callbacks,
planned faults and stalls, and the request log."""

from __future__ import annotations

import asyncio
import datetime as dt
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .models import EPHEMERAL, JSON, LOADING, Attachment, User, iso

__all__ = [
    "CallbackAttempt",
    "Fault",
    "InteractionRecord",
    "Message",
    "MessageEdit",
    "RequestLog",
    "Stall",
]


@dataclass
class MessageEdit:
    """One step in a message's life: 'create', 'edit' or 'delete', at the server's clock."""

    kind: str
    at: float
    content: str
    attachments: list[str]
    embeds: list[JSON]
    components: list[JSON]
    flags: int


@dataclass
class Message:
    """A message as the server keeps it (the bot's, a member's, or an interaction's response)."""

    id: int
    channel_id: int
    guild_id: int | None
    author: User
    content: str = ""
    embeds: list[JSON] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    components: list[JSON] = field(default_factory=list)
    flags: int = 0
    type: int = 0
    timestamp: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    edited_timestamp: dt.datetime | None = None
    webhook_id: int | None = None
    interaction_id: int | None = None
    mentions: list[User] = field(default_factory=list)
    reactions: dict[str, set[int]] = field(default_factory=dict)
    deleted: bool = False
    history: list[MessageEdit] = field(default_factory=list)
    nonce: str | None = None
    created_at: float = 0.0  # on the server clock

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    @property
    def loading(self) -> bool:
        return bool(self.flags & LOADING)

    @property
    def custom_ids(self) -> list[str]:
        """Every component custom_id on the message, in order (rows flattened)."""
        out: list[str] = []

        def walk(items: list[JSON]) -> None:
            for c in items:
                if "custom_id" in c:
                    out.append(str(c["custom_id"]))
                walk(c.get("components") or [])

        walk(self.components)
        return out

    def snapshot(self, kind: str, at: float) -> MessageEdit:
        return MessageEdit(
            kind=kind,
            at=at,
            content=self.content,
            attachments=[a.filename for a in self.attachments],
            embeds=list(self.embeds),
            components=list(self.components),
            flags=self.flags,
        )

    def payload(self) -> JSON:
        data: JSON = {
            "id": str(self.id),
            "channel_id": str(self.channel_id),
            "author": self.author.payload(),
            "content": self.content,
            "timestamp": iso(self.timestamp),
            "edited_timestamp": iso(self.edited_timestamp) if self.edited_timestamp else None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [u.payload() for u in self.mentions],
            "mention_roles": [],
            "attachments": [a.payload() for a in self.attachments],
            "embeds": self.embeds,
            "components": self.components,
            "reactions": [
                {"emoji": {"id": None, "name": e}, "count": len(us), "me": False, "burst_count": 0}
                for e, us in self.reactions.items()
                if us
            ],
            "pinned": False,
            "type": self.type,
            "flags": self.flags,
        }
        if self.guild_id is not None:
            data["guild_id"] = str(self.guild_id)
        if self.webhook_id is not None:
            data["webhook_id"] = str(self.webhook_id)
            data["application_id"] = str(self.webhook_id)
        if self.nonce is not None:
            data["nonce"] = self.nonce
        return data


@dataclass
class CallbackAttempt:
    """One POST to /interactions/{id}/{token}/callback, accepted or not."""

    type: int
    at: float
    status: int
    code: int | None = None


@dataclass
class InteractionRecord:
    """What happened to one interaction the driver dispatched. Read it after awaiting `wait_final`."""

    id: int
    token: str
    type: int
    payload: JSON
    guild_id: int | None
    channel_id: int
    user: User
    attachment_size_limit: int
    server: Any  # the DiscordLoopback (kept untyped to avoid an import cycle)
    name: str | None = None
    custom_id: str | None = None
    dispatched_at: float = 0.0
    acked_at: float | None = None
    callback_type: int | None = None
    attempts: list[CallbackAttempt] = field(default_factory=list)
    original_id: int | None = None
    followup_ids: list[int] = field(default_factory=list)
    modal: JSON | None = None
    autocomplete_choices: list[JSON] | None = None
    expired: bool = False
    events: list[tuple[str, int, float]] = field(default_factory=list)  # (kind, message_id, at)

    @property
    def ack_latency(self) -> float | None:
        """Seconds (server clock) from dispatch to the accepted callback; None if never acknowledged."""
        return None if self.acked_at is None else self.acked_at - self.dispatched_at

    @property
    def acknowledged(self) -> bool:
        return self.callback_type is not None

    @property
    def responses_count(self) -> int:
        """Accepted callbacks (Discord allows exactly one)."""
        return sum(1 for a in self.attempts if a.status < 300)

    @property
    def rejected_callbacks(self) -> list[CallbackAttempt]:
        return [a for a in self.attempts if a.status >= 300]

    @property
    def original(self) -> Message | None:
        """The current @original message (None before an acknowledgement that creates one)."""
        if self.original_id is None:
            return None
        msg: Message | None = self.server.messages.get(self.original_id)
        return msg

    @property
    def followups(self) -> list[Message]:
        return [self.server.messages[i] for i in self.followup_ids]

    @property
    def messages(self) -> list[Message]:
        """@original (if any) then the followups."""
        orig = self.original
        return ([orig] if orig is not None else []) + self.followups

    @property
    def ephemeral_messages(self) -> list[Message]:
        return [m for m in self.messages if m.ephemeral]

    @property
    def history(self) -> list[MessageEdit]:
        """Every create/edit/delete of @original and the followups, in order, with server-clock times."""
        out = [h for m in self.messages for h in m.history]
        return sorted(out, key=lambda h: h.at)

    @property
    def original_history(self) -> list[MessageEdit]:
        orig = self.original
        return [] if orig is None else list(orig.history)

    async def wait_final(
        self,
        predicate: Callable[[InteractionRecord], bool] | None = None,
        timeout: float = 10.0,  # noqa: ASYNC109
    ) -> InteractionRecord:
        """Wait until `predicate(self)` holds.

        By default: until acknowledged with an @original that is no longer loading.
        """

        def default(rec: InteractionRecord) -> bool:
            orig = rec.original
            return rec.acknowledged and orig is not None and not orig.loading

        pred = predicate or default
        await self.server.wait_for(lambda: pred(self), timeout=timeout)
        return self

    async def wait_acked(self, timeout: float = 10.0) -> InteractionRecord:  # noqa: ASYNC109
        """Wait until any callback attempt (accepted or rejected) arrived."""
        await self.server.wait_for(lambda: bool(self.attempts), timeout=timeout)
        return self


@dataclass
class Fault:
    """A planned failure for requests whose 'METHOD /path' matches `pattern` (fnmatch)."""

    pattern: str
    status: int
    count: int
    retry_after: float = 0.05
    is_global: bool = False
    code: int = 0  # Discord's error code in the body of a non-429 answer
    hits: list[str] = field(default_factory=list)

    def matches(self, method: str, path: str) -> bool:
        return _route_matches(self.pattern, method, path) and len(self.hits) < self.count


@dataclass
class Stall:
    """Requests matching `pattern` hang until `release()`; `await stalled.wait()` sees them arrive.
    With `after_handling` the request is carried out first and only its response hangs (the client
    cannot tell whether it happened)."""

    pattern: str
    count: int
    after_handling: bool = False
    hits: list[str] = field(default_factory=list)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    stalled: asyncio.Event = field(default_factory=asyncio.Event)

    def matches(self, method: str, path: str) -> bool:
        return _route_matches(self.pattern, method, path) and len(self.hits) < self.count

    def release(self) -> None:
        self.released.set()


@dataclass
class RequestLog:
    method: str
    path: str
    status: int
    at: float


def _route_matches(pattern: str, method: str, path: str) -> bool:
    """'POST /webhooks/*' matches method and path; '/webhooks/*' (no method) any method."""
    if pattern.startswith("/"):
        return fnmatch.fnmatchcase(path, pattern)
    return fnmatch.fnmatchcase(f"{method} {path}", pattern)
