"""What a channel allows the bot, with the errors Discord answers.

`check_send`, `check_edit` and `check_react` raise `DiscordError` the way Discord does: 404 10003 for a
channel that is gone, 403 50001 Missing Access without View Channel, 403 50013 Missing Permissions,
403 50007 for a DM to a member whose DMs are closed, 400 50083 for an archived thread, 400 160005 for
a locked one.
"""

from __future__ import annotations

from .models import Channel, User
from .permissions import (
    ADD_REACTIONS,
    ADMINISTRATOR,
    ATTACH_FILES,
    READ_MESSAGE_HISTORY,
    SEND_MESSAGES,
    SEND_MESSAGES_IN_THREADS,
    VIEW_CHANNEL,
)


class DiscordError(Exception):
    """Turned into Discord's JSON error body by the REST middleware."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


UNKNOWN_CHANNEL = (404, 10003, "Unknown Channel")
MISSING_ACCESS = (403, 50001, "Missing Access")
MISSING_PERMISSIONS = (403, 50013, "Missing Permissions")
CANNOT_DM = (403, 50007, "Cannot send messages to this user")
THREAD_ARCHIVED = (400, 50083, "Thread is archived")
THREAD_LOCKED = (400, 160005, "Thread is locked")


def _need(perms: int, bits: int) -> None:
    if not perms & ADMINISTRATOR and perms & bits != bits:
        raise DiscordError(*MISSING_PERMISSIONS)


def check_view(channel: Channel | None) -> Channel:
    """The channel exists and the bot can see it."""
    if channel is None:
        raise DiscordError(*UNKNOWN_CHANNEL)
    perms = channel.bot_permissions
    if channel.guild_id is not None and not perms & ADMINISTRATOR and not perms & VIEW_CHANNEL:
        raise DiscordError(*MISSING_ACCESS)
    return channel


def check_send(channel: Channel | None, *, files: bool, recipient: User | None = None) -> Channel:
    """The bot may post here (with files if `files`). An unlocked archived thread is fine: a post
    unarchives it, as on Discord."""
    channel = check_view(channel)
    if channel.guild_id is None:
        if recipient is not None and not recipient.dms_open:
            raise DiscordError(*CANNOT_DM)
        return channel
    if channel.locked:
        raise DiscordError(*THREAD_LOCKED)
    _need(channel.bot_permissions, SEND_MESSAGES_IN_THREADS if channel.is_thread else SEND_MESSAGES)
    if files:
        _need(channel.bot_permissions, ATTACH_FILES)
    return channel


def check_edit(channel: Channel | None) -> Channel:
    """The bot may edit (or delete) its messages here: not in an archived or locked thread."""
    channel = check_view(channel)
    if channel.locked:
        raise DiscordError(*THREAD_LOCKED)
    if channel.archived:
        raise DiscordError(*THREAD_ARCHIVED)
    return channel


def check_react(channel: Channel | None) -> Channel:
    """The bot may add a reaction here."""
    channel = check_edit(channel)
    if channel.guild_id is not None:
        _need(channel.bot_permissions, ADD_REACTIONS | READ_MESSAGE_HISTORY)
    return channel
