"""The gateway websocket: HELLO, heartbeats, IDENTIFY/RESUME, sequenced dispatches (the socket and
the session are in `gateway_session`)."""

from __future__ import annotations

import json
import secrets
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from .gateway_session import GatewayConnection, GatewaySession
from .models import JSON

if TYPE_CHECKING:
    from .state import LoopbackState

HEARTBEAT_INTERVAL_MS = 41_250


async def gateway_handler(server: LoopbackState, request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(max_msg_size=0)
    await ws.prepare(request)
    conn = GatewayConnection(ws, compress=request.query.get("compress") == "zlib-stream")
    server._gateway_conns.add(conn)
    server.gateway_connects += 1
    server.gateway_queries.append(dict(request.query))
    conn.send({"op": 10, "s": None, "t": None, "d": {"heartbeat_interval": HEARTBEAT_INTERVAL_MS}})
    try:
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                continue
            await _on_message(server, conn, json.loads(msg.data))
    finally:
        server._gateway_conns.discard(conn)
        session = server.session
        if session is not None and session.conn is conn:
            session.conn = None
        await conn.stop()
        server._notify()
    return ws


async def _on_message(server: LoopbackState, conn: GatewayConnection, msg: JSON) -> None:
    op, d = msg.get("op"), msg.get("d")
    if op == 1:
        server.heartbeats += 1
        conn.send({"op": 11, "s": None, "t": None, "d": None})
    elif op == 2:
        _identify(server, conn, d)
    elif op == 6:
        _resume(server, conn, d)
    elif op == 8:
        _request_members(server, conn, d)
    server._notify()


def _identify(server: LoopbackState, conn: GatewayConnection, d: Any) -> None:
    if not isinstance(d, dict) or d.get("token") != server.token:
        conn.send({"op": 9, "s": None, "t": None, "d": False})
        return
    server.identifies.append(d)
    if server.session is not None and server.session.conn is not None and server.session.conn is not conn:
        server.session.conn.send({"op": 7, "s": None, "t": None, "d": None})
    session = GatewaySession(id=secrets.token_hex(16), identify=d, conn=conn)
    server.session = session
    ready: JSON = {
        "v": 10,
        "user": server.bot_user.payload() | {"verified": True, "mfa_enabled": False, "flags": 0},
        "guilds": [{"id": str(g), "unavailable": True} for g in server.guilds],
        "session_id": session.id,
        "session_type": "normal",
        "resume_gateway_url": server.gateway_url,
        "application": {"id": str(server.application_id), "flags": 0},
        "private_channels": [],
        "relationships": [],
        "presences": [],
        "guild_join_requests": [],
        "geo_ordered_rtc_regions": [],
    }
    if d.get("shard"):
        ready["shard"] = d["shard"]
    session.dispatch("READY", ready)
    for guild in server.guilds.values():
        session.dispatch("GUILD_CREATE", guild.payload())
    server.ready_sent = True


def _resume(server: LoopbackState, conn: GatewayConnection, d: Any) -> None:
    session = server.session
    if (
        session is None
        or not isinstance(d, dict)
        or d.get("session_id") != session.id
        or d.get("token") != server.token
    ):
        conn.send({"op": 9, "s": None, "t": None, "d": False})
        return
    server.resumes.append(d)
    last = d.get("seq") or 0
    session.conn = conn
    for seq, payload in session.buffer:
        if seq > last:
            conn.send(payload)
    session.dispatch("RESUMED", {})


def _request_members(server: LoopbackState, conn: GatewayConnection, d: Any) -> None:
    if server.session is None or not isinstance(d, dict):
        return
    guild = server.guilds.get(int(d["guild_id"]))
    if guild is None:
        return
    data: JSON = {
        "guild_id": str(guild.id),
        "members": [m.payload() for m in guild.members.values()],
        "chunk_index": 0,
        "chunk_count": 1,
        "not_found": [],
    }
    if d.get("nonce") is not None:
        data["nonce"] = d["nonce"]
    server.session.dispatch("GUILD_MEMBERS_CHUNK", data)
