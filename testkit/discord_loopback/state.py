"""The loopback's state: the world, what the bot did, the clock, waiting on changes, the gateway
dispatches the bot's intents ask for, and the bookkeeping of messages and reactions."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from .gateway_session import GatewayConnection, GatewaySession
from .models import (
    DEFAULT_UPLOAD_LIMIT,
    DM_CHANNEL,
    JSON,
    Attachment,
    Channel,
    Guild,
    LoopbackError,
    User,
    snowflake,
)
from .records import Fault, InteractionRecord, Message, RequestLog, Stall
from .spec import SpecValidator, SpecViolation

GUILDS, GUILD_MEMBERS = 1 << 0, 1 << 1
GUILD_MESSAGES, GUILD_MESSAGE_REACTIONS = 1 << 9, 1 << 10
DIRECT_MESSAGES, DIRECT_MESSAGE_REACTIONS = 1 << 12, 1 << 13
_GUILD_EVENTS = ("GUILD_", "CHANNEL_", "THREAD_")


def intent_for(event: str, data: JSON) -> int | None:
    """The gateway intent Discord requires for `event` (None: sent whatever the intents)."""
    in_guild = "guild_id" in data
    if event.startswith("MESSAGE_REACTION_"):
        return GUILD_MESSAGE_REACTIONS if in_guild else DIRECT_MESSAGE_REACTIONS
    if event.startswith("MESSAGE_"):
        return GUILD_MESSAGES if in_guild else DIRECT_MESSAGES
    if event.startswith("GUILD_MEMBER_"):
        return GUILD_MEMBERS
    if event.startswith(_GUILD_EVENTS):
        return GUILDS
    return None


class LoopbackState:
    """Everything the server knows; `DiscordLoopback` adds the server and the driver around it."""

    def __init__(self, *, token: str, bot_name: str) -> None:
        self.token = token
        self.application_id = snowflake()
        self.bot_user = User(self.application_id, bot_name, bot=True)
        self.owner_user = User(snowflake(), "owner")
        self.users: dict[int, User] = {self.bot_user.id: self.bot_user, self.owner_user.id: self.owner_user}
        self.guilds: dict[int, Guild] = {}
        self.channels: dict[int, Channel] = {}
        self.messages: dict[int, Message] = {}
        self.channel_log: dict[int, list[int]] = {}
        self.attachments: dict[int, Attachment] = {}
        self.commands: dict[int | None, list[JSON]] = {}
        self.command_syncs: list[tuple[int | None, list[JSON]]] = []
        self.command_fetches: list[int | None] = []  # GETs of the command list (guild id or None)
        self.interactions: dict[int, InteractionRecord] = {}
        self.interactions_by_token: dict[str, InteractionRecord] = {}
        self.ack_latencies: list[float] = []
        self.identifies: list[JSON] = []
        self.resumes: list[JSON] = []
        self.heartbeats = 0
        self.gateway_connects = 0
        self.gateway_queries: list[dict[str, str]] = []
        self.ready_sent = False
        self.session: GatewaySession | None = None
        self.faults: list[Fault] = []
        self.stalls: list[Stall] = []
        self.requests: list[RequestLog] = []
        self.unhandled: list[str] = []
        self.spec = SpecValidator.default()  # what every request under /api/v10 is checked against
        self.spec_violations: list[SpecViolation] = []
        self.dropped_events: list[str] = []  # dispatches the bot's intents did not ask for
        self.default_upload_limit = DEFAULT_UPLOAD_LIMIT
        self._clock_offset = 0.0
        self._changed = asyncio.Event()
        self._gateway_conns: set[GatewayConnection] = set()
        self._port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def gateway_url(self) -> str:
        """Set ``DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(...)`` to this."""
        return f"ws://127.0.0.1:{self._port}/gateway"

    # ------------------------------------------------------------------ clock

    def now(self) -> float:
        """The server's clock (monotonic seconds + the injected offset)."""
        return time.monotonic() + self._clock_offset

    def advance_clock(self, seconds: float) -> None:
        """Move the server's clock forward: makes pending interactions 'late' without waiting."""
        self._clock_offset += seconds
        self._notify()

    def expire_token(self, interaction: InteractionRecord | str) -> None:
        """Make an interaction's token invalid now (as if 15 minutes had passed for it)."""
        rec = (
            interaction
            if isinstance(interaction, InteractionRecord)
            else self.interactions_by_token[interaction]
        )
        rec.expired = True

    # ------------------------------------------------------------------ waiting

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:  # noqa: ASYNC109
        """Wait until `predicate()` is truthy (re-checked on every server state change); return it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not (result := predicate()):
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"loopback: condition not met within {timeout}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return result

    def dispatch(self, event: str, data: JSON) -> None:
        """Send a gateway dispatch to the bot (buffered for replay if the socket is down), if the
        intents it identified with ask for that event (as Discord does); else it is dropped."""
        if self.session is None:
            raise LoopbackError(f"cannot dispatch {event}: the bot has not identified")
        needed = intent_for(event, data)
        if needed is not None and not int(self.session.identify.get("intents", 0)) & needed:
            self.dropped_events.append(event)
            return
        self.session.dispatch(event, data)
        self._notify()

    def channel_messages(self, channel: Channel | int) -> list[Message]:
        """Live (not deleted, not ephemeral) messages in a channel, oldest first."""
        cid = channel if isinstance(channel, int) else channel.id
        return [m for i in self.channel_log.get(cid, []) if not (m := self.messages[i]).deleted]

    def update_channel(
        self,
        channel: Channel,
        *,
        bot_permissions: int | None = None,
        archived: bool | None = None,
        locked: bool | None = None,
    ) -> None:
        """Change what the bot may do in a channel, or archive / lock a thread (CHANNEL/THREAD_UPDATE)."""
        if bot_permissions is not None:
            channel.bot_permissions = bot_permissions
        if archived is not None:
            channel.archived = archived
        if locked is not None:
            channel.locked = locked
        if self.ready_sent:
            self.dispatch("THREAD_UPDATE" if channel.is_thread else "CHANNEL_UPDATE", channel.payload())
        self._notify()

    def _new_attachment(self, filename: str, data: bytes, content_type: str | None) -> Attachment:
        """A stored file. Like Discord, a picture's content type comes from the file, not from the
        uploader's part header (discord.py sends application/octet-stream)."""
        aid = snowflake()
        if content_type == "application/octet-stream":
            content_type = None
        att = Attachment(aid, filename, data, f"{self.url}/attachments/{aid}/{quote(filename)}", content_type)
        with contextlib.suppress(Exception):
            from PIL import Image

            with Image.open(io.BytesIO(data)) as im:
                att.width, att.height = im.size
                att.content_type = att.content_type or Image.MIME.get(im.format or "", None)
        self.attachments[aid] = att
        return att

    def _new_message(self, channel_id: int, author: User, *, webhook: bool = False) -> Message:
        channel = self.channels.get(channel_id)
        guild_id = channel.guild_id if channel else None
        msg = Message(snowflake(), channel_id, guild_id, author, created_at=self.now())
        if webhook:
            msg.webhook_id = self.application_id
        return msg

    def _store_message(self, msg: Message, kind: str, *, dispatch: bool) -> None:
        self.messages[msg.id] = msg
        if not msg.ephemeral:
            self.channel_log.setdefault(msg.channel_id, []).append(msg.id)
        msg.history.append(msg.snapshot(kind, self.now()))
        if dispatch and self.session is not None:
            self.dispatch("MESSAGE_CREATE", self._gateway_message(msg))
        self._notify()

    def _touch_message(self, msg: Message, kind: str) -> None:
        msg.history.append(msg.snapshot(kind, self.now()))
        if not msg.ephemeral and self.session is not None:
            self.dispatch("MESSAGE_UPDATE", self._gateway_message(msg))
        self._notify()

    def _delete_message(self, msg: Message) -> None:
        msg.deleted = True
        msg.history.append(msg.snapshot("delete", self.now()))
        if not msg.ephemeral and self.session is not None:
            data: JSON = {"id": str(msg.id), "channel_id": str(msg.channel_id)}
            if msg.guild_id:
                data["guild_id"] = str(msg.guild_id)
            self.dispatch("MESSAGE_DELETE", data)
        self._notify()

    def _gateway_message(self, msg: Message) -> JSON:
        data = msg.payload()
        guild = self.guilds.get(msg.guild_id) if msg.guild_id else None
        member = guild.members.get(msg.author.id) if guild else None
        if member is not None and msg.webhook_id is None:
            mp = member.payload()
            mp.pop("user")
            data["member"] = mp
        return data

    def _set_reaction(self, msg: Message, emoji: str, user_id: int, *, add: bool) -> None:
        users = msg.reactions.setdefault(emoji, set())
        if (user_id in users) == add:
            return
        (users.add if add else users.discard)(user_id)
        data: JSON = {
            "user_id": str(user_id),
            "channel_id": str(msg.channel_id),
            "message_id": str(msg.id),
            "emoji": {"id": None, "name": emoji},
            "type": 0,
            "burst": False,
        }
        if msg.guild_id:
            data["guild_id"] = str(msg.guild_id)
            member = self.guilds[msg.guild_id].members.get(user_id)
            if add and member is not None:
                data["member"] = member.payload()
            if add:
                data["message_author_id"] = str(msg.author.id)
        if self.session is not None:
            self.dispatch("MESSAGE_REACTION_ADD" if add else "MESSAGE_REACTION_REMOVE", data)
        self._notify()

    def _dm_channel(self, user: User) -> Channel:
        for ch in self.channels.values():
            if ch.type == DM_CHANNEL and ch.recipient_id == user.id:
                return ch
        ch = Channel(snowflake(), f"dm-{user.id}", None, type=DM_CHANNEL, recipient_id=user.id)
        self.channels[ch.id] = ch
        return ch
