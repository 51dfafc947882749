"""The slash commands and the handlers of clicks and reactions, one module per feature.

Every command is registered one way: `all_commands(services)` builds them and `ImagineBot.setup_hook`
adds them to the tree. `guild_only` and `default_permissions` sit on the commands and groups themselves.
"""

from __future__ import annotations

from typing import Any

from discord import app_commands

from bot.commands.admin import admin_commands
from bot.commands.animate import animate_commands
from bot.commands.blend import blend_commands
from bot.commands.describe import DescribeCommand, describe_commands
from bot.commands.edit_words import edit_commands
from bot.commands.imagine import imagine_commands
from bot.commands.job_controls import job_control_commands
from bot.commands.member import member_commands
from bot.commands.prefer import prefer_commands
from bot.commands.settings import settings_commands
from bot.services import Services


def all_commands(
    services: Services,
) -> list[app_commands.Command[Any, Any, Any] | app_commands.Group | app_commands.ContextMenu]:
    """Every application command the bot offers, built over its services."""
    return [
        *imagine_commands(services),
        *animate_commands(services),
        *edit_commands(services),
        *blend_commands(services),
        *member_commands(services),
        *job_control_commands(services),
        *describe_commands(services, DescribeCommand(services)),
        *admin_commands(services),
        *settings_commands(services),
        *prefer_commands(services),
    ]
