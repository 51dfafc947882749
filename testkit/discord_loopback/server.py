"""DiscordLoopback: the aiohttp server, its world state, and the driver API tests use."""

from __future__ import annotations

import asyncio
import contextlib
import io
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import quote

import yarl
from aiohttp import web

from .gateway import GatewayConnection, GatewaySession, gateway_handler
from .models import (
    ADMINISTRATOR,
    DEFAULT_PERMISSIONS,
    DEFAULT_UPLOAD_LIMIT,
    JSON,
    MANAGE_GUILD,
    Attachment,
    Channel,
    CommandNotPermitted,
    Fault,
    Guild,
    InteractionRecord,
    LoopbackError,
    Member,
    Message,
    RequestLog,
    Role,
    Stall,
    Upload,
    User,
    snowflake,
)
from .rest import add_routes, make_middleware

_ALL_PERMISSIONS = (1 << 53) - 1


class DiscordLoopback:
    """A Discord-compatible REST + gateway server on 127.0.0.1, plus the driver that plays members.

    Use as ``async with DiscordLoopback() as server:``; see the package docstring for the API.
    """

    def __init__(self, *, token: str = "loopback-token", bot_name: str = "imagine") -> None:
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
        self.default_upload_limit = DEFAULT_UPLOAD_LIMIT
        self._clock_offset = 0.0
        self._changed = asyncio.Event()
        self._gateway_conns: set[GatewayConnection] = set()
        self._runner: web.AppRunner | None = None
        self._port = 0

    # ------------------------------------------------------------------ lifecycle and addresses

    async def start(self) -> DiscordLoopback:
        app = web.Application(middlewares=[make_middleware(self)], client_max_size=1 << 30)
        app.router.add_get("/gateway", lambda rq: gateway_handler(self, rq))
        add_routes(self, app)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        for stall in self.stalls:
            stall.release()
        for conn in list(self._gateway_conns):
            await conn.close(1001)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> DiscordLoopback:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def api_base(self) -> str:
        """Set ``discord.http.Route.BASE`` to this."""
        return f"{self.url}/api/v10"

    @property
    def gateway_url(self) -> str:
        """Set ``DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(...)`` to this."""
        return f"ws://127.0.0.1:{self._port}/gateway"

    @contextlib.contextmanager
    def patched_discord(self) -> Iterator[None]:
        """Point discord.py's REST root and gateway here for the duration of the block."""
        import discord.gateway
        import discord.http

        old_base, old_gw = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
        discord.http.Route.BASE = self.api_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)
        try:
            yield
        finally:
            discord.http.Route.BASE = old_base
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gw

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

    async def wait_ready(self, timeout: float = 15.0, *, commands: bool = True) -> None:  # noqa: ASYNC109
        """The bot identified and got READY + GUILD_CREATEs (and, if `commands`, synced commands)."""
        await self.wait_for(
            lambda: (
                self.session is not None
                and self.session.conn is not None
                and self.ready_sent
                and (not commands or bool(self.command_syncs))
            ),
            timeout=timeout,
        )

    async def wait_for_message(
        self,
        channel: Channel | int,
        predicate: Callable[[Message], bool] | None = None,
        timeout: float = 10.0,  # noqa: ASYNC109
    ) -> Message:
        """The first (oldest) live message in `channel` that satisfies `predicate`."""
        cid = channel if isinstance(channel, int) else channel.id

        def find() -> Message | None:
            for m in self.channel_messages(cid):
                if predicate is None or predicate(m):
                    return m
            return None

        msg: Message = await self.wait_for(find, timeout=timeout)
        return msg

    def channel_messages(self, channel: Channel | int) -> list[Message]:
        """Live (not deleted, not ephemeral) messages in a channel, oldest first."""
        cid = channel if isinstance(channel, int) else channel.id
        return [m for i in self.channel_log.get(cid, []) if not (m := self.messages[i]).deleted]

    async def wait_for_resume(self, count: int = 1, timeout: float = 15.0) -> None:  # noqa: ASYNC109
        """Wait until the client has RESUMEd `count` times in total and is connected again."""
        await self.wait_for(
            lambda: len(self.resumes) >= count and self.session is not None and self.session.conn is not None,
            timeout=timeout,
        )

    # ------------------------------------------------------------------ world building

    def add_user(self, name: str, *, bot: bool = False) -> User:
        user = User(snowflake(), name, bot=bot)
        self.users[user.id] = user
        return user

    def add_guild(
        self,
        name: str = "guild",
        *,
        owner: User | None = None,
        upload_limit: int = DEFAULT_UPLOAD_LIMIT,
        everyone_permissions: int = DEFAULT_PERMISSIONS,
    ) -> Guild:
        """A guild with @everyone and the bot as a member; sent as GUILD_CREATE (now or at READY)."""
        gid = snowflake()
        owner = owner or self.owner_user
        guild = Guild(gid, name, owner.id, Role(gid, "@everyone", everyone_permissions), upload_limit)
        guild.members[self.bot_user.id] = Member(self.bot_user, gid, permissions=_ALL_PERMISSIONS)
        guild.members[owner.id] = Member(owner, gid)
        self.guilds[gid] = guild
        if self.ready_sent:
            self.dispatch("GUILD_CREATE", guild.payload())
        return guild

    def add_role(self, guild: Guild, name: str, permissions: int = 0) -> Role:
        role = Role(snowflake(), name, permissions, position=len(guild.roles) + 1)
        guild.roles[role.id] = role
        if self.ready_sent:
            self.dispatch("GUILD_ROLE_CREATE", {"guild_id": str(guild.id), "role": role.payload()})
        return role

    def add_channel(self, guild: Guild, name: str | None = None, *, nsfw: bool = False) -> Channel:
        channel = Channel(
            snowflake(), name or f"channel-{len(guild.channels)}", guild.id, nsfw, len(guild.channels)
        )
        guild.channels[channel.id] = channel
        self.channels[channel.id] = channel
        if self.ready_sent:
            self.dispatch("CHANNEL_CREATE", channel.payload())
        return channel

    def add_member(
        self,
        guild: Guild,
        user: User | str,
        *,
        roles: tuple[Role, ...] | list[Role] = (),
        permissions: int | None = None,
        admin: bool = False,
    ) -> Member:
        """A member; `admin=True` grants Manage Server (0x20); `permissions` overrides the computed set."""
        if isinstance(user, str):
            user = self.add_user(user)
        self.users[user.id] = user
        if admin:
            permissions = (
                permissions if permissions is not None else guild.everyone.permissions
            ) | MANAGE_GUILD
        member = Member(user, guild.id, list(roles), permissions)
        guild.members[user.id] = member
        if self.ready_sent and self.session and int(self.session.identify.get("intents", 0)) & (1 << 1):
            self.dispatch("GUILD_MEMBER_ADD", member.payload() | {"guild_id": str(guild.id)})
        return member

    def upload(self, filename: str, data: bytes, content_type: str | None = None) -> Upload:
        return Upload(filename, data, content_type)

    # ------------------------------------------------------------------ faults

    def fail_next(
        self,
        pattern: str,
        status: int = 429,
        count: int = 1,
        *,
        retry_after: float = 0.05,
        is_global: bool = False,
    ) -> Fault:
        """The next `count` requests matching `pattern` ('POST /webhooks/*', or '/channels/*' for any
        method; paths are relative to /api/v10) get `status`: 429 with retry_after/Via/X-RateLimit-*,
        or a 5xx JSON error."""
        fault = Fault(pattern, status, count, retry_after, is_global)
        self.faults.append(fault)
        return fault

    def stall_next(self, pattern: str, count: int = 1) -> Stall:
        """The next `count` matching requests hang until `stall.release()` (then proceed normally)."""
        stall = Stall(pattern, count)
        self.stalls.append(stall)
        return stall

    def stall_response_next(self, pattern: str, count: int = 1) -> Stall:
        """The next `count` matching requests are carried out, then their responses hang until
        `stall.release()`: the client times out not knowing that its request took effect."""
        stall = Stall(pattern, count, after_handling=True)
        self.stalls.append(stall)
        return stall

    async def drop_gateway(self, code: int = 4000) -> None:
        """Close the bot's gateway socket (the session stays resumable; missed events are replayed)."""
        session = self.session
        if session is None or session.conn is None:
            raise LoopbackError("no gateway connection to drop")
        conn, session.conn = session.conn, None
        await conn.close(code)
        self._notify()

    # ------------------------------------------------------------------ driving the bot

    def dispatch(self, event: str, data: JSON) -> None:
        """Send a gateway dispatch to the bot (buffered for replay if the socket is down)."""
        if self.session is None:
            raise LoopbackError(f"cannot dispatch {event}: the bot has not identified")
        self.session.dispatch(event, data)
        self._notify()

    def command(self, name: str, guild: Guild | None = None, *, kind: int = 1) -> JSON:
        """The synced command `name` of type `kind` (1 slash, 2 user menu, 3 message menu); a guild
        command first, then a global one."""
        for key in ([guild.id] if guild else []) + [None]:
            for cmd in self.commands.get(key, []):
                if cmd["name"] == name and cmd.get("type", 1) == kind:
                    return cmd
        raise LoopbackError(
            f"command {name!r} (type {kind}) was never synced (synced: {self._synced_names()})"
        )

    def invoke_message_command(self, name: str, message: Message, member: Member) -> InteractionRecord:
        """A message menu command (`Apps → name` on `message`) as `member`: INTERACTION_CREATE type 2
        with `target_id` and the message in `resolved.messages`, as Discord sends it."""
        guild = self.guilds[message.guild_id] if message.guild_id else None
        if guild is None:
            raise LoopbackError("message commands in DMs are not supported")
        cmd = self.command(name, guild, kind=3)
        data: JSON = {
            "id": cmd["id"],
            "name": name,
            "type": 3,
            "target_id": str(message.id),
            "resolved": {"messages": {str(message.id): message.payload()}},
        }
        channel = self.channels[message.channel_id]
        rec = self._dispatch_interaction(2, data, guild, channel, member, guild.permissions_of(member))
        rec.name = name
        return rec

    def _synced_names(self) -> list[str]:
        return [c["name"] for cmds in self.commands.values() for c in cmds]

    def invoke(
        self,
        command_name: str,
        options: Mapping[str, Any] | None = None,
        *,
        guild: Guild,
        channel: Channel,
        member: Member,
        subcommand: str | None = None,
        attachments: Mapping[str, Upload] | None = None,
        permissions: int | None = None,
        enforce_default_permissions: bool = True,
        validate: bool = True,
        locale: str = "en-US",
        attachment_size_limit: int | None = None,
    ) -> InteractionRecord:
        """Dispatch a slash-command INTERACTION_CREATE (type 2) as `member` and return its record.

        Option types come from the synced command. `subcommand` is 'show' or 'group sub'. Values:
        User/Member for user options, Role, Channel, Upload for attachments (or pass `attachments`).
        `permissions` overrides member.permissions in the payload. With `enforce_default_permissions`
        a member lacking the command's default_member_permissions raises CommandNotPermitted (Discord
        hides it); `validate` checks required options, choices, min/max as Discord's client does.
        """
        cmd = self.command(command_name, guild)
        perms = permissions if permissions is not None else guild.permissions_of(member)
        needed = cmd.get("default_member_permissions")
        if enforce_default_permissions and needed is not None:
            need = int(needed)
            if not (perms & ADMINISTRATOR) and (need == 0 or perms & need != need):
                raise CommandNotPermitted(
                    f"/{command_name} needs permissions {need:#x}; member has {perms:#x}"
                )
        all_options = {**(options or {}), **(attachments or {})}
        resolved: dict[str, dict[str, JSON]] = {}
        defs: list[JSON] = cmd.get("options") or []
        wrap: list[str] = []
        for part in (subcommand or "").split():
            found = next((o for o in defs if o["name"] == part and o["type"] in (1, 2)), None)
            if found is None:
                raise LoopbackError(f"/{command_name} has no subcommand {part!r}")
            wrap.append(part)
            defs = found.get("options") or []
        built = [
            self._option(d, all_options[d["name"]], guild, resolved, validate)
            for d in defs
            if d["name"] in all_options
        ]
        unknown = set(all_options) - {d["name"] for d in defs}
        if unknown:
            raise LoopbackError(f"/{command_name} has no option(s) {sorted(unknown)}")
        if validate:
            missing = [d["name"] for d in defs if d.get("required") and d["name"] not in all_options]
            if missing:
                raise LoopbackError(f"/{command_name}: required option(s) missing: {missing}")
        for part in reversed(wrap):
            sub_type = 1 if part == wrap[-1] else 2
            built = [{"name": part, "type": sub_type, "options": built}]
        data: JSON = {"id": cmd["id"], "name": command_name, "type": 1, "options": built}
        if resolved:
            data["resolved"] = resolved
        if cmd.get("guild_id"):
            data["guild_id"] = cmd["guild_id"]
        rec = self._dispatch_interaction(
            2, data, guild, channel, member, perms, locale=locale, size_limit=attachment_size_limit
        )
        rec.name = command_name
        return rec

    def _option(
        self, d: JSON, value: Any, guild: Guild, resolved: dict[str, dict[str, JSON]], validate: bool
    ) -> JSON:
        t = int(d["type"])
        name = d["name"]
        if t in (6, 9) and isinstance(value, Member | User):
            member = value if isinstance(value, Member) else guild.members.get(value.id)
            user = value.user if isinstance(value, Member) else value
            resolved.setdefault("users", {})[str(user.id)] = user.payload()
            if member is not None:
                mp = member.payload(guild.permissions_of(member))
                mp.pop("user")
                resolved.setdefault("members", {})[str(user.id)] = mp
            return {"name": name, "type": t, "value": str(user.id)}
        if t in (8, 9) and isinstance(value, Role):
            resolved.setdefault("roles", {})[str(value.id)] = value.payload()
            return {"name": name, "type": t, "value": str(value.id)}
        if t == 7 and isinstance(value, Channel):
            cp = value.payload() | {"permissions": str(_ALL_PERMISSIONS)}
            resolved.setdefault("channels", {})[str(value.id)] = cp
            return {"name": name, "type": t, "value": str(value.id)}
        if t == 11:
            if not isinstance(value, Upload | Attachment):
                raise LoopbackError(f"option {name!r} is an attachment: pass an Upload")
            att = (
                value
                if isinstance(value, Attachment)
                else self._new_attachment(value.filename, value.data, value.content_type)
            )
            resolved.setdefault("attachments", {})[str(att.id)] = att.payload() | {"ephemeral": True}
            return {"name": name, "type": t, "value": str(att.id)}
        if validate:
            _validate_scalar(d, value)
        return {"name": name, "type": t, "value": value}

    def click(
        self,
        message: Message,
        custom_id: str,
        member: Member,
        *,
        values: list[str] | None = None,
        component_type: int = 2,
        permissions: int | None = None,
    ) -> InteractionRecord:
        """A component interaction (type 3) on `message` carrying the whole message, as Discord sends."""
        if custom_id not in message.custom_ids:
            raise LoopbackError(f"message {message.id} has no component {custom_id!r}: {message.custom_ids}")
        guild = self.guilds[message.guild_id] if message.guild_id else None
        if guild is None:
            raise LoopbackError("click in DMs is not supported")
        channel = self.channels[message.channel_id]
        data: JSON = {"custom_id": custom_id, "component_type": component_type}
        if values is not None:
            data["values"] = values
        perms = permissions if permissions is not None else guild.permissions_of(member)
        rec = self._dispatch_interaction(3, data, guild, channel, member, perms, message=message)
        rec.custom_id = custom_id
        rec.original_id = message.id
        return rec

    def submit_modal(
        self, interaction: InteractionRecord, values: Mapping[str, str], member: Member
    ) -> InteractionRecord:
        """Submit the modal that `interaction` answered with (type 5 MODAL_SUBMIT)."""
        if interaction.modal is None:
            raise LoopbackError("that interaction did not answer with a modal")
        guild = self.guilds[interaction.guild_id] if interaction.guild_id else None
        if guild is None:
            raise LoopbackError("modals in DMs are not supported")
        rows = [
            {"type": 1, "components": [{"type": 4, "custom_id": cid, "value": v}]}
            for cid, v in values.items()
        ]
        data: JSON = {"custom_id": interaction.modal.get("custom_id"), "components": rows}
        channel = self.channels[interaction.channel_id]
        rec = self._dispatch_interaction(5, data, guild, channel, member, guild.permissions_of(member))
        rec.custom_id = str(data["custom_id"])
        return rec

    def react(self, message: Message, emoji: str, member: Member) -> None:
        """A member adds a unicode reaction: MESSAGE_REACTION_ADD goes to the bot."""
        self._set_reaction(message, emoji, member.id, add=True)

    def unreact(self, message: Message, emoji: str, member: Member) -> None:
        self._set_reaction(message, emoji, member.id, add=False)

    def post_as(self, channel: Channel, member: Member, content: str) -> Message:
        """A member writes a plain message in a channel (MESSAGE_CREATE)."""
        msg = self._new_message(channel.id, member.user)
        msg.content = content
        self._store_message(msg, "create", dispatch=True)
        return msg

    # ------------------------------------------------------------------ internals used by rest/gateway

    def _dispatch_interaction(
        self,
        itype: int,
        data: JSON,
        guild: Guild,
        channel: Channel,
        member: Member,
        permissions: int,
        *,
        message: Message | None = None,
        locale: str = "en-US",
        size_limit: int | None = None,
    ) -> InteractionRecord:
        if self.session is None:
            raise LoopbackError("the bot has not identified yet: await server.wait_ready() first")
        iid, token = snowflake(), "itok." + secrets.token_urlsafe(32)
        limit = size_limit if size_limit is not None else guild.upload_limit
        payload: JSON = {
            "id": str(iid),
            "application_id": str(self.application_id),
            "type": itype,
            "data": data,
            "guild_id": str(guild.id),
            "guild": {"id": str(guild.id), "locale": "en-US", "features": []},
            "channel_id": str(channel.id),
            "channel": channel.payload(),
            "member": member.payload(permissions),
            "token": token,
            "version": 1,
            "app_permissions": str(_ALL_PERMISSIONS),
            "locale": locale,
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(guild.id)},
            "context": 0,
            "attachment_size_limit": limit,
        }
        if message is not None:
            payload["message"] = message.payload()
        rec = InteractionRecord(
            id=iid,
            token=token,
            type=itype,
            payload=payload,
            guild_id=guild.id,
            channel_id=channel.id,
            user=member.user,
            attachment_size_limit=limit,
            server=self,
            dispatched_at=self.now(),
        )
        self.interactions[iid] = rec
        self.interactions_by_token[token] = rec
        self.dispatch("INTERACTION_CREATE", payload)
        return rec

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
            if ch.type == 1 and ch.name == f"dm-{user.id}":
                return ch
        ch = Channel(snowflake(), f"dm-{user.id}", None, type=1)
        self.channels[ch.id] = ch
        return ch


def _validate_scalar(d: JSON, value: Any) -> None:
    """What Discord's client checks before sending: choices, min/max value, min/max length."""
    name, t = d["name"], int(d["type"])
    kinds: dict[int, tuple[type, ...]] = {3: (str,), 4: (int,), 5: (bool,), 10: (int, float)}
    if t in kinds and (not isinstance(value, kinds[t]) or (t in (4, 10) and isinstance(value, bool))):
        raise LoopbackError(f"option {name!r} needs a value of type {t}, got {value!r}")
    choices = d.get("choices")
    if choices and value not in [c["value"] for c in choices]:
        raise LoopbackError(f"option {name!r}: {value!r} is not one of the choices")
    if "min_value" in d and value < d["min_value"]:
        raise LoopbackError(f"option {name!r}: {value!r} < min_value {d['min_value']}")
    if "max_value" in d and value > d["max_value"]:
        raise LoopbackError(f"option {name!r}: {value!r} > max_value {d['max_value']}")
    if "min_length" in d and len(value) < d["min_length"]:
        raise LoopbackError(f"option {name!r}: shorter than min_length {d['min_length']}")
    if "max_length" in d and len(value) > d["max_length"]:
        raise LoopbackError(f"option {name!r}: longer than max_length {d['max_length']}")
