"""The bot as a real process: `python -m bot` pointed at a loopback Discord server.

Used by the fault tests (SIGKILL mid-generation) and `python -m bench load` (the bot's own resident
memory, apart from the server's). The child runs in `root` (so no stray `.env` is read) with the
repository on PYTHONPATH, `MODEL_ID=tiny` from `cache_dir`, SQLite at `root/imagine.db` and images in
`root/images`; its stdout and stderr go to `root/bot-<n>.log`::

    proc = await BotProcess.start(server, root, cache_dir, env={"IMAGES_PER_HOUR": "3"})
    ...drive it through `server`...
    proc.kill()                 # SIGKILL: no clean-up runs
    proc = await BotProcess.start(server, root, cache_dir)   # same database and images
    await proc.stop()           # SIGTERM, then wait
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from testkit import REPO_ROOT
from testkit.discord_loopback import DiscordLoopback

READY_TIMEOUT_S = 60.0


def bot_env(
    server: DiscordLoopback,
    root: Path,
    cache_dir: Path,
    extra: Mapping[str, str] | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment `python -m bot` runs with against `server`, based on `base` (default: this
    process's environment) less its Discord, database and output settings."""
    base = os.environ if base is None else base
    env = {k: v for k, v in base.items() if not k.startswith(("DISCORD_", "DATABASE_", "OUTPUT_"))}
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, (str(REPO_ROOT), base.get("PYTHONPATH")))),
        HF_HUB_OFFLINE="1",
        DISCORD_TOKEN=server.token,
        DISCORD_API_BASE=server.api_base,
        DISCORD_GATEWAY_URL=server.gateway_url,
        MODEL_ID="tiny",
        MODEL_CACHE_DIR=str(cache_dir),
        DEVICE="cpu",
        DATABASE_PATH=str(root / "imagine.db"),
        OUTPUT_DIR=str(root / "images"),
        LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra or {})
    return env


@dataclass
class BotProcess:
    """A running `python -m bot` child."""

    popen: subprocess.Popen[bytes]
    log_path: Path
    _log: IO[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid

    @classmethod
    async def start(
        cls,
        server: DiscordLoopback,
        root: Path,
        cache_dir: Path,
        *,
        env: Mapping[str, str] | None = None,
        base_env: Mapping[str, str] | None = None,
        timeout: float = READY_TIMEOUT_S,  # noqa: ASYNC109
    ) -> BotProcess:
        """Start the bot and return once it has checked (and if needed synced) its commands and
        identified (fresh counts, so this also works for a restart against the same server)."""
        checks, identifies = len(server.command_fetches), len(server.identifies)
        proc = cls._spawn(bot_env(server, root, cache_dir, env, base_env), root)
        popen = proc.popen
        exited = asyncio.ensure_future(asyncio.to_thread(popen.wait))
        ready = asyncio.ensure_future(
            server.wait_for(
                lambda: (
                    len(server.command_fetches) > checks
                    and len(server.identifies) > identifies
                    and server.session is not None
                    and server.session.conn is not None
                ),
                timeout,
            )
        )
        try:
            done, _ = await asyncio.wait({exited, ready}, return_when=asyncio.FIRST_COMPLETED)
            if ready not in done:
                raise RuntimeError(
                    f"the bot exited ({popen.returncode}) before it was ready:\n{proc.log_text()}"
                )
            ready.result()
        except BaseException:
            ready.cancel()
            proc.kill()
            raise
        finally:
            if not exited.done():
                exited.cancel()  # the thread stays in popen.wait(); it ends with the process
        return proc

    @classmethod
    def _spawn(cls, env: dict[str, str], root: Path) -> BotProcess:
        """Start `python -m bot` in `root`, logging to the next free `bot-<n>.log` (returns at once)."""
        root.mkdir(parents=True, exist_ok=True)
        n = len(list(root.glob("bot-*.log"))) + 1
        log_path = root / f"bot-{n}.log"
        log = log_path.open("wb")
        popen = subprocess.Popen(
            [sys.executable, "-m", "bot"],
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        return cls(popen, log_path, log)

    def log_text(self) -> str:
        """Everything the process wrote so far."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def rss_mib(self) -> float:
        """Resident memory of the bot process (VmRSS), in MiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS in /proc status")

    def kill(self) -> None:
        """SIGKILL and reap: the process gets no chance to clean up."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait()
        self._log.close()

    async def stop(self, timeout: float = 30.0) -> int:  # noqa: ASYNC109
        """SIGTERM (the bot closes cleanly), wait; SIGKILL if it does not end in time. Returns the code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.popen.wait, timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        code = await asyncio.to_thread(self.popen.wait)
        with contextlib.suppress(OSError):
            self._log.close()
        return code
