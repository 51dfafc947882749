"""Command sync only when the command tree changed, and only from one process.

Discord limits how often commands may be created, so a start that PUTs the whole tree every time (in
every process of a sharded set-up) can run into that limit. Instead each start fetches what Discord
holds and compares it with the tree's own payload; only a difference makes a PUT, and only the
process that runs shard 0 (or the only process) makes it. No state is stored: Discord's own answer
is the reference, so a new application or a wiped command list is synced on the next start.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import discord
from discord import app_commands

log = logging.getLogger(__name__)

_SERVER_FIELDS = {"id", "application_id", "version", "guild_id"}


def _canonical(value: Any) -> Any:
    """A payload with Discord's defaults dropped (false, null, empty) and permissions as strings."""
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if key in _SERVER_FIELDS or item in (None, False, [], {}):
                continue
            out[key] = str(item) if key == "default_member_permissions" else _canonical(item)
        return out
    if isinstance(value, list):
        return [_canonical(item) for item in value]
    return value


def _covers(local: Any, remote: Any) -> bool:
    """Everything the local payload says, Discord's holds too (Discord may add fields of its own)."""
    if isinstance(local, dict):
        return isinstance(remote, dict) and all(
            k in remote and _covers(v, remote[k]) for k, v in local.items()
        )
    if isinstance(local, list):
        return (
            isinstance(remote, list)
            and len(local) == len(remote)
            and all(_covers(a, b) for a, b in zip(local, remote, strict=True))
        )
    return bool(local == remote)


def commands_match(local: Sequence[Mapping[str, Any]], remote: Sequence[Mapping[str, Any]]) -> bool:
    """True when Discord's commands are the tree's: the same (name, type) set, each as the tree says."""

    def key(cmd: Mapping[str, Any]) -> tuple[str, int]:
        return str(cmd["name"]), int(cmd.get("type", 1))

    held = {key(c): _canonical(c) for c in remote}
    wanted = {key(c): _canonical(c) for c in local}
    return held.keys() == wanted.keys() and all(_covers(wanted[k], held[k]) for k in wanted)


async def sync_if_changed(
    client: discord.Client,
    tree: app_commands.CommandTree[Any],
    guild: discord.abc.Snowflake | None,
    *,
    may_sync: bool,
) -> bool:
    """Compare the tree with Discord's commands (global, or `guild`'s) and PUT it when they differ
    and `may_sync`. Returns True if it synced."""
    app_id = client.application_id
    if app_id is None:
        raise RuntimeError("the application id is unknown before login")
    local = [cmd.to_dict(tree) for cmd in tree.get_commands(guild=guild)]  # every type
    if guild is None:
        remote = await client.http.get_global_commands(app_id)
    else:
        remote = await client.http.get_guild_commands(app_id, guild.id)
    where = f"guild {guild.id}" if guild is not None else "global"
    if commands_match(local, remote):
        log.info("%d %s commands already up to date; not syncing", len(local), where)
        return False
    if not may_sync:
        log.info("%s commands differ from this version's; the process running shard 0 syncs them", where)
        return False
    synced = await tree.sync(guild=guild)
    log.info("synced %d commands (%s)", len(synced), where)
    return True
