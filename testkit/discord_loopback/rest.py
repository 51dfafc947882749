"""REST under /api/v10 (and the attachment CDN): the middleware (auth, planned faults and stalls,
Discord's spec, the request log), the route table and the small endpoints. Request bodies and JSON
responses are in `rest_io`; message routes in `rest_messages` (channels) and `rest_interactions`
(interaction callbacks, webhooks)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import rest_interactions as inter
from . import rest_messages as chan
from .channel_rules import DiscordError
from .models import JSON, snowflake
from .records import RequestLog, Stall
from .rest_io import json_response, read_body
from .spec import Invalid, SpecViolation, form_errors

if TYPE_CHECKING:
    from .state import LoopbackState

__all__ = ["API", "add_routes", "make_middleware"]

API = "/api/v10"

MessageHandler = Callable[["LoopbackState", web.Request, str], Awaitable[web.Response]]
"""The handler of one message's routes, told the method (GET, PATCH or DELETE)."""


# ---------------------------------------------------------------- middleware: auth, faults, stalls, log


def make_middleware(server: LoopbackState) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        path = request.path
        if not path.startswith(API):
            return await handler(request)  # type: ignore[no-any-return]
        rel = path[len(API) :]
        method = request.method
        for stall in server.stalls:
            if not stall.after_handling and stall.matches(method, rel):
                await _hold(server, stall, method, rel)
                break
        for fault in server.faults:
            if fault.matches(method, rel):
                fault.hits.append(f"{method} {rel}")
                response = _fault_response(fault.status, fault.retry_after, fault.is_global, fault.code)
                server.requests.append(RequestLog(method, rel, response.status, server.now()))
                server._notify()
                return response
        try:
            if not _is_webhook_route(rel) and request.headers.get("Authorization") != f"Bot {server.token}":
                raise DiscordError(401, 0, "401: Unauthorized")
            refused = await _check_spec(server, request, method, rel)
            response = refused if refused is not None else await handler(request)
        except DiscordError as e:
            response = json_response({"message": e.message, "code": e.code}, status=e.status)
        except web.HTTPNotFound:
            server.unhandled.append(f"{method} {rel}")
            response = json_response({"message": "404: Not Found", "code": 0}, status=404)
        server.requests.append(RequestLog(method, rel, response.status, server.now()))
        server._notify()
        for stall in server.stalls:
            if stall.after_handling and stall.matches(method, rel):
                await _hold(server, stall, method, rel)
                break
        return response

    return middleware


async def _hold(server: LoopbackState, stall: Stall, method: str, rel: str) -> None:
    stall.hits.append(f"{method} {rel}")
    stall.stalled.set()
    server._notify()
    await stall.released.wait()


def _is_webhook_route(rel: str) -> bool:
    return rel.startswith("/webhooks/") or rel.startswith("/interactions/")


def _fault_response(status: int, retry_after: float, is_global: bool, code: int) -> web.Response:
    if status == 429:
        return json_response(
            {"message": "You are being rate limited.", "retry_after": retry_after, "global": is_global},
            status=429,
            headers={
                "Via": "1.1 google",
                "Retry-After": str(max(1, round(retry_after))),
                "X-RateLimit-Limit": "5",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset-After": f"{retry_after:.3f}",
                "X-RateLimit-Bucket": "loopback-bucket",
                "X-RateLimit-Scope": "global" if is_global else "user",
            },
        )
    return json_response({"message": f"{status}: planned failure", "code": code}, status=status)


# ---------------------------------------------------------------- bodies


async def _check_spec(
    server: LoopbackState, request: web.Request, method: str, rel: str
) -> web.Response | None:
    """400 50035 with the field paths if Discord's spec refuses the request (recorded), else None."""
    body: Any = None
    multipart = request.headers.get("Content-Type", "").startswith("multipart/")
    if request.can_read_body:
        try:
            body, _files = await read_body(request, server)
        except ValueError:
            problems = [Invalid("", "BASE_TYPE_INVALID", "the body is not JSON")]
            return _refuse(server, method, rel, problems)
    problems = server.spec.check(method, rel, dict(request.query), body, multipart=multipart)
    return _refuse(server, method, rel, problems) if problems else None


def _refuse(server: LoopbackState, method: str, rel: str, problems: list[Invalid]) -> web.Response:
    server.spec_violations.append(SpecViolation(method, rel, tuple(problems)))
    body = {"code": 50035, "message": "Invalid Form Body", "errors": form_errors(problems)}
    return json_response(body, status=400)


# ---------------------------------------------------------------- routes


def add_routes(server: LoopbackState, app: web.Application) -> None:
    r = app.router
    g = API
    r.add_get(f"{g}/users/@me", lambda rq: _me(server))
    r.add_get(f"{g}/oauth2/applications/@me", lambda rq: _app_info(server))
    r.add_get(f"{g}/applications/@me", lambda rq: _app_info(server))
    r.add_get(f"{g}/gateway", lambda rq: _gateway(server))
    r.add_get(f"{g}/gateway/bot", lambda rq: _gateway_bot(server))
    r.add_put(f"{g}/applications/{{app}}/commands", lambda rq: _put_commands(server, rq, None))
    r.add_get(f"{g}/applications/{{app}}/commands", lambda rq: _get_commands(server, None))
    r.add_put(
        f"{g}/applications/{{app}}/guilds/{{guild}}/commands",
        lambda rq: _put_commands(server, rq, int(rq.match_info["guild"])),
    )
    r.add_get(
        f"{g}/applications/{{app}}/guilds/{{guild}}/commands",
        lambda rq: _get_commands(server, int(rq.match_info["guild"])),
    )
    r.add_post(f"{g}/interactions/{{iid}}/{{token}}/callback", lambda rq: inter.callback(server, rq))
    r.add_post(f"{g}/webhooks/{{app}}/{{token}}", lambda rq: inter.followup(server, rq))
    r.add_get(f"{g}/channels/{{cid}}", lambda rq: chan.get_channel(server, rq))
    r.add_post(f"{g}/channels/{{cid}}/typing", lambda rq: chan.typing(server, rq))
    r.add_post(f"{g}/channels/{{cid}}/messages", lambda rq: chan.post_message(server, rq))
    wm = f"{g}/webhooks/{{app}}/{{token}}/messages/{{mid}}"
    cm = f"{g}/channels/{{cid}}/messages/{{mid}}"
    handlers: tuple[tuple[str, MessageHandler], ...] = (
        (wm, inter.webhook_message),
        (cm, chan.channel_message),
    )
    for path, message_handler in handlers:
        r.add_get(path, _with_method(server, message_handler, "GET"))
        r.add_patch(path, _with_method(server, message_handler, "PATCH"))
        r.add_delete(path, _with_method(server, message_handler, "DELETE"))
    rx = f"{cm}/reactions/{{emoji}}/{{who}}"
    r.add_put(rx, lambda rq: chan.reaction(server, rq, add=True))
    r.add_delete(rx, lambda rq: chan.reaction(server, rq, add=False))
    r.add_get(f"{g}/guilds/{{gid}}", lambda rq: _get_guild(server, rq))
    r.add_get(f"{g}/guilds/{{gid}}/members/{{uid}}", lambda rq: _get_member(server, rq))
    r.add_post(f"{g}/users/@me/channels", lambda rq: _open_dm(server, rq))
    r.add_get("/attachments/{aid}/{name}", lambda rq: _cdn(server, rq))


def _with_method(
    server: LoopbackState, handler: MessageHandler, method: str
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A route's handler: `handler(server, request, method)`."""
    return lambda rq: handler(server, rq, method)


async def _me(server: LoopbackState) -> web.Response:
    return json_response(server.bot_user.payload() | {"verified": True, "mfa_enabled": False, "flags": 0})


async def _app_info(server: LoopbackState) -> web.Response:
    owner = server.owner_user.payload()
    return json_response(
        {
            "id": str(server.application_id),
            "name": server.bot_user.username,
            "description": "loopback application",
            "icon": None,
            "bot_public": True,
            "bot_require_code_grant": False,
            "owner": owner,
            "verify_key": "00" * 32,
            "flags": 0,
            "team": None,
            "summary": "",
            "rpc_origins": [],
        }
    )


async def _gateway(server: LoopbackState) -> web.Response:
    return json_response({"url": server.gateway_url})


async def _gateway_bot(server: LoopbackState) -> web.Response:
    return json_response(
        {
            "url": server.gateway_url,
            "shards": 1,
            "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1},
        }
    )


async def _put_commands(server: LoopbackState, request: web.Request, guild_id: int | None) -> web.Response:
    body = await request.json()
    out: list[JSON] = []
    previous = {c["name"]: c for c in server.commands.get(guild_id, [])}
    for cmd in body:
        stored = dict(cmd)
        old = previous.get(cmd["name"])
        stored["id"] = old["id"] if old else str(snowflake())
        stored["application_id"] = str(server.application_id)
        stored.setdefault("type", 1)
        stored.setdefault("description", "")
        perms = stored.get("default_member_permissions")
        # Discord answers a string
        stored["default_member_permissions"] = None if perms is None else str(perms)
        stored["version"] = str(snowflake())
        if guild_id is not None:
            stored["guild_id"] = str(guild_id)
        out.append(stored)
    server.commands[guild_id] = out
    server.command_syncs.append((guild_id, out))
    return json_response(out)


async def _get_commands(server: LoopbackState, guild_id: int | None) -> web.Response:
    server.command_fetches.append(guild_id)
    return json_response(server.commands.get(guild_id, []))


async def _get_guild(server: LoopbackState, request: web.Request) -> web.Response:
    guild = server.guilds.get(int(request.match_info["gid"]))
    if guild is None:
        raise DiscordError(404, 10004, "Unknown Guild")
    data = guild.payload()
    for key in ("channels", "members", "threads", "presences", "voice_states"):
        data.pop(key, None)
    return json_response(data)


async def _get_member(server: LoopbackState, request: web.Request) -> web.Response:
    guild = server.guilds.get(int(request.match_info["gid"]))
    if guild is None:
        raise DiscordError(404, 10004, "Unknown Guild")
    member = guild.members.get(int(request.match_info["uid"]))
    if member is None:
        raise DiscordError(404, 10007, "Unknown Member")
    return json_response(member.payload())


async def _open_dm(server: LoopbackState, request: web.Request) -> web.Response:
    body = await request.json()
    user = server.users.get(int(body["recipient_id"]))
    if user is None:
        raise DiscordError(400, 50033, "Invalid Recipients")
    channel = server._dm_channel(user)
    return json_response(channel.payload() | {"recipients": [user.payload()], "last_message_id": None})


async def _cdn(server: LoopbackState, request: web.Request) -> web.Response:
    att = server.attachments.get(int(request.match_info["aid"]))
    if att is None:
        return web.Response(status=404, text="Not Found")
    return web.Response(
        body=att.data,
        headers={"Content-Type": att.content_type or "application/octet-stream"},
    )
