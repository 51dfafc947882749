"""The cheap checks before the expensive start: the token (a REST login, no gateway), the model's
whereabouts (found, or where it would download from), the device, the database and the output folder.

Each returns one line describing what it found, or raises `StartupError` with one line naming what to
fix (never the token). `imagine-bot --check` prints them all; start-up (`bot.startup`) runs them in
its cheap-first order and stops at the first failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from dataclasses import dataclass

import aiohttp
import discord
import discord.http

from bot.settings import Settings
from bot.startup_base import StartupError, open_storage

LOGIN_TIMEOUT_S = 20.0

# What the bot does in a channel: read it, post results and messages (also in threads), attach the
# PNGs. Nothing else (it adds no reactions, embeds no links, reads no history).
BOT_PERMISSIONS = discord.Permissions(
    view_channel=True, send_messages=True, send_messages_in_threads=True, attach_files=True
)
INVITE_SCOPES = ("bot", "applications.commands")


@dataclass(frozen=True)
class DiscordIdentity:
    """Who the token logs in as."""

    user_id: int
    name: str
    application_id: int

    @property
    def invite_url(self) -> str:
        """The invite link with the least permissions the bot uses."""
        return invite_url(self.application_id)


def invite_url(application_id: int) -> str:
    """The OAuth2 URL that adds the bot (with `BOT_PERMISSIONS`) and its slash commands to a server."""
    return discord.utils.oauth_url(application_id, permissions=BOT_PERMISSIONS, scopes=INVITE_SCOPES)


def discord_api_base(settings: Settings) -> str:
    """The REST root in use (DISCORD_API_BASE, else discord.py's)."""
    return settings.discord_api_base or discord.http.Route.BASE


async def discord_login(settings: Settings) -> DiscordIdentity:
    """Log in over REST only (`GET /users/@me`, then the application), with no gateway connection."""
    http = discord.http.HTTPClient(asyncio.get_running_loop())
    where = discord_api_base(settings)
    try:
        user = await asyncio.wait_for(http.static_login(settings.discord_token), LOGIN_TIMEOUT_S)
        app = await asyncio.wait_for(http.application_info(), LOGIN_TIMEOUT_S)
    except discord.LoginFailure:
        raise StartupError(
            "Discord refused the token (401): copy the bot token again from the developer portal "
            "into DISCORD_TOKEN"
        ) from None
    except discord.HTTPException as exc:
        raise StartupError(f"Discord answered the login with HTTP {exc.status} at {where}") from None
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        reason = type(exc).__name__ if isinstance(exc, TimeoutError) else (str(exc) or type(exc).__name__)
        raise StartupError(
            f"cannot reach Discord at {where} ({reason}): check the network (or DISCORD_API_BASE)"
        ) from None
    finally:
        with contextlib.suppress(Exception):
            await http.close()
    return DiscordIdentity(int(user["id"]), str(user.get("username", "?")), int(app["id"]))


def check_model(settings: Settings) -> str:
    """Where the model loads from, without loading or downloading it."""
    from generation.pipelines.source import ModelNotFound, default_cache_dir, locate_model

    try:
        tiny_cache = settings.model_cache_dir or default_cache_dir()
        source = locate_model(settings.model_id, settings.model_cache_dir, tiny_cache)
    except ModelNotFound as exc:
        raise StartupError(str(exc)) from None
    return source.describe()


def check_device(settings: Settings) -> str:
    """The device exists (CUDA or MPS when asked for), with its memory."""
    if settings.generation_backend == "ray":
        return f"{settings.device} on the Ray cluster's GPU workers (not checked from here)"
    from generation.pipelines.devices import describe_device

    try:
        return describe_device(settings.device)
    except ValueError as exc:
        raise StartupError(f"{exc}: set DEVICE=cpu or auto, or install the CUDA build of torch") from None


async def check_database(settings: Settings) -> str:
    """The store opens (and its schema is brought up to date, as a start would)."""
    from storage.interface import StorageError
    from storage.schema import load_migrations

    dialect = "postgres" if settings.database_url else "sqlite"
    try:
        async with open_storage(settings):
            pass
    except StorageError as exc:
        raise StartupError(str(exc)) from None
    where = "PostgreSQL at DATABASE_URL" if settings.database_url else str(settings.database_path)
    return f"{where} opens; schema at version {load_migrations(dialect)[-1].version} (current)"


def check_output(settings: Settings) -> str:
    """OUTPUT_DIR exists (or can be made) and a file can be written in it."""
    folder = settings.output_dir
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise StartupError(
            f"OUTPUT_DIR {folder} is not writable ({exc.strerror or exc}): fix its permissions or point "
            "OUTPUT_DIR elsewhere"
        ) from None
    return f"{folder.resolve()} is writable"
