"""An operator's first start, through the real `python -m bot` process and the loopback Discord:
`--help` and `--version` (no login), `--check` (all pass; one thing wrong), and each start-up failure
ending in one `cannot start:` line with exit status 1, no traceback and no token, in the cheap-first
order (a wrong token fails before the model is made: the empty model cache stays empty)."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from bot import startup
from bot.preflight import BOT_PERMISSIONS
from bot.settings import settings_from_mapping
from bot.startup_base import StartupError
from testkit.bot_process import bot_env
from testkit.discord_loopback import DiscordLoopback

WRONG_TOKEN = "wrong-token-that-must-never-be-printed-1234567890"
RUN_TIMEOUT_S = 120.0


async def run_bot(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """Run `python -m bot ARGS` to its end (the loopback keeps serving meanwhile): (code, output)."""
    await asyncio.to_thread(cwd.mkdir, parents=True, exist_ok=True)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args, cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT_S)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def assert_one_cannot_start(code: int, output: str, secret: str, *needles: str) -> str:
    """Exit 1, exactly one `cannot start:` line containing every needle, no traceback, no secret."""
    assert code == 1, output
    lines = [line for line in output.splitlines() if "cannot start:" in line]
    assert len(lines) == 1, output
    assert "Traceback" not in output, output
    assert secret not in output, output
    for needle in needles:
        assert needle in lines[0], output
    return lines[0]


@pytest.fixture
async def server() -> Any:
    async with DiscordLoopback() as s:
        yield s


def _env(server: DiscordLoopback, tmp_path: Path, **extra: str) -> dict[str, str]:
    return bot_env(server, tmp_path / "run", tmp_path / "models", extra)


async def test_help_and_version_need_no_token_and_no_login(server: DiscordLoopback, tmp_path: Path) -> None:
    env = _env(server, tmp_path)
    del env["DISCORD_TOKEN"]
    code, out = await run_bot(["--help"], env, tmp_path / "run")
    assert code == 0 and "usage: imagine-bot" in out and "--check" in out, out
    code, out = await run_bot(["--version"], env, tmp_path / "run")
    assert code == 0 and out.startswith("imagine-bot "), out
    assert server.requests == [] and server.gateway_connects == 0


async def test_wrong_token_fails_before_the_model_is_made(server: DiscordLoopback, tmp_path: Path) -> None:
    code, out = await run_bot([], _env(server, tmp_path, DISCORD_TOKEN=WRONG_TOKEN), tmp_path / "run")
    assert_one_cannot_start(code, out, WRONG_TOKEN, "Discord refused the token", "DISCORD_TOKEN")
    assert [r.path for r in server.requests] == ["/users/@me"] and server.requests[0].status == 401
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir()), "a model was made"
    assert server.gateway_connects == 0


async def test_wrong_token_never_calls_the_model_loader(
    server: DiscordLoopback, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[object] = []
    monkeypatch.setattr(startup, "load_engine", lambda settings: loads.append(settings))
    settings = settings_from_mapping(_env(server, tmp_path, DISCORD_TOKEN=WRONG_TOKEN))
    with server.patched_discord(), pytest.raises(StartupError, match="Discord refused the token"):
        await startup.run(settings)
    assert loads == []
    assert not (tmp_path / "run" / "imagine.db").exists(), "storage opened before the login was checked"


async def test_unreachable_discord_is_one_line(server: DiscordLoopback, tmp_path: Path) -> None:
    api = f"http://127.0.0.1:{closed_port()}/api/v10"
    code, out = await run_bot([], _env(server, tmp_path, DISCORD_API_BASE=api), tmp_path / "run")
    assert_one_cannot_start(code, out, server.token, "cannot reach Discord", api)


async def test_missing_model_folder_fails_after_login_and_db(server: DiscordLoopback, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    code, out = await run_bot([], _env(server, tmp_path, MODEL_ID=str(missing)), tmp_path / "run")
    line = assert_one_cannot_start(code, out, server.token, "MODEL_ID folder", str(missing), "does not exist")
    assert out.index("logged in to Discord") < out.index("database ready") < out.index(line)
    assert server.gateway_connects == 0


async def test_cuda_asked_for_without_cuda(server: DiscordLoopback, tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: DEVICE=cuda is valid here")
    code, out = await run_bot([], _env(server, tmp_path, DEVICE="cuda"), tmp_path / "run")
    assert_one_cannot_start(code, out, server.token, "CUDA is not available", "DEVICE")
    assert "loading model" not in out and server.gateway_connects == 0


async def test_unusable_database_path(server: DiscordLoopback, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    db = blocker / "imagine.db"
    code, out = await run_bot([], _env(server, tmp_path, DATABASE_PATH=str(db)), tmp_path / "run")
    assert_one_cannot_start(code, out, server.token, str(db))
    assert "loading model" not in out and server.gateway_connects == 0


async def test_debug_level_shows_the_trace_but_not_the_token(server: DiscordLoopback, tmp_path: Path) -> None:
    env = _env(server, tmp_path, DISCORD_TOKEN=WRONG_TOKEN, LOG_LEVEL="DEBUG")
    code, out = await run_bot([], env, tmp_path / "run")
    assert code == 1 and "Traceback" in out and WRONG_TOKEN not in out, out


async def test_check_passes_on_tiny_without_a_gateway(server: DiscordLoopback, tmp_path: Path) -> None:
    code, out = await run_bot(["--check"], _env(server, tmp_path), tmp_path / "run")
    lines = out.strip().splitlines()
    names = [line.split(":", 1)[0] for line in lines]
    assert code == 0, out
    assert names == ["✓ settings", "✓ token", "✓ model", "✓ device", "✓ database", "✓ output"], out
    assert f"permissions={BOT_PERMISSIONS.value}" in out and str(server.application_id) in out
    assert "no download" in out and server.token not in out
    assert server.gateway_connects == 0 and not server.command_syncs


async def test_check_names_the_one_thing_wrong(server: DiscordLoopback, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    code, out = await run_bot(["--check"], _env(server, tmp_path, MODEL_ID=str(missing)), tmp_path / "run")
    lines = out.strip().splitlines()
    assert code == 1, out
    assert [line[0] for line in lines] == ["✓", "✓", "✗", "✓", "✓", "✓"], out
    assert lines[2].startswith("✗ model: MODEL_ID folder") and str(missing) in lines[2]


async def test_check_with_bad_settings_is_one_failed_line(server: DiscordLoopback, tmp_path: Path) -> None:
    code, out = await run_bot(["--check"], _env(server, tmp_path, SAFETY="sometimes"), tmp_path / "run")
    assert code == 1 and out.strip().splitlines() == [out.strip()], out
    assert out.startswith("✗ settings: SAFETY"), out
    assert server.requests == []
