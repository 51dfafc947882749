"""The gateway's socket and session: an ordered outgoing queue (zlib-stream frames when asked for)
and a resumable session that replays missed dispatches."""

from __future__ import annotations

import asyncio
import contextlib
import json
import zlib
from dataclasses import dataclass, field

from aiohttp import web

from .models import JSON

REPLAY_BUFFER = 5_000


class GatewayConnection:
    """One websocket: an ordered outgoing queue drained by a writer task (so sync code can send)."""

    def __init__(self, ws: web.WebSocketResponse, compress: bool) -> None:
        self.ws = ws
        self._z = zlib.compressobj() if compress else None
        self._queue: asyncio.Queue[JSON | None] = asyncio.Queue()
        self._writer = asyncio.create_task(self._write_loop())

    def send(self, payload: JSON) -> None:
        self._queue.put_nowait(payload)

    async def _write_loop(self) -> None:
        while True:
            payload = await self._queue.get()
            if payload is None:
                return
            raw = json.dumps(payload).encode()
            try:
                if self._z is not None:
                    await self.ws.send_bytes(self._z.compress(raw) + self._z.flush(zlib.Z_SYNC_FLUSH))
                else:
                    await self.ws.send_str(raw.decode())
            except (ConnectionError, RuntimeError):
                return

    async def close(self, code: int) -> None:
        self._queue.put_nowait(None)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._writer, timeout=2.0)
        await self.ws.close(code=code)

    async def stop(self) -> None:
        self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer


@dataclass
class GatewaySession:
    """A Discord session: survives a dropped socket and replays missed dispatches on RESUME."""

    id: str
    identify: JSON
    seq: int = 0
    buffer: list[tuple[int, JSON]] = field(default_factory=list)
    conn: GatewayConnection | None = None

    def dispatch(self, event: str, data: JSON) -> int:
        self.seq += 1
        payload: JSON = {"op": 0, "t": event, "s": self.seq, "d": data}
        self.buffer.append((self.seq, payload))
        del self.buffer[:-REPLAY_BUFFER]
        if self.conn is not None:
            self.conn.send(payload)
        return self.seq
