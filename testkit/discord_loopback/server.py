"""DiscordLoopback: the aiohttp server around the state and the driver, world building, faults."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import yarl
from aiohttp import web

from .driver import MemberDriver
from .gateway import gateway_handler
from .models import (
    DEFAULT_PERMISSIONS,
    PUBLIC_THREAD,
    TIER_UPLOAD_LIMITS,
    Channel,
    Guild,
    LoopbackError,
    Member,
    Role,
    Upload,
    User,
    snowflake,
)
from .permissions import ALL_PERMISSIONS, MANAGE_GUILD
from .records import Fault, Message, Stall
from .rest import add_routes, make_middleware
from .spec import SpecViolation


class SpecViolationError(AssertionError):
    """The bot sent requests that Discord's spec refuses (raised when a strict loopback closes)."""

    def __init__(self, violations: list[SpecViolation]) -> None:
        lines = "\n".join(f"  {v}" for v in violations)
        super().__init__(f"{len(violations)} request(s) refused by Discord's API spec:\n{lines}")
        self.violations = violations


class DiscordLoopback(MemberDriver):
    """A Discord-compatible REST + gateway server on 127.0.0.1, plus the driver that plays members.

    Use as ``async with DiscordLoopback() as server:``; see the package docstring for the API. Every
    request is checked against Discord's OpenAPI spec; with `strict` (the default) leaving the block
    raises `SpecViolationError` if any was refused.
    """

    def __init__(
        self, *, token: str = "loopback-token", bot_name: str = "imagine", strict: bool = True
    ) -> None:
        super().__init__(token=token, bot_name=bot_name)
        self.strict = strict
        self._runner: web.AppRunner | None = None

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

    async def __aexit__(self, exc_type: object, *exc: object) -> None:
        await self.stop()
        if exc_type is None and self.strict and self.spec_violations:
            raise SpecViolationError(self.spec_violations)

    def take_spec_violations(self) -> list[SpecViolation]:
        """The requests the spec refused so far, forgotten (for tests that send invalid ones on purpose)."""
        taken, self.spec_violations = self.spec_violations, []
        return taken

    @property
    def api_base(self) -> str:
        """Set ``discord.http.Route.BASE`` to this."""
        return f"{self.url}/api/v10"

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
        premium_tier: int = 0,
        everyone_permissions: int = DEFAULT_PERMISSIONS,
    ) -> Guild:
        """A guild with @everyone and the bot as a member; sent as GUILD_CREATE (now or at READY).
        Its upload limit follows its boost tier (`TIER_UPLOAD_LIMITS`)."""
        if premium_tier not in TIER_UPLOAD_LIMITS:
            raise LoopbackError(f"boost tiers are 0-3, not {premium_tier}")
        gid = snowflake()
        owner = owner or self.owner_user
        guild = Guild(gid, name, owner.id, Role(gid, "@everyone", everyone_permissions), premium_tier)
        guild.members[self.bot_user.id] = Member(self.bot_user, gid, permissions=ALL_PERMISSIONS)
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

    def add_channel(
        self,
        guild: Guild,
        name: str | None = None,
        *,
        nsfw: bool = False,
        bot_permissions: int = ALL_PERMISSIONS,
    ) -> Channel:
        """A text channel; `bot_permissions` is what the bot may do there (also its app_permissions)."""
        channel = Channel(
            snowflake(),
            name or f"channel-{len(guild.channels)}",
            guild.id,
            nsfw,
            len(guild.channels),
            bot_permissions=bot_permissions,
        )
        return self._add(guild, channel, "CHANNEL_CREATE")

    def add_thread(
        self, parent: Channel, name: str = "thread", *, archived: bool = False, locked: bool = False
    ) -> Channel:
        """A public thread under `parent`, with its permissions (an archived or locked one refuses)."""
        if parent.guild_id is None:
            raise LoopbackError("threads live in guild channels")
        thread = Channel(
            snowflake(),
            name,
            parent.guild_id,
            parent.nsfw,
            type=PUBLIC_THREAD,
            bot_permissions=parent.bot_permissions,
            parent_id=parent.id,
            archived=archived,
            locked=locked,
        )
        return self._add(self.guilds[parent.guild_id], thread, "THREAD_CREATE")

    def delete_channel(self, channel: Channel) -> None:
        """The channel is gone: requests to it get 404 10003 Unknown Channel."""
        self.channels.pop(channel.id, None)
        if channel.guild_id is not None:
            self.guilds[channel.guild_id].channels.pop(channel.id, None)
        if self.ready_sent:
            self.dispatch("THREAD_DELETE" if channel.is_thread else "CHANNEL_DELETE", channel.payload())
        self._notify()

    def _add(self, guild: Guild, channel: Channel, event: str) -> Channel:
        guild.channels[channel.id] = channel
        self.channels[channel.id] = channel
        if self.ready_sent:
            self.dispatch(event, channel.payload())
        return channel

    def add_member(
        self,
        guild: Guild,
        user: User | str,
        *,
        roles: tuple[Role, ...] | list[Role] = (),
        permissions: int | None = None,
        admin: bool = False,
        upload_limit: int | None = None,
    ) -> Member:
        """A member; `admin=True` grants Manage Server (0x20); `permissions` overrides the computed set;
        `upload_limit` is the member's own (Nitro) limit, which interactions report when larger."""
        if isinstance(user, str):
            user = self.add_user(user)
        self.users[user.id] = user
        if admin:
            permissions = (
                permissions if permissions is not None else guild.everyone.permissions
            ) | MANAGE_GUILD
        member = Member(user, guild.id, list(roles), permissions, upload_limit)
        guild.members[user.id] = member
        if self.ready_sent:
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
        code: int = 0,
    ) -> Fault:
        """The next `count` requests matching `pattern` ('POST /webhooks/*', or '/channels/*' for any
        method; paths are relative to /api/v10) get `status`: 429 with retry_after/Via/X-RateLimit-*,
        or a JSON error with Discord's `code` (e.g. 413 with 40005)."""
        fault = Fault(pattern, status, count, retry_after, is_global, code)
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
