"""The REST routes' request bodies (JSON, or multipart `payload_json` + files, read once per
request) and responses (JSON exactly as Discord sends it, 204 No Content)."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .models import JSON, Attachment

if TYPE_CHECKING:
    from .state import LoopbackState

_BODY = "loopback_body"


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """Content-Type exactly application/json (discord.py reads '; charset=…' bodies as text)."""
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def no_content() -> web.Response:
    return web.Response(status=204)


async def read_body(request: web.Request, server: LoopbackState) -> tuple[JSON, list[tuple[int, Attachment]]]:
    """JSON body, or multipart `payload_json` + `files[n]` parts → (payload, [(n, attachment)]).
    Read once per request (the middleware's spec check reads it first)."""
    cached: tuple[JSON, list[tuple[int, Attachment]]] | None = request.get(_BODY)
    if cached is not None:
        return cached
    parsed = await _parse_body(request, server)
    request[_BODY] = parsed
    return parsed


async def _parse_body(
    request: web.Request, server: LoopbackState
) -> tuple[JSON, list[tuple[int, Attachment]]]:
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
