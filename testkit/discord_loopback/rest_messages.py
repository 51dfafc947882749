"""Channel message routes with Discord's rules: permissions, deleted channels, archived and locked
threads, closed DMs, upload limits by boost tier, nonces, and create/edit semantics (on an edit,
files not listed in `attachments` are removed)."""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING

from aiohttp import web

from .channel_rules import DiscordError, check_edit, check_react, check_send, check_view
from .models import EPHEMERAL, JSON, LOADING, Attachment, Channel
from .records import Message
from .rest_io import json_response, no_content, read_body

if TYPE_CHECKING:
    from .state import LoopbackState

NONCE_WINDOW_S = 300.0  # how long Discord remembers a message's nonce for `enforce_nonce`
UPLOAD_TOO_LARGE = (413, 40005, "Request entity too large")
_MENTION = re.compile(r"<@!?(\d+)>")


def check_sizes(files: list[tuple[int, Attachment]], limit: int) -> None:
    if any(a.size > limit for _, a in files):
        raise DiscordError(*UPLOAD_TOO_LARGE)


def apply_payload(
    server: LoopbackState, msg: Message, payload: JSON, files: list[tuple[int, Attachment]], *, create: bool
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


def _channel(server: LoopbackState, request: web.Request) -> Channel | None:
    return server.channels.get(int(request.match_info["cid"]))


def _message_or_404(server: LoopbackState, request: web.Request, channel: Channel) -> Message:
    msg = server.messages.get(int(request.match_info["mid"]))
    if msg is None or msg.deleted or msg.channel_id != channel.id or msg.ephemeral:
        raise DiscordError(404, 10008, "Unknown Message")
    return msg


def upload_limit(server: LoopbackState, channel: Channel) -> int:
    """Per-file limit for the bot's posts in `channel`: its guild's (boost tier), else the default."""
    guild = server.guilds.get(channel.guild_id) if channel.guild_id else None
    return guild.upload_limit if guild else server.default_upload_limit


def unarchive_on_post(server: LoopbackState, channel: Channel) -> None:
    """Discord: a message in an archived (unlocked) thread unarchives it."""
    if channel.is_thread and channel.archived:
        server.update_channel(channel, archived=False)


async def get_channel(server: LoopbackState, request: web.Request) -> web.Response:
    return json_response(check_view(_channel(server, request)).payload())


async def typing(server: LoopbackState, request: web.Request) -> web.Response:
    check_view(_channel(server, request))
    return no_content()


async def post_message(server: LoopbackState, request: web.Request) -> web.Response:
    payload, files = await read_body(request, server)
    found = _channel(server, request)
    recipient = server.users.get(found.recipient_id) if found and found.recipient_id else None
    channel = check_send(found, files=bool(files), recipient=recipient)
    check_sizes(files, upload_limit(server, channel))
    if not (payload.get("content") or payload.get("embeds") or files or payload.get("components")):
        raise DiscordError(400, 50006, "Cannot send an empty message")
    nonce = payload.get("nonce")
    if nonce is not None and payload.get("enforce_nonce"):
        # Discord: the same author and nonce within a few minutes returns the first message.
        for earlier in server.channel_messages(channel.id):
            recent = server.now() - earlier.created_at < NONCE_WINDOW_S
            if earlier.nonce == str(nonce) and earlier.author.id == server.bot_user.id and recent:
                return json_response(earlier.payload())
    unarchive_on_post(server, channel)
    msg = server._new_message(channel.id, server.bot_user)
    msg.nonce = None if nonce is None else str(nonce)
    apply_payload(server, msg, payload, files, create=True)
    if payload.get("message_reference"):
        msg.type = 19
    server._store_message(msg, "create", dispatch=True)
    return json_response(msg.payload())


async def channel_message(server: LoopbackState, request: web.Request, method: str) -> web.Response:
    channel = check_view(_channel(server, request))
    msg = _message_or_404(server, request, channel)
    if method == "GET":
        return json_response(msg.payload())
    check_edit(channel)
    if msg.author.id != server.bot_user.id and method == "PATCH":
        raise DiscordError(403, 50005, "Cannot edit a message authored by another user")
    if method == "DELETE":
        server._delete_message(msg)
        return no_content()
    payload, files = await read_body(request, server)
    check_sizes(files, upload_limit(server, channel))
    apply_payload(server, msg, payload, files, create=False)
    server._touch_message(msg, "edit")
    return json_response(msg.payload())


async def reaction(server: LoopbackState, request: web.Request, *, add: bool) -> web.Response:
    channel = check_react(_channel(server, request))
    msg = _message_or_404(server, request, channel)
    who = request.match_info["who"]
    user_id = server.bot_user.id if who == "@me" else int(who)
    emoji = request.match_info["emoji"]
    if add and who != "@me":
        raise DiscordError(405, 0, "405: Method Not Allowed")
    server._set_reaction(msg, emoji, user_id, add=add)
    return no_content()
