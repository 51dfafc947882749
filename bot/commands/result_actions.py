"""Result buttons (U1–U4, V1–V4, 🔄) and reactions (🔄, 1️⃣–4️⃣) on result messages; `Cancel`, 📋
and 🗑️ go on to `bot.commands.job_controls`.

Whoever clicks or reacts spends their own quota. The job named by a button must exist and belong to
this guild (custom ids are untrusted). Reactions have no interaction token: their results and
refusals go to the channel, mentioning the member."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import discord

from bot.commands.animate import AnimateActions
from bot.commands.derive import check_model_runs, check_parent, derive, parent_request, source_bytes
from bot.commands.describe import prompt_of
from bot.commands.edit_actions import EditActions
from bot.commands.edit_words import EditInWords
from bot.commands.errors import (
    UserError,
    member_role_ids,
    report_error,
    reporting,
    require_post_permissions,
    send_private,
)
from bot.commands.imagine import ImagineCommand
from bot.commands.job_controls import JobControls
from bot.commands.reference_pictures import store_pending_references
from bot.formatting import refusal_text
from bot.services import Services
from bot.views.custom_ids import (
    ANIMATE_BUTTONS,
    CUSTOM_ID_PREFIX,
    DERIVING_ACTIONS,
    Action,
    ButtonRef,
    EditButton,
    is_known_custom_id,
    new_job_id,
)
from bot.views.edit_modals import RemixModal, Submitted
from bot.views.result_buttons import REROLL_EMOJI
from generation.prompts.remix import remix_text, remixed
from generation.prompts.request import GenerationRequest, PromptOptions
from jobs.delivery import token_expiry
from storage.interface import JobRecord, NewJob, Refusal, Reservation, StorageError

log = logging.getLogger(__name__)

VARIATION_SELECTORS = dict.fromkeys(map(ord, "\ufe0e\ufe0f"))  # text / emoji presentation


def bare_emoji(emoji: str) -> str:
    """The emoji without variation selectors: some clients send `1⃣` for `1️⃣` (no U+FE0F)."""
    return emoji.translate(VARIATION_SELECTORS)


NUMBER_EMOJI = {bare_emoji(e): i for i, e in enumerate(("1️⃣", "2️⃣", "3️⃣", "4️⃣"))}


def reaction_ref(emoji: str, job_id: str) -> ButtonRef | None:
    """The action a reaction asks for on a result (any variation-selector form), or None."""
    emoji = bare_emoji(emoji)
    if emoji == bare_emoji(REROLL_EMOJI):
        return ButtonRef(Action.REROLL, job_id)
    index = NUMBER_EMOJI.get(emoji)
    return None if index is None else ButtonRef(Action.VARIATION, job_id, index)


@dataclass(frozen=True)
class Clicker:
    """Who asked for a derived job, and where: a click's interaction, or a reaction (no interaction)."""

    guild_id: int | None
    channel_id: int
    user_id: int
    role_ids: tuple[int, ...]
    interaction: discord.Interaction[Any] | None

    @classmethod
    def of(cls, interaction: discord.Interaction[Any]) -> Clicker:
        """The member behind a click or modal submit (in a server channel)."""
        if interaction.channel_id is None:
            raise UserError("This only works in a server channel.")
        roles = member_role_ids(interaction.user)
        return cls(interaction.guild_id, interaction.channel_id, interaction.user.id, roles, interaction)


class ResultActions:
    """Clicks and reactions on results (`bot.views.result_buttons.ButtonActions`); the client forwards
    its `on_interaction` and `on_raw_reaction_add` events here."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.controls = JobControls(services)
        self.imagine = ImagineCommand(services)
        self.edits = EditActions(services, self.submit_derived)
        self.animate = AnimateActions(services, self.submit_derived)
        self.edit_in_words = EditInWords(services, self.submit_derived)

    async def start_derived(
        self, ref: ButtonRef, clicker: Clicker, *, remix: str | None = None
    ) -> tuple[Reservation | Refusal, int]:
        """Check the parent, build the derived request (with `remix`: the text a member submitted in
        the Remix modal), reserve and run it; also returns its image count."""
        bot = self.services
        parent = check_parent(await bot.store.get_job(ref.job_id), clicker.guild_id, ref)
        check_model_runs(bot.runner.features_of(parent_request(parent).model), ref.action)
        digest = None
        if ref.action is not Action.REROLL:
            data = await asyncio.to_thread(source_bytes, parent, ref.index)
            digest = await asyncio.to_thread(bot.image_store.put, data)
        request = derive(parent, ref, bot.backend.profile, digest)
        if remix is not None and clicker.interaction is not None:
            submitted = await self.edits.parse_remix(clicker.interaction, remix, request.model)
            request = await store_pending_references(bot, clicker.interaction, remixed(request, submitted))
        index = ref.index if ref.action is not Action.REROLL else None
        return await self._reserve(parent, request, index, clicker), request.count

    async def submit_derived(
        self,
        interaction: discord.Interaction[Any],
        parent: JobRecord,
        request: GenerationRequest,
        parent_index: int | None,
        images: int | None = None,
    ) -> Reservation | Refusal:
        """Reserve and queue `request`, made from `parent`, for the member who clicked (spending
        `images`: default, the request's image count)."""
        return await self._reserve(parent, request, parent_index, Clicker.of(interaction), images)

    async def _reserve(
        self,
        parent: JobRecord,
        request: GenerationRequest,
        parent_index: int | None,
        clicker: Clicker,
        images: int | None = None,
    ) -> Reservation | Refusal:
        bot, interaction = self.services, clicker.interaction
        job = NewJob(
            job_id=new_job_id(),
            guild_id=parent.guild_id,
            channel_id=clicker.channel_id,
            owner_id=clicker.user_id,
            request_json=request.to_json(),
            images=request.count if images is None else images,
            interaction_id=interaction.id if interaction else None,
            interaction_token=interaction.token if interaction else None,
            token_expires_at=token_expiry(bot.clock()) if interaction else None,
            parent_job_id=parent.job_id,
            parent_index=parent_index,
        )
        upload_limit = interaction.filesize_limit if interaction else None
        return await bot.runner.submit(job, request, clicker.role_ids, upload_limit=upload_limit)

    async def on_result_button(self, interaction: discord.Interaction[Any], ref: ButtonRef) -> None:
        """A click on any of the bot's buttons (called by the dynamic items)."""
        try:
            if ref.action not in DERIVING_ACTIONS:
                await self.controls.on_button(interaction, ref)
                return
            if interaction.channel_id is None or interaction.guild_id is None:
                raise UserError("This only works in a server channel.")
            if ref.action is Action.EDIT and ref.edit in ANIMATE_BUTTONS:
                await self.animate.on_click(interaction, ref)
            elif ref.action is Action.EDIT and ref.edit is EditButton.INSTRUCT:
                await self.edit_in_words.on_click(interaction, ref)
            elif ref.action is Action.EXTEND:
                await self.animate.on_extend(interaction, ref)
            elif ref.action is Action.EDIT:
                await self.edits.on_click(interaction, ref)
            elif ref.action is not Action.UPSCALE and await self.edits.remix_on(interaction):
                await self._open_remix(interaction, ref)
            else:
                await self._run_derived(interaction, ref, None)
        except Exception as exc:
            await report_error(interaction, exc)

    async def _open_remix(self, interaction: discord.Interaction[Any], ref: ButtonRef) -> None:
        """V1–V4 and 🔄 with Remix on: the parent's prompt and flags in a modal; what is sent runs."""
        parent = check_parent(await self.services.store.get_job(ref.job_id), interaction.guild_id, ref)
        prefill = remix_text(parent_request(parent), with_shape=True)

        @reporting
        async def submitted(modal_interaction: discord.Interaction[Any], sent: Submitted) -> None:
            await self._run_derived(modal_interaction, ref, sent.prompt)

        await interaction.response.send_modal(RemixModal(prefill, submitted))

    async def _run_derived(
        self, interaction: discord.Interaction[Any], ref: ButtonRef, remix: str | None
    ) -> None:
        require_post_permissions(interaction)
        await interaction.response.defer(thinking=True)
        interaction.extras["public_defer"] = True
        outcome, count = await self.start_derived(ref, Clicker.of(interaction), remix=remix)
        if isinstance(outcome, Refusal):
            await send_private(interaction, refusal_text(outcome, count))

    async def on_prompt_button(self, interaction: discord.Interaction[Any], index: int) -> None:
        """`Imagine N` under a `/describe` answer: `/imagine` of that line's prompt, for the clicker."""
        try:
            message = interaction.message
            me = interaction.client.user
            prompt = prompt_of(message.content, index) if message is not None else None
            if prompt is None or message is None or me is None or message.author.id != me.id:
                raise UserError("That prompt isn't there any more.")
            await self.imagine.run(interaction, prompt, PromptOptions(), None)
        except Exception as exc:
            await report_error(interaction, exc)

    async def on_interaction(self, interaction: discord.Interaction[Any]) -> None:
        """A button in our namespace that no template matches (forged, or from an older version):
        say so, rather than leave the member with Discord's "interaction failed"."""
        if interaction.type is not discord.InteractionType.component:
            return
        data: Mapping[str, Any] = interaction.data or {}
        custom_id = str(data.get("custom_id", ""))
        if custom_id.startswith(CUSTOM_ID_PREFIX) and not is_known_custom_id(custom_id):
            await send_private(interaction, "That button isn't one I can act on any more.")

    async def on_raw_reaction_add(
        self, client: discord.Client, payload: discord.RawReactionActionEvent
    ) -> None:
        """🔄 or 1️⃣–4️⃣ on one of the bot's results."""
        me = client.user
        if payload.guild_id is None or (me is not None and payload.user_id == me.id):
            return
        if payload.member is not None and payload.member.bot:
            return
        emoji = bare_emoji(str(payload.emoji))
        if emoji != bare_emoji(REROLL_EMOJI) and emoji not in NUMBER_EMOJI:
            return
        channel = client.get_partial_messageable(payload.channel_id, guild_id=payload.guild_id)
        mention = discord.AllowedMentions(
            everyone=False, roles=False, users=[discord.Object(payload.user_id)]
        )
        try:
            job = await self.services.store.job_by_message(payload.message_id)
            if job is None:
                return
            ref = reaction_ref(emoji, job.job_id)
            if ref is None:
                return
            roles = member_role_ids(payload.member) if payload.member else ()
            clicker = Clicker(payload.guild_id, payload.channel_id, payload.user_id, roles, None)
            outcome, count = await self.start_derived(ref, clicker)
            if isinstance(outcome, Refusal):
                text = refusal_text(outcome, count)
                await channel.send(f"<@{payload.user_id}> {text}", allowed_mentions=mention)
        except (UserError, StorageError) as exc:
            text = str(exc) if isinstance(exc, UserError) else "The bot's database is busy; please try again."
            await _quiet_send(channel, f"<@{payload.user_id}> {text}", mention)
        except Exception:
            log.exception(
                "reaction failed (guild=%s channel=%s user=%s message=%s emoji=%s)",
                payload.guild_id,
                payload.channel_id,
                payload.user_id,
                payload.message_id,
                emoji,
            )
            await _quiet_send(channel, f"<@{payload.user_id}> Sorry, something went wrong.", mention)


async def _quiet_send(
    channel: discord.PartialMessageable, text: str, mention: discord.AllowedMentions
) -> None:
    try:
        await channel.send(text, allowed_mentions=mention)
    except discord.HTTPException as exc:
        log.warning("could not post to channel %s: %r", channel.id, exc)
