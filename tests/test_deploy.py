"""deploy/: no image can be built here, so each file is checked by the tool that reads it: the
Dockerfile by hadolint, the compose file by `docker-compose config`, the systemd unit by
`systemd-analyze verify`; then the promises each makes (non-root, volumes, health check, GPU, the
stop timeout above the shutdown grace). A missing tool skips with its reason, except in CI."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bot.settings import Settings

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
IN_CI = os.environ.get("CI", "").lower() == "true"


def tool(name: str, *candidates: Path) -> str:
    """The tool's path: `candidates` first, then PATH, then next to this Python; else skip (fail in CI)."""
    for path in (*candidates, Path(sys.executable).parent / name):
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    found = shutil.which(name)
    if found:
        return found
    reason = f"{name} is not installed (scripts/test.sh installs it)"
    if IN_CI:
        pytest.fail(f"CI=true needs {name}: {reason}", pytrace=False)
    pytest.skip(reason)


def run(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_dockerfile_passes_hadolint_and_runs_as_non_root_with_a_health_check() -> None:
    result = run(tool("hadolint"), "--no-color", str(DEPLOY / "Dockerfile"))
    assert result.returncode == 0, result.stdout + result.stderr
    text = (DEPLOY / "Dockerfile").read_text()
    bases = re.findall(r"^FROM (\S+)", text, re.M)
    assert bases and all(
        b.startswith("nvidia/cuda:") and re.search(r":\d+\.\d+\.\d+-runtime-", b) for b in bases
    )
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert "COPY --from=builder /opt/imagine/.venv" in text
    assert re.search(r'^VOLUME \["/data", "/models"\]', text, re.M)
    assert re.search(r"^HEALTHCHECK .*\n.*/healthz", text, re.M)
    assert "MODEL_CACHE_DIR=/models" in text and "HEALTH_PORT=8080" in text


def test_compose_config_is_valid_with_a_gpu_and_an_optional_postgres(tmp_path: Path) -> None:
    compose = tool(
        "docker-compose",
        *([Path(os.environ["DOCKER_COMPOSE"])] if "DOCKER_COMPOSE" in os.environ else []),
        REPO / ".venv-compose/bin/docker-compose",
    )
    (tmp_path / "deploy").mkdir()
    shutil.copy(DEPLOY / "compose.yaml", tmp_path / "deploy" / "compose.yaml")
    (tmp_path / ".env").write_text("DISCORD_TOKEN=from-dot-env\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "COMPOSE_", "DISCORD_"))}
    base = [compose, "-f", "deploy/compose.yaml"]
    plain = run(*base, "config", cwd=tmp_path, env=env)
    assert plain.returncode == 0, plain.stderr
    assert "driver: nvidia" in plain.stdout and "- gpu" in plain.stdout
    assert "DISCORD_TOKEN: from-dot-env" in plain.stdout
    assert "data:/data" in plain.stdout and "models:/models" in plain.stdout
    # v1's `config` lists every service; the profile is what keeps PostgreSQL out of a plain `up`.
    postgres = plain.stdout[plain.stdout.index("\n  postgres:") :]
    assert re.search(r"^    profiles:\n    - postgres$", postgres, re.M), plain.stdout
    assert "profiles:" not in plain.stdout[: plain.stdout.index("\n  postgres:")]


def test_systemd_unit_verifies_and_outlasts_the_shutdown_grace(tmp_path: Path) -> None:
    analyze = tool("systemd-analyze")
    unit = DEPLOY / "imagine-bot.service"
    parsed = configparser.ConfigParser(strict=False, interpolation=None)
    parsed.optionxform = str  # type: ignore[assignment,method-assign]
    parsed.read(unit)
    service = parsed["Service"]
    # A root with the system's own units, the unit, and its ExecStart (verify checks it exists).
    root = tmp_path / "root"
    system_units = next(
        p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir()
    )
    shutil.copytree(system_units, root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(unit, root / "etc/systemd/system" / unit.name)
    exec_start = root / service["ExecStart"].split()[0].lstrip("/")
    exec_start.parent.mkdir(parents=True)
    exec_start.write_text("#!/bin/sh\n")
    exec_start.chmod(0o755)
    result = run(analyze, "verify", f"--root={root}", f"/etc/systemd/system/{unit.name}")
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr
    assert service["Restart"] == "on-failure"
    assert service["User"] not in ("", "root") and service["KillSignal"] == "SIGTERM"
    assert float(service["TimeoutStopSec"]) > Settings(discord_token="x").shutdown_grace_s
