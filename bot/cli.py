"""The command line: `imagine-bot` / `python -m bot` [--check | --version | --help].

Without options it starts the bot (`bot.startup`). `--check` runs the start-up checks once, one line
each (✓ or ✗), and exits 0 when all passed, 1 otherwise; it logs in over REST only (no gateway) and
downloads nothing. Bad settings exit 2 with one line saying what to set.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from importlib import metadata

from bot.logging_setup import configure_logging, quiet_libraries, quiet_ml_libraries
from bot.preflight import check_database, check_device, check_model, check_output, discord_login
from bot.settings import Settings, SettingsError, load_settings
from bot.startup_base import StartupError

PROG = "imagine-bot"
OK, FAILED = "✓", "✗"


def version() -> str:
    """The installed package's version (the source tree's pyproject version when run uninstalled)."""
    try:
        return metadata.version("imagine-bot")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def parser() -> argparse.ArgumentParser:
    """The argument parser: every setting comes from the environment and `.env`, not from flags."""
    p = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "A Discord bot that turns /imagine into Stable Diffusion pictures on your own GPU. "
            "Settings come from the environment and a .env file (see .env.example); "
            "DISCORD_TOKEN is the only one required."
        ),
        epilog="Without options: start the bot. Stop it with SIGTERM or Ctrl-C (running jobs finish first).",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="check settings, the token (a login, no gateway), the model, the device, the database and "
        "the output folder, one line each; exit 0 if all pass, 1 if not",
    )
    p.add_argument("--version", action="version", version=f"{PROG} {version()}")
    return p


async def _checks(settings: Settings) -> list[tuple[str, Callable[[], Awaitable[str]]]]:
    async def login() -> str:
        from bot.startup import apply_endpoints

        apply_endpoints(settings)
        identity = await discord_login(settings)
        app = identity.application_id
        return f"logs in as {identity.name} (application {app}); invite: {identity.invite_url}"

    async def sync(check: Callable[[Settings], str]) -> str:
        return check(settings)

    async def device() -> str:
        quiet_ml_libraries()  # the device check imports torch and diffusers
        return check_device(settings)

    return [
        ("token", login),
        ("model", lambda: sync(check_model)),
        ("device", device),
        ("database", lambda: check_database(settings)),
        ("output", lambda: sync(check_output)),
    ]


async def run_checks(settings: Settings, out: Callable[[str], None]) -> bool:
    """Every check, one line each through `out`; True when all passed."""
    passed = True
    out(f"{OK} settings: valid (model {settings.model_id}, device {settings.device})")
    for name, check in await _checks(settings):
        try:
            line = await check()
        except StartupError as exc:
            passed = False
            out(f"{FAILED} {name}: {exc}")
        else:
            out(f"{OK} {name}: {line}")
    return passed


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (2: bad settings, 1: a check failed or could not start)."""
    args = parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        if args.check:
            print(f"{FAILED} settings: {exc}")
            return 1
        print(f"{PROG}: cannot start: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
    quiet_libraries()
    if args.check:
        ok = asyncio.run(run_checks(settings, lambda line: print(line, flush=True)))
        return 0 if ok else 1
    from bot.startup import start

    return start(settings)
