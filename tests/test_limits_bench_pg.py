"""`python -m bench limits --postgres` on the test PostgreSQL server, with tiny sizes: every figure is
reported, two OS processes never overspend, nothing is left behind, no password reaches RESULTS.md."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from bench.config import load_settings
from bench.limits import main, run_postgres, throwaway_server
from tests.pg_fixtures import asyncpg

pytest_plugins = ("tests.pg_fixtures",)

KEYS = ("reservations_per_s", "concurrent_reservations_per_s", "two_process_reservations_per_s")


def _with_password(url: str, password: str) -> str:
    """`url` with a password added (the test server trusts local logins, so any password works)."""
    parts = urlsplit(url)
    user = parts.username or "postgres"
    return parts._replace(netloc=f"{user}:{password}@{parts.hostname}:{parts.port}").geturl()


async def _bench_schemas(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'bench_limits_%'")
    finally:
        await conn.close()
    return [r["nspname"] for r in rows]


def test_postgres_run_reports_every_figure_and_never_overspends(
    pg_server_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "RESULTS.md"
    monkeypatch.setenv("BENCH_RESULTS", str(results))
    url = _with_password(pg_server_url, "s3cret-pw")
    argv = ["--postgres", url, "--requests", "200", "--users", "5", "--tasks", "4"]
    assert main(argv, load_settings()) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["backend"] == "postgres" and figures["processes"] == 2
    assert figures["overspent"] == 0
    for key in KEYS:
        assert figures[key] > 0
    # 40 requests a member, ~100 images, 10 minutes of fake time: the hour limit (25) refuses most
    for prefix in ("", "concurrent_", "two_process_"):
        assert 0.1 < figures[f"{prefix}granted_fraction"] < 0.6
    text = results.read_text()
    assert text.count("## limits") == 1 and '"backend": "postgres"' in text
    assert "s3cret-pw" not in text and "--requests 200" in text
    assert asyncio.run(_bench_schemas(pg_server_url)) == []  # every run's schema dropped


def test_database_url_is_used_when_no_url_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BENCH_RESULTS", str(tmp_path / "RESULTS.md"))
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres:pw@127.0.0.1:1/nowhere")  # nothing listens on 1
    assert main(["--postgres", "--requests", "10", "--users", "2", "--tasks", "2"], load_settings()) == 2
    err = capsys.readouterr().err
    assert "cannot reach PostgreSQL at postgresql://postgres:***@127.0.0.1:1/nowhere" in err
    assert not (tmp_path / "RESULTS.md").exists()


async def test_throwaway_server_serves_the_run_and_is_gone_afterwards(pg_server_url: str) -> None:
    with throwaway_server() as url:
        figures = await run_postgres(url, count=60, users=3, tasks=2, seed=0, settings=load_settings())
    assert figures["overspent"] == 0 and isinstance(figures["two_process_reservations_per_s"], float)
    with pytest.raises(OSError):
        await asyncpg.connect(url, timeout=5)
