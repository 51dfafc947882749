"""The loopback Discord world: users, roles, channels and threads, members, guilds, files."""

from __future__ import annotations

import datetime as dt
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from .permissions import ADMINISTRATOR, ALL_PERMISSIONS, MANAGE_GUILD

__all__ = [  # what `testkit.discord_loopback` exports from here
    "ADMINISTRATOR",
    "EPHEMERAL",
    "LOADING",
    "MANAGE_GUILD",
    "TIER_UPLOAD_LIMITS",
    "Attachment",
    "Channel",
    "CommandNotPermitted",
    "Guild",
    "LoopbackError",
    "Member",
    "Role",
    "Upload",
    "User",
]

JSON = dict[str, Any]

DISCORD_EPOCH_MS = 1_420_070_400_000
EPHEMERAL = 1 << 6
LOADING = 1 << 7
DEFAULT_PERMISSIONS = 0x0000_0006_37D0_6E41  # @everyone's default-ish set (send, embed, attach, react, ...)
MIB = 1024 * 1024
TIER_UPLOAD_LIMITS = {0: 10 * MIB, 1: 10 * MIB, 2: 50 * MIB, 3: 100 * MIB}
DEFAULT_UPLOAD_LIMIT = TIER_UPLOAD_LIMITS[0]
INTERACTION_ACK_WINDOW_S = 3.0
INTERACTION_TOKEN_TTL_S = 15 * 60.0
TEXT_CHANNEL, DM_CHANNEL, PUBLIC_THREAD = 0, 1, 11

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
    dms_open: bool = True  # False: DMs from the bot get 403 50007

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
    """A text channel (type 0), a DM (1) or a public thread (11, with `parent_id`)."""

    id: int
    name: str
    guild_id: int | None
    nsfw: bool = False
    position: int = 0
    type: int = TEXT_CHANNEL
    bot_permissions: int = ALL_PERMISSIONS  # what the bot may do here (interactions' app_permissions)
    parent_id: int | None = None
    archived: bool = False
    locked: bool = False
    recipient_id: int | None = None  # a DM's member

    @property
    def is_thread(self) -> bool:
        return self.type == PUBLIC_THREAD

    def payload(self) -> JSON:
        data: JSON = {"id": str(self.id), "type": self.type, "name": self.name, "nsfw": self.nsfw}
        if self.guild_id is not None:
            data.update(
                guild_id=str(self.guild_id),
                position=self.position,
                permission_overwrites=[],
                parent_id=None if self.parent_id is None else str(self.parent_id),
                topic=None,
                rate_limit_per_user=0,
                last_message_id=None,
                flags=0,
            )
        if self.is_thread:
            data.update(
                owner_id=str(self.guild_id),
                message_count=0,
                member_count=1,
                thread_metadata={
                    "archived": self.archived,
                    "locked": self.locked,
                    "auto_archive_duration": 1440,
                    "archive_timestamp": iso(dt.datetime.now(dt.UTC)),
                },
            )
            for key in ("permission_overwrites", "position", "topic"):
                data.pop(key, None)
        return data


@dataclass
class Member:
    user: User
    guild_id: int
    roles: list[Role] = field(default_factory=list)
    permissions: int | None = None  # explicit override; None = computed from @everyone + roles
    upload_limit: int | None = None  # the member's own (Nitro) limit; interactions say the larger
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
    premium_tier: int = 0  # boost tier: 10 MiB uploads at tiers 0-1, 50 MiB at 2, 100 MiB at 3
    roles: dict[int, Role] = field(default_factory=dict)
    channels: dict[int, Channel] = field(default_factory=dict)
    members: dict[int, Member] = field(default_factory=dict)

    @property
    def upload_limit(self) -> int:
        """The guild's per-file upload limit, from its boost tier."""
        return TIER_UPLOAD_LIMITS[self.premium_tier]

    def permissions_of(self, member: Member) -> int:
        """What Discord would put in an interaction's member.permissions (no channel overwrites)."""
        if member.permissions is not None:
            return member.permissions
        if member.id == self.owner_id:
            return ALL_PERMISSIONS
        perms = self.everyone.permissions
        for role in member.roles:
            perms |= role.permissions
        return ALL_PERMISSIONS if perms & ADMINISTRATOR else perms

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
            "premium_tier": self.premium_tier,
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
            "channels": [c.payload() for c in self.channels.values() if not c.is_thread],
            "members": [m.payload() for m in self.members.values()],
            "member_count": len(self.members),
            "threads": [c.payload() for c in self.channels.values() if c.is_thread],
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
