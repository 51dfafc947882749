"""REST routes under /api/v10 (and the attachment CDN), with Discord's error shapes."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .models import (
    EPHEMERAL,
    INTERACTION_ACK_WINDOW_S,
    INTERACTION_TOKEN_TTL_S,
    JSON,
    LOADING,
    Attachment,
    CallbackAttempt,
    InteractionRecord,
    Message,
    RequestLog,
    Stall,
    snowflake,
)

if TYPE_CHECKING:
    from .server import DiscordLoopback

API = "/api/v10"
NONCE_WINDOW_S = 300.0  # how long Discord remembers a message's nonce for `enforce_nonce`
_MENTION = re.compile(r"<@!?(\d+)>")

MessageHandler = Callable[["DiscordLoopback", web.Request, str], Awaitable[web.Response]]
"""The handler of one message's routes, told the method (GET, PATCH or DELETE)."""


class DiscordError(Exception):
    """Turned into Discord's JSON error body by the middleware."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """Content-Type exactly application/json (discord.py reads '; charset=…' bodies as text)."""
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def no_content() -> web.Response:
    return web.Response(status=204)


UPLOAD_TOO_LARGE = (413, 40005, "Request entity too large")


# ---------------------------------------------------------------- middleware: auth, faults, stalls, log


def make_middleware(server: DiscordLoopback) -> Any:
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
                response = _fault_response(fault.status, fault.retry_after, fault.is_global)
                server.requests.append(RequestLog(method, rel, response.status, server.now()))
                server._notify()
                return response
        try:
            if not _is_webhook_route(rel) and request.headers.get("Authorization") != f"Bot {server.token}":
                raise DiscordError(401, 0, "401: Unauthorized")
            response = await handler(request)
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


async def _hold(server: DiscordLoopback, stall: Stall, method: str, rel: str) -> None:
    stall.hits.append(f"{method} {rel}")
    stall.stalled.set()
    server._notify()
    await stall.released.wait()


def _is_webhook_route(rel: str) -> bool:
    return rel.startswith("/webhooks/") or rel.startswith("/interactions/")


def _fault_response(status: int, retry_after: float, is_global: bool) -> web.Response:
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
    return json_response({"message": f"{status}: Server Error", "code": 0}, status=status)


# ---------------------------------------------------------------- bodies


async def read_body(
    request: web.Request, server: DiscordLoopback
) -> tuple[JSON, list[tuple[int, Attachment]]]:
    """JSON body, or multipart `payload_json` + `files[n]` parts → (payload, [(n, attachment)])."""
    ctype = request.headers.get("Content-Type", "")
    if ctype.startswith("multipart/"):
        payload: JSON = {}
        files: list[tuple[int, Attachment]] = []
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            name = part.name or ""  # type: ignore[union-attr]
            if name == "payload_json":
                payload = json.loads(await part.text())  # type: ignore[union-attr]
            elif m := re.fullmatch(r"files\[(\d+)\]", name):
                data = bytes(await part.read())  # type: ignore[union-attr]
                filename = part.filename or f"file{m.group(1)}"  # type: ignore[union-attr]
                files.append(
                    (
                        int(m.group(1)),
                        server._new_attachment(filename, data, part.headers.get("Content-Type")),
                    )
                )
        return payload, files
    raw = await request.read()
    return (json.loads(raw) if raw else {}), []


def _check_sizes(files: list[tuple[int, Attachment]], limit: int) -> None:
    if any(a.size > limit for _, a in files):
        raise DiscordError(*UPLOAD_TOO_LARGE)


def apply_payload(
    server: DiscordLoopback, msg: Message, payload: JSON, files: list[tuple[int, Attachment]], *, create: bool
) -> None:
    """Create/edit semantics of Discord's message endpoints (attachments listed = attachments kept)."""
    if "content" in payload or create:
        msg.content = payload.get("content") or ""
        msg.mentions = [u for u in (server.users.get(int(i)) for i in _MENTION.findall(msg.content)) if u]
    if "embeds" in payload or create:
        msg.embeds = list(payload.get("embeds") or [])
    if "components" in payload or create:
        msg.components = list(payload.get("components") or [])
    if "flags" in payload and payload["flags"] is not None:
        keep = msg.flags & EPHEMERAL
        msg.flags = (
            (int(payload["flags"]) & ~LOADING & ~EPHEMERAL) | keep if not create else int(payload["flags"])
        )
    new_by_index = dict(files)
    if "attachments" in payload and payload["attachments"] is not None:
        listed = payload["attachments"]
        existing = {a.id: a for a in msg.attachments}
        kept: list[Attachment] = []
        for item in listed:
            aid = int(item["id"])
            att = new_by_index.pop(aid, None) if aid in new_by_index else existing.get(aid)
            if att is None:
                continue
            if item.get("filename"):
                att.filename = item["filename"]
            if item.get("description"):
                att.description = item["description"]
            kept.append(att)
        msg.attachments = kept + list(new_by_index.values())
    elif files:
        msg.attachments = [*msg.attachments, *new_by_index.values()]
    if not create:
        msg.flags &= ~LOADING
        msg.edited_timestamp = dt.datetime.now(dt.UTC)


# ---------------------------------------------------------------- routes


def add_routes(server: DiscordLoopback, app: web.Application) -> None:
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
    r.add_post(f"{g}/interactions/{{iid}}/{{token}}/callback", lambda rq: _callback(server, rq))
    r.add_post(f"{g}/webhooks/{{app}}/{{token}}", lambda rq: _followup(server, rq))
    r.add_get(f"{g}/channels/{{cid}}", lambda rq: _get_channel(server, rq))
    r.add_post(f"{g}/channels/{{cid}}/typing", lambda rq: _typing(server, rq))
    r.add_post(f"{g}/channels/{{cid}}/messages", lambda rq: _post_message(server, rq))
    wm = f"{g}/webhooks/{{app}}/{{token}}/messages/{{mid}}"
    cm = f"{g}/channels/{{cid}}/messages/{{mid}}"
    for path, message_handler in ((wm, _webhook_message), (cm, _channel_message)):
        r.add_get(path, _with_method(server, message_handler, "GET"))
        r.add_patch(path, _with_method(server, message_handler, "PATCH"))
        r.add_delete(path, _with_method(server, message_handler, "DELETE"))
    rx = f"{cm}/reactions/{{emoji}}/{{who}}"
    r.add_put(rx, lambda rq: _reaction(server, rq, add=True))
    r.add_delete(rx, lambda rq: _reaction(server, rq, add=False))
    r.add_get(f"{g}/guilds/{{gid}}", lambda rq: _get_guild(server, rq))
    r.add_get(f"{g}/guilds/{{gid}}/members/{{uid}}", lambda rq: _get_member(server, rq))
    r.add_post(f"{g}/users/@me/channels", lambda rq: _open_dm(server, rq))
    r.add_get("/attachments/{aid}/{name}", lambda rq: _cdn(server, rq))


def _with_method(
    server: DiscordLoopback, handler: MessageHandler, method: str
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A route's handler: `handler(server, request, method)`."""
    return lambda rq: handler(server, rq, method)


async def _me(server: DiscordLoopback) -> web.Response:
    return json_response(server.bot_user.payload() | {"verified": True, "mfa_enabled": False, "flags": 0})


async def _app_info(server: DiscordLoopback) -> web.Response:
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


async def _gateway(server: DiscordLoopback) -> web.Response:
    return json_response({"url": server.gateway_url})


async def _gateway_bot(server: DiscordLoopback) -> web.Response:
    return json_response(
        {
            "url": server.gateway_url,
            "shards": 1,
            "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1},
        }
    )


async def _put_commands(server: DiscordLoopback, request: web.Request, guild_id: int | None) -> web.Response:
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


async def _get_commands(server: DiscordLoopback, guild_id: int | None) -> web.Response:
    return json_response(server.commands.get(guild_id, []))


def _interaction_by_token(server: DiscordLoopback, request: web.Request) -> InteractionRecord:
    if int(request.match_info["app"]) != server.application_id:
        raise DiscordError(404, 10015, "Unknown Webhook")
    rec = server.interactions_by_token.get(request.match_info["token"])
    if rec is None:
        raise DiscordError(404, 10015, "Unknown Webhook")
    if rec.expired or server.now() - rec.dispatched_at > INTERACTION_TOKEN_TTL_S:
        rec.expired = True
        raise DiscordError(401, 50027, "Invalid Webhook Token")
    return rec


async def _callback(server: DiscordLoopback, request: web.Request) -> web.Response:
    rec = server.interactions.get(int(request.match_info["iid"]))
    if rec is None or rec.token != request.match_info["token"]:
        raise DiscordError(404, 10062, "Unknown interaction")
    payload, files = await read_body(request, server)
    ctype = int(payload.get("type", 0))
    now = server.now()
    if rec.acknowledged:
        rec.attempts.append(CallbackAttempt(ctype, now, 400, 40060))
        raise DiscordError(400, 40060, "Interaction has already been acknowledged.")
    if rec.expired or now - rec.dispatched_at > INTERACTION_ACK_WINDOW_S:
        rec.attempts.append(CallbackAttempt(ctype, now, 404, 10062))
        raise DiscordError(404, 10062, "Unknown interaction")
    data: JSON = payload.get("data") or {}
    _check_sizes(files, rec.attachment_size_limit)
    message: Message | None = None
    if ctype in (4, 5):
        flags = int(data.get("flags") or 0) & EPHEMERAL
        message = server._new_message(rec.channel_id, server.bot_user, webhook=True)
        message.interaction_id = rec.id
        message.type = 20 if rec.type == 2 else 19
        if ctype == 4:
            apply_payload(server, message, data, files, create=True)
            message.flags = (message.flags & ~EPHEMERAL) | flags
        else:
            message.flags = flags | LOADING
        rec.original_id = message.id
        server._store_message(message, "create", dispatch=not message.ephemeral)
    elif ctype in (6, 7):
        if rec.type != 3 or rec.original_id is None:
            raise DiscordError(400, 50035, "Invalid Form Body: interaction has no message to update")
        message = server.messages[rec.original_id]
        if ctype == 7:
            apply_payload(server, message, data, files, create=False)
            server._touch_message(message, "edit")
    elif ctype == 8:
        rec.autocomplete_choices = list(data.get("choices") or [])
    elif ctype == 9:
        rec.modal = data
    else:
        raise DiscordError(400, 50035, f"Invalid Form Body: unknown callback type {ctype}")
    rec.attempts.append(CallbackAttempt(ctype, now, 200))
    rec.callback_type, rec.acked_at = ctype, now
    server.ack_latencies.append(now - rec.dispatched_at)
    interaction: JSON = {
        "id": str(rec.id),
        "type": rec.type,
        "response_message_id": str(message.id) if message and ctype in (4, 5, 7) else None,
        "response_message_loading": ctype == 5,
        "response_message_ephemeral": bool(message and message.ephemeral),
    }
    body: JSON = {"interaction": interaction}
    if message is not None and ctype in (4, 5, 7):
        body["resource"] = {"type": ctype, "message": message.payload()}
    else:
        body["resource"] = {"type": ctype}
    return json_response(body)


async def _followup(server: DiscordLoopback, request: web.Request) -> web.Response:
    rec = _interaction_by_token(server, request)
    if not rec.acknowledged:
        raise DiscordError(404, 10015, "Unknown Webhook")
    payload, files = await read_body(request, server)
    _check_sizes(files, rec.attachment_size_limit)
    orig = rec.original
    if orig is not None and orig.loading and rec.callback_type == 5:
        # Discord: the first followup after a deferred "thinking" response edits that response
        # (and its ephemeral flag is ignored: the deferred message's visibility is kept).
        apply_payload(server, orig, payload, files, create=False)
        server._touch_message(orig, "edit")
        msg = orig
    else:
        msg = server._new_message(rec.channel_id, server.bot_user, webhook=True)
        msg.interaction_id = rec.id
        apply_payload(server, msg, payload, files, create=True)
        msg.flags = int(payload.get("flags") or 0)
        rec.followup_ids.append(msg.id)
        server._store_message(msg, "create", dispatch=not msg.ephemeral)
    wait = request.query.get("wait", "").lower() in ("1", "true")
    return json_response(msg.payload()) if wait else no_content()


def _webhook_target(server: DiscordLoopback, rec: InteractionRecord, mid: str) -> Message:
    if mid == "@original":
        msg = rec.original
    else:
        msg = server.messages.get(int(mid))
        if msg is not None and msg.id not in rec.followup_ids and msg.id != rec.original_id:
            msg = None
    if msg is None or msg.deleted:
        raise DiscordError(404, 10008, "Unknown Message")
    return msg


async def _webhook_message(server: DiscordLoopback, request: web.Request, method: str) -> web.Response:
    rec = _interaction_by_token(server, request)
    msg = _webhook_target(server, rec, request.match_info["mid"])
    if method == "GET":
        return json_response(msg.payload())
    if method == "DELETE":
        server._delete_message(msg)
        return no_content()
    payload, files = await read_body(request, server)
    _check_sizes(files, rec.attachment_size_limit)
    apply_payload(server, msg, payload, files, create=False)
    server._touch_message(msg, "edit")
    return json_response(msg.payload())


def _channel_or_404(server: DiscordLoopback, request: web.Request) -> Any:
    channel = server.channels.get(int(request.match_info["cid"]))
    if channel is None:
        raise DiscordError(404, 10003, "Unknown Channel")
    return channel


def _message_or_404(server: DiscordLoopback, request: web.Request) -> Message:
    channel = _channel_or_404(server, request)
    msg = server.messages.get(int(request.match_info["mid"]))
    if msg is None or msg.deleted or msg.channel_id != channel.id or msg.ephemeral:
        raise DiscordError(404, 10008, "Unknown Message")
    return msg


async def _get_channel(server: DiscordLoopback, request: web.Request) -> web.Response:
    return json_response(_channel_or_404(server, request).payload())


async def _typing(server: DiscordLoopback, request: web.Request) -> web.Response:
    _channel_or_404(server, request)
    return no_content()


async def _post_message(server: DiscordLoopback, request: web.Request) -> web.Response:
    channel = _channel_or_404(server, request)
    payload, files = await read_body(request, server)
    guild = server.guilds.get(channel.guild_id) if channel.guild_id else None
    _check_sizes(files, guild.upload_limit if guild else server.default_upload_limit)
    if not (payload.get("content") or payload.get("embeds") or files or payload.get("components")):
        raise DiscordError(400, 50006, "Cannot send an empty message")
    nonce = payload.get("nonce")
    if nonce is not None and payload.get("enforce_nonce"):
        # Discord: the same author and nonce within a few minutes returns the first message.
        for earlier in server.channel_messages(channel.id):
            recent = server.now() - earlier.created_at < NONCE_WINDOW_S
            if earlier.nonce == str(nonce) and earlier.author.id == server.bot_user.id and recent:
                return json_response(earlier.payload())
    msg = server._new_message(channel.id, server.bot_user)
    msg.nonce = None if nonce is None else str(nonce)
    apply_payload(server, msg, payload, files, create=True)
    if payload.get("message_reference"):
        msg.type = 19
    server._store_message(msg, "create", dispatch=True)
    return json_response(msg.payload())


async def _channel_message(server: DiscordLoopback, request: web.Request, method: str) -> web.Response:
    msg = _message_or_404(server, request)
    if method == "GET":
        return json_response(msg.payload())
    if msg.author.id != server.bot_user.id and method == "PATCH":
        raise DiscordError(403, 50005, "Cannot edit a message authored by another user")
    if method == "DELETE":
        server._delete_message(msg)
        return no_content()
    payload, files = await read_body(request, server)
    guild = server.guilds.get(msg.guild_id) if msg.guild_id else None
    _check_sizes(files, guild.upload_limit if guild else server.default_upload_limit)
    apply_payload(server, msg, payload, files, create=False)
    server._touch_message(msg, "edit")
    return json_response(msg.payload())


async def _reaction(server: DiscordLoopback, request: web.Request, *, add: bool) -> web.Response:
    msg = _message_or_404(server, request)
    who = request.match_info["who"]
    user_id = server.bot_user.id if who == "@me" else int(who)
    emoji = request.match_info["emoji"]
    if add and who != "@me":
        raise DiscordError(405, 0, "405: Method Not Allowed")
    server._set_reaction(msg, emoji, user_id, add=add)
    return no_content()


async def _get_guild(server: DiscordLoopback, request: web.Request) -> web.Response:
    guild = server.guilds.get(int(request.match_info["gid"]))
    if guild is None:
        raise DiscordError(404, 10004, "Unknown Guild")
    data = guild.payload()
    for key in ("channels", "members", "threads", "presences", "voice_states"):
        data.pop(key, None)
    return json_response(data)


async def _get_member(server: DiscordLoopback, request: web.Request) -> web.Response:
    guild = server.guilds.get(int(request.match_info["gid"]))
    if guild is None:
        raise DiscordError(404, 10004, "Unknown Guild")
    member = guild.members.get(int(request.match_info["uid"]))
    if member is None:
        raise DiscordError(404, 10007, "Unknown Member")
    return json_response(member.payload())


async def _open_dm(server: DiscordLoopback, request: web.Request) -> web.Response:
    body = await request.json()
    user = server.users.get(int(body["recipient_id"]))
    if user is None:
        raise DiscordError(400, 50033, "Invalid Recipients")
    channel = server._dm_channel(user)
    return json_response(channel.payload() | {"recipients": [user.payload()], "last_message_id": None})


async def _cdn(server: DiscordLoopback, request: web.Request) -> web.Response:
    att = server.attachments.get(int(request.match_info["aid"]))
    if att is None:
        return web.Response(status=404, text="Not Found")
    return web.Response(
        body=att.data,
        headers={"Content-Type": att.content_type or "application/octet-stream"},
    )
