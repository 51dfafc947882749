"""The driver: members using the bot. Slash commands, clicks, modal submits, reactions and posts
become the gateway dispatches Discord would send, with `app_permissions` from the channel."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from .modal_submit import FieldValue, modal_submission
from .models import (
    JSON,
    Attachment,
    Channel,
    CommandNotPermitted,
    Guild,
    LoopbackError,
    Member,
    Role,
    Upload,
    User,
    snowflake,
)
from .permissions import ADMINISTRATOR, ALL_PERMISSIONS
from .records import InteractionRecord, Message
from .state import LoopbackState


class MemberDriver(LoopbackState):
    """What tests call to play members; every call returns at once (the bot answers over REST)."""

    def command(self, name: str, guild: Guild | None = None, *, kind: int = 1) -> JSON:
        """The synced command `name` of type `kind` (1 slash, 2 user menu, 3 message menu); a guild
        command first, then a global one."""
        for key in ([guild.id] if guild else []) + [None]:
            for cmd in self.commands.get(key, []):
                if cmd["name"] == name and cmd.get("type", 1) == kind:
                    return cmd
        synced = self._synced_names()
        raise LoopbackError(f"command {name!r} (type {kind}) was never synced (synced: {synced})")

    def invoke_message_command(self, name: str, message: Message, member: Member) -> InteractionRecord:
        """A message menu command (`Apps → name` on `message`) as `member`: INTERACTION_CREATE type 2
        with `target_id` and the message in `resolved.messages`, as Discord sends it."""
        guild = self.guilds[message.guild_id] if message.guild_id else None
        if guild is None:
            raise LoopbackError("message commands in DMs are not supported")
        cmd = self.command(name, guild, kind=3)
        data: JSON = {
            "id": cmd["id"],
            "name": name,
            "type": 3,
            "target_id": str(message.id),
            "resolved": {"messages": {str(message.id): message.payload()}},
        }
        channel = self.channels[message.channel_id]
        rec = self._dispatch_interaction(2, data, guild, channel, member, guild.permissions_of(member))
        rec.name = name
        return rec

    def _synced_names(self) -> list[str]:
        return [c["name"] for cmds in self.commands.values() for c in cmds]

    def invoke(
        self,
        command_name: str,
        options: Mapping[str, Any] | None = None,
        *,
        guild: Guild,
        channel: Channel,
        member: Member,
        subcommand: str | None = None,
        attachments: Mapping[str, Upload] | None = None,
        permissions: int | None = None,
        enforce_default_permissions: bool = True,
        validate: bool = True,
        locale: str = "en-US",
        attachment_size_limit: int | None = None,
    ) -> InteractionRecord:
        """Dispatch a slash-command INTERACTION_CREATE (type 2) as `member` and return its record.

        Option types come from the synced command. `subcommand` is 'show' or 'group sub'. Values:
        User/Member for user options, Role, Channel, Upload for attachments (or pass `attachments`).
        `permissions` overrides member.permissions in the payload. With `enforce_default_permissions`
        a member lacking the command's default_member_permissions raises CommandNotPermitted (Discord
        hides it); `validate` checks required options, choices, min/max as Discord's client does.
        """
        cmd = self.command(command_name, guild)
        perms = permissions if permissions is not None else guild.permissions_of(member)
        needed = cmd.get("default_member_permissions")
        if enforce_default_permissions and needed is not None:
            need = int(needed)
            if not (perms & ADMINISTRATOR) and (need == 0 or perms & need != need):
                raise CommandNotPermitted(
                    f"/{command_name} needs permissions {need:#x}; member has {perms:#x}"
                )
        all_options = {**(options or {}), **(attachments or {})}
        resolved: dict[str, dict[str, JSON]] = {}
        defs: list[JSON] = cmd.get("options") or []
        wrap: list[str] = []
        for part in (subcommand or "").split():
            found = next((o for o in defs if o["name"] == part and o["type"] in (1, 2)), None)
            if found is None:
                raise LoopbackError(f"/{command_name} has no subcommand {part!r}")
            wrap.append(part)
            defs = found.get("options") or []
        built = [
            self._option(d, all_options[d["name"]], guild, resolved, validate)
            for d in defs
            if d["name"] in all_options
        ]
        unknown = set(all_options) - {d["name"] for d in defs}
        if unknown:
            raise LoopbackError(f"/{command_name} has no option(s) {sorted(unknown)}")
        if validate:
            missing = [d["name"] for d in defs if d.get("required") and d["name"] not in all_options]
            if missing:
                raise LoopbackError(f"/{command_name}: required option(s) missing: {missing}")
        for part in reversed(wrap):
            sub_type = 1 if part == wrap[-1] else 2
            built = [{"name": part, "type": sub_type, "options": built}]
        data: JSON = {"id": cmd["id"], "name": command_name, "type": 1, "options": built}
        if resolved:
            data["resolved"] = resolved
        if cmd.get("guild_id"):
            data["guild_id"] = cmd["guild_id"]
        rec = self._dispatch_interaction(
            2, data, guild, channel, member, perms, locale=locale, size_limit=attachment_size_limit
        )
        rec.name = command_name
        return rec

    def autocomplete(
        self,
        command_name: str,
        focused: str,
        typed: str,
        options: Mapping[str, Any] | None = None,
        *,
        guild: Guild,
        channel: Channel,
        member: Member,
    ) -> InteractionRecord:
        """A member typing `typed` into option `focused` of a slash command: INTERACTION_CREATE type 4
        (APPLICATION_COMMAND_AUTOCOMPLETE) with that option `focused`, its partial value as a string,
        and the `options` already filled in. The bot answers with callback type 8; read
        `autocomplete_choices` after `await rec.wait_acked()`."""
        cmd = self.command(command_name, guild)
        defs: list[JSON] = cmd.get("options") or []
        target = next((d for d in defs if d["name"] == focused), None)
        if target is None or not target.get("autocomplete"):
            raise LoopbackError(f"/{command_name} has no autocomplete option {focused!r}")
        resolved: dict[str, dict[str, JSON]] = {}
        given = options or {}
        unknown = set(given) - {d["name"] for d in defs}
        if unknown:
            raise LoopbackError(f"/{command_name} has no option(s) {sorted(unknown)}")
        built = [self._option(d, given[d["name"]], guild, resolved, True) for d in defs if d["name"] in given]
        built.append({"name": focused, "type": int(target["type"]), "value": typed, "focused": True})
        data: JSON = {"id": cmd["id"], "name": command_name, "type": 1, "options": built}
        if cmd.get("guild_id"):
            data["guild_id"] = cmd["guild_id"]
        perms = guild.permissions_of(member)
        rec = self._dispatch_interaction(4, data, guild, channel, member, perms)
        rec.name = command_name
        return rec

    def _option(
        self, d: JSON, value: Any, guild: Guild, resolved: dict[str, dict[str, JSON]], validate: bool
    ) -> JSON:
        t = int(d["type"])
        name = d["name"]
        if t in (6, 9) and isinstance(value, Member | User):
            member = value if isinstance(value, Member) else guild.members.get(value.id)
            user = value.user if isinstance(value, Member) else value
            resolved.setdefault("users", {})[str(user.id)] = user.payload()
            if member is not None:
                mp = member.payload(guild.permissions_of(member))
                mp.pop("user")
                resolved.setdefault("members", {})[str(user.id)] = mp
            return {"name": name, "type": t, "value": str(user.id)}
        if t in (8, 9) and isinstance(value, Role):
            resolved.setdefault("roles", {})[str(value.id)] = value.payload()
            return {"name": name, "type": t, "value": str(value.id)}
        if t == 7 and isinstance(value, Channel):
            cp = value.payload() | {"permissions": str(ALL_PERMISSIONS)}
            resolved.setdefault("channels", {})[str(value.id)] = cp
            return {"name": name, "type": t, "value": str(value.id)}
        if t == 11:
            if not isinstance(value, Upload | Attachment):
                raise LoopbackError(f"option {name!r} is an attachment: pass an Upload")
            att = (
                value
                if isinstance(value, Attachment)
                else self._new_attachment(value.filename, value.data, value.content_type)
            )
            resolved.setdefault("attachments", {})[str(att.id)] = att.payload() | {"ephemeral": True}
            return {"name": name, "type": t, "value": str(att.id)}
        if validate:
            _validate_scalar(d, value)
        return {"name": name, "type": t, "value": value}

    def click(
        self,
        message: Message,
        custom_id: str,
        member: Member,
        *,
        values: list[str] | None = None,
        component_type: int = 2,
        permissions: int | None = None,
    ) -> InteractionRecord:
        """A component interaction (type 3) on `message` carrying the whole message, as Discord sends."""
        if custom_id not in message.custom_ids:
            raise LoopbackError(f"message {message.id} has no component {custom_id!r}: {message.custom_ids}")
        guild = self.guilds[message.guild_id] if message.guild_id else None
        if guild is None:
            raise LoopbackError("click in DMs is not supported")
        channel = self.channels[message.channel_id]
        data: JSON = {"custom_id": custom_id, "component_type": component_type}
        if values is not None:
            data["values"] = values
        perms = permissions if permissions is not None else guild.permissions_of(member)
        rec = self._dispatch_interaction(3, data, guild, channel, member, perms, message=message)
        rec.custom_id = custom_id
        rec.original_id = message.id
        return rec

    def submit_modal(
        self, interaction: InteractionRecord, values: Mapping[str, FieldValue], member: Member
    ) -> InteractionRecord:
        """Submit the modal that `interaction` answered with (type 5 MODAL_SUBMIT): `values` by
        custom_id (text, chosen options, or `Upload` files); other fields keep what was pre-filled."""
        if interaction.modal is None:
            raise LoopbackError("that interaction did not answer with a modal")
        guild = self.guilds[interaction.guild_id] if interaction.guild_id else None
        if guild is None:
            raise LoopbackError("modals in DMs are not supported")

        def attachment(upload: Upload) -> JSON:
            att = self._new_attachment(upload.filename, upload.data, upload.content_type)
            return att.payload() | {"ephemeral": True}

        data = modal_submission(interaction.modal, values, attachment)
        channel = self.channels[interaction.channel_id]
        rec = self._dispatch_interaction(5, data, guild, channel, member, guild.permissions_of(member))
        rec.custom_id = str(data["custom_id"])
        return rec

    def react(self, message: Message, emoji: str, member: Member) -> None:
        """A member adds a unicode reaction: MESSAGE_REACTION_ADD goes to the bot."""
        self._set_reaction(message, emoji, member.id, add=True)

    def unreact(self, message: Message, emoji: str, member: Member) -> None:
        self._set_reaction(message, emoji, member.id, add=False)

    def post_as(self, channel: Channel, member: Member, content: str) -> Message:
        """A member writes a plain message in a channel (MESSAGE_CREATE)."""
        msg = self._new_message(channel.id, member.user)
        msg.content = content
        self._store_message(msg, "create", dispatch=True)
        return msg

    def _dispatch_interaction(
        self,
        itype: int,
        data: JSON,
        guild: Guild,
        channel: Channel,
        member: Member,
        permissions: int,
        *,
        message: Message | None = None,
        locale: str = "en-US",
        size_limit: int | None = None,
    ) -> InteractionRecord:
        if self.session is None:
            raise LoopbackError("the bot has not identified yet: await server.wait_ready() first")
        iid, token = snowflake(), "itok." + secrets.token_urlsafe(32)
        # Discord says the larger of the guild's limit and the member's own (Nitro).
        limit = size_limit if size_limit is not None else max(guild.upload_limit, member.upload_limit or 0)
        payload: JSON = {
            "id": str(iid),
            "application_id": str(self.application_id),
            "type": itype,
            "data": data,
            "guild_id": str(guild.id),
            "guild": {"id": str(guild.id), "locale": "en-US", "features": []},
            "channel_id": str(channel.id),
            "channel": channel.payload(),
            "member": member.payload(permissions),
            "token": token,
            "version": 1,
            "app_permissions": str(channel.bot_permissions),
            "locale": locale,
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(guild.id)},
            "context": 0,
            "attachment_size_limit": limit,
        }
        if message is not None:
            payload["message"] = message.payload()
        rec = InteractionRecord(
            id=iid,
            token=token,
            type=itype,
            payload=payload,
            guild_id=guild.id,
            channel_id=channel.id,
            user=member.user,
            attachment_size_limit=limit,
            server=self,
            dispatched_at=self.now(),
        )
        self.interactions[iid] = rec
        self.interactions_by_token[token] = rec
        self.dispatch("INTERACTION_CREATE", payload)
        return rec


def _validate_scalar(d: JSON, value: Any) -> None:
    """What Discord's client checks before sending: choices, min/max value, min/max length."""
    name, t = d["name"], int(d["type"])
    kinds: dict[int, tuple[type, ...]] = {3: (str,), 4: (int,), 5: (bool,), 10: (int, float)}
    if t in kinds and (not isinstance(value, kinds[t]) or (t in (4, 10) and isinstance(value, bool))):
        raise LoopbackError(f"option {name!r} needs a value of type {t}, got {value!r}")
    choices = d.get("choices")
    if choices and value not in [c["value"] for c in choices]:
        raise LoopbackError(f"option {name!r}: {value!r} is not one of the choices")
    if "min_value" in d and value < d["min_value"]:
        raise LoopbackError(f"option {name!r}: {value!r} < min_value {d['min_value']}")
    if "max_value" in d and value > d["max_value"]:
        raise LoopbackError(f"option {name!r}: {value!r} > max_value {d['max_value']}")
    if "min_length" in d and len(value) < d["min_length"]:
        raise LoopbackError(f"option {name!r}: shorter than min_length {d['min_length']}")
    if "max_length" in d and len(value) > d["max_length"]:
        raise LoopbackError(f"option {name!r}: longer than max_length {d['max_length']}")
