"""Plain records of the loopback Discord world: users, guilds, messages, interactions, faults."""

from __future__ import annotations

import asyncio
import datetime as dt
import fnmatch
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [  # what `testkit.discord_loopback` exports from here
    "ADMINISTRATOR",
    "EPHEMERAL",
    "LOADING",
    "MANAGE_GUILD",
    "Attachment",
    "CallbackAttempt",
    "Channel",
    "CommandNotPermitted",
    "Fault",
    "Guild",
    "InteractionRecord",
    "LoopbackError",
    "Member",
    "Message",
    "MessageEdit",
    "RequestLog",
    "Role",
    "Stall",
    "Upload",
    "User",
]

JSON = dict[str, Any]

DISCORD_EPOCH_MS = 1_420_070_400_000
EPHEMERAL = 1 << 6
LOADING = 1 << 7
ADMINISTRATOR = 0x8
MANAGE_GUILD = 0x20
DEFAULT_PERMISSIONS = 0x0000_0006_37D0_6E41  # @everyone's default-ish set (send, embed, attach, react, ...)
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024
INTERACTION_ACK_WINDOW_S = 3.0
INTERACTION_TOKEN_TTL_S = 15 * 60.0

_counter = itertools.count(1)


def snowflake() -> int:
    """A fresh, unique, time-ordered Discord snowflake."""
    ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
    return (ms << 22) | (next(_counter) & 0x3FFFFF)


def iso(ts: dt.datetime) -> str:
    return ts.isoformat()


class LoopbackError(Exception):
    """Raised by the driver when a test asks for something Discord would refuse or never do."""


class CommandNotPermitted(LoopbackError):
    """The member lacks the command's default_member_permissions, so Discord would not show it."""


@dataclass
class User:
    id: int
    username: str
    bot: bool = False

    def payload(self) -> JSON:
        return {
            "id": str(self.id),
            "username": self.username,
            "global_name": self.username,
            "discriminator": "0",
            "avatar": None,
            "bot": self.bot,
            "public_flags": 0,
        }

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"


@dataclass
class Role:
    id: int
    name: str
    permissions: int = 0
    position: int = 0

    def payload(self) -> JSON:
        return {
            "id": str(self.id),
            "name": self.name,
            "permissions": str(self.permissions),
            "position": self.position,
            "color": 0,
            "hoist": False,
            "managed": False,
            "mentionable": True,
            "flags": 0,
            "icon": None,
            "unicode_emoji": None,
        }


@dataclass
class Channel:
    id: int
    name: str
    guild_id: int | None
    nsfw: bool = False
    position: int = 0
    type: int = 0  # 0 text, 1 DM

    def payload(self) -> JSON:
        data: JSON = {"id": str(self.id), "type": self.type, "name": self.name, "nsfw": self.nsfw}
        if self.guild_id is not None:
            data.update(
                guild_id=str(self.guild_id),
                position=self.position,
                permission_overwrites=[],
                parent_id=None,
                topic=None,
                rate_limit_per_user=0,
                last_message_id=None,
                flags=0,
            )
        return data


@dataclass
class Member:
    user: User
    guild_id: int
    roles: list[Role] = field(default_factory=list)
    permissions: int | None = None  # explicit override; None = computed from @everyone + roles
    joined_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    @property
    def id(self) -> int:
        return self.user.id

    def payload(self, permissions: int | None = None) -> JSON:
        data: JSON = {
            "user": self.user.payload(),
            "roles": [str(r.id) for r in self.roles],
            "joined_at": iso(self.joined_at),
            "deaf": False,
            "mute": False,
            "flags": 0,
            "nick": None,
            "avatar": None,
            "premium_since": None,
            "pending": False,
            "communication_disabled_until": None,
        }
        if permissions is not None:
            data["permissions"] = str(permissions)
        return data


@dataclass
class Guild:
    id: int
    name: str
    owner_id: int
    everyone: Role
    upload_limit: int = DEFAULT_UPLOAD_LIMIT
    roles: dict[int, Role] = field(default_factory=dict)
    channels: dict[int, Channel] = field(default_factory=dict)
    members: dict[int, Member] = field(default_factory=dict)

    def permissions_of(self, member: Member) -> int:
        """What Discord would put in an interaction's member.permissions (no channel overwrites)."""
        if member.permissions is not None:
            return member.permissions
        if member.id == self.owner_id:
            return (1 << 53) - 1
        perms = self.everyone.permissions
        for role in member.roles:
            perms |= role.permissions
        return (1 << 53) - 1 if perms & ADMINISTRATOR else perms

    def payload(self) -> JSON:
        return {
            "id": str(self.id),
            "name": self.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(self.owner_id),
            "region": "us-east",
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "features": [],
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "vanity_url_code": None,
            "application_id": None,
            "max_members": 500000,
            "roles": [r.payload() for r in [self.everyone, *self.roles.values()]],
            "emojis": [],
            "stickers": [],
            "channels": [c.payload() for c in self.channels.values()],
            "members": [m.payload() for m in self.members.values()],
            "member_count": len(self.members),
            "threads": [],
            "presences": [],
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "large": False,
            "unavailable": False,
            "joined_at": iso(dt.datetime.now(dt.UTC)),
            "premium_progress_bar_enabled": False,
        }


@dataclass
class Attachment:
    """A stored file: what the bot uploaded or a member attached to an interaction."""

    id: int
    filename: str
    data: bytes
    url: str
    content_type: str | None = None
    description: str | None = None
    width: int | None = None
    height: int | None = None

    @property
    def size(self) -> int:
        return len(self.data)

    def payload(self) -> JSON:
        data: JSON = {
            "id": str(self.id),
            "filename": self.filename,
            "size": self.size,
            "url": self.url,
            "proxy_url": self.url,
        }
        if self.content_type:
            data["content_type"] = self.content_type
        if self.description:
            data["description"] = self.description
        if self.width is not None and self.height is not None:
            data.update(width=self.width, height=self.height)
        return data


@dataclass
class Upload:
    """A file a member attaches to a slash command option (type 11) in `invoke(attachments=...)`."""

    filename: str
    data: bytes
    content_type: str | None = None


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
