"""Interaction routes: the callback (with Discord's 3-second window and one-answer rule) and the
interaction webhook (followups, @original; 15-minute tokens), in the channel's state."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from .channel_rules import THREAD_ARCHIVED, THREAD_LOCKED, UNKNOWN_CHANNEL, DiscordError
from .models import EPHEMERAL, INTERACTION_ACK_WINDOW_S, INTERACTION_TOKEN_TTL_S, JSON, LOADING, Channel
from .records import CallbackAttempt, InteractionRecord, Message
from .rest_io import json_response, no_content, read_body
from .rest_messages import apply_payload, check_sizes, unarchive_on_post

if TYPE_CHECKING:
    from .state import LoopbackState


def _interaction_by_token(server: LoopbackState, request: web.Request) -> InteractionRecord:
    if int(request.match_info["app"]) != server.application_id:
        raise DiscordError(404, 10015, "Unknown Webhook")
    rec = server.interactions_by_token.get(request.match_info["token"])
    if rec is None:
        raise DiscordError(404, 10015, "Unknown Webhook")
    if rec.expired or server.now() - rec.dispatched_at > INTERACTION_TOKEN_TTL_S:
        rec.expired = True
        raise DiscordError(401, 50027, "Invalid Webhook Token")
    return rec


def _channel_of(server: LoopbackState, rec: InteractionRecord, *, editing: bool, ephemeral: bool) -> Channel:
    """The interaction's channel, if the bot's answer can go there: interaction answers need no
    channel permission, but a deleted channel, a locked thread (and an edit in an archived one)
    refuse public messages as they do in channels."""
    channel = server.channels.get(rec.channel_id)
    if channel is None:
        raise DiscordError(*UNKNOWN_CHANNEL)
    if not ephemeral and channel.locked:
        raise DiscordError(*THREAD_LOCKED)
    if not ephemeral and editing and channel.archived:
        raise DiscordError(*THREAD_ARCHIVED)
    return channel


async def callback(server: LoopbackState, request: web.Request) -> web.Response:
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
    if (ctype == 8) != (rec.type == 4):  # Discord: autocomplete is answered with choices, and only it
        rec.attempts.append(CallbackAttempt(ctype, now, 400, 50035))
        why = f"Invalid Form Body: callback type {ctype} for interaction type {rec.type}"
        raise DiscordError(400, 50035, why)
    data: JSON = payload.get("data") or {}
    check_sizes(files, rec.attachment_size_limit)
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


async def followup(server: LoopbackState, request: web.Request) -> web.Response:
    rec = _interaction_by_token(server, request)
    if not rec.acknowledged:
        raise DiscordError(404, 10015, "Unknown Webhook")
    payload, files = await read_body(request, server)
    check_sizes(files, rec.attachment_size_limit)
    orig = rec.original
    fills_original = orig is not None and orig.loading and not orig.deleted and rec.callback_type == 5
    ephemeral = (
        orig.ephemeral if fills_original and orig else bool(int(payload.get("flags") or 0) & EPHEMERAL)
    )
    channel = _channel_of(server, rec, editing=fills_original, ephemeral=ephemeral)
    if not ephemeral and not fills_original:
        unarchive_on_post(server, channel)
    if fills_original and orig is not None:
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


def _webhook_target(server: LoopbackState, rec: InteractionRecord, mid: str) -> Message:
    if mid == "@original":
        msg = rec.original
    else:
        msg = server.messages.get(int(mid))
        if msg is not None and msg.id not in rec.followup_ids and msg.id != rec.original_id:
            msg = None
    if msg is None or msg.deleted:
        raise DiscordError(404, 10008, "Unknown Message")
    return msg


async def webhook_message(server: LoopbackState, request: web.Request, method: str) -> web.Response:
    rec = _interaction_by_token(server, request)
    msg = _webhook_target(server, rec, request.match_info["mid"])
    if method == "GET":
        return json_response(msg.payload())
    _channel_of(server, rec, editing=True, ephemeral=msg.ephemeral)
    if method == "DELETE":
        server._delete_message(msg)
        return no_content()
    payload, files = await read_body(request, server)
    check_sizes(files, rec.attachment_size_limit)
    apply_payload(server, msg, payload, files, create=False)
    server._touch_message(msg, "edit")
    return json_response(msg.payload())
