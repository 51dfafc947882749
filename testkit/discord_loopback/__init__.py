"""A Discord-compatible server on loopback that the real discord.py 2.7 client connects to.

Modules: ``server`` (the aiohttp server, world building, faults) over ``driver`` (members using the
bot) over ``state`` (what the server knows, waiting, intents); ``models`` (the world's records) and
``records`` (messages, interactions, the request log); ``rest`` (middleware, the route table) over
``rest_messages`` (channel routes) and ``rest_interactions`` (callbacks, interaction webhooks), all
on ``rest_io`` (bodies, JSON responses); ``permissions`` (the bits), ``channel_rules`` and ``spec``
(Discord's rules); ``gateway`` (the websocket) over ``gateway_session`` (socket, resumable session).
The handlers take the server as a ``LoopbackState``.

Quick start (in an async test)::

    from testkit.discord_loopback import DiscordLoopback

    async with DiscordLoopback() as server:            # aiohttp on 127.0.0.1:<ephemeral>
        guild = server.add_guild("g")                  # @everyone + the bot as members
        chan = server.add_channel(guild, "art")        # add_channel(guild, nsfw=True) for NSFW
        alice = server.add_member(guild, "alice")      # admin=True grants Manage Server (0x20)
        with server.patched_discord():                 # Route.BASE / DEFAULT_GATEWAY point here
            ...start the bot with token=server.token... # or set DISCORD_API_BASE=server.api_base,
            await server.wait_ready()                  #    DISCORD_GATEWAY_URL=server.gateway_url
            rec = server.invoke("imagine", {"prompt": "a fox"}, guild=guild, channel=chan, member=alice)
            await rec.wait_final(lambda r: r.original is not None and bool(r.original.attachments))
            assert rec.ack_latency < 3 and rec.callback_type == 5

Addresses: ``server.url``, ``server.api_base`` (``…/api/v10``), ``server.gateway_url`` (``ws://…/gateway``),
``server.token`` (the bot token the server accepts), ``server.application_id``, ``server.bot_user``.

World (before or after the bot connects; after READY changes go out as gateway events):
``add_user(name)``, ``add_guild(name, owner=, premium_tier=0, everyone_permissions=)`` (the upload
limit follows the boost tier: ``TIER_UPLOAD_LIMITS``, 10 MiB at tiers 0–1, 50 at 2, 100 at 3),
``add_role(guild, name, permissions)``, ``add_channel(guild, name=None, nsfw=False,
bot_permissions=ALL)``, ``add_thread(parent, name, archived=False, locked=False)``,
``update_channel(channel, bot_permissions=, archived=, locked=)``, ``delete_channel(channel)``,
``add_member(guild, user_or_name, roles=(), permissions=None, admin=False, upload_limit=None)``
(``upload_limit``: the member's own Nitro limit), ``member.user.dms_open = False``. An
interaction's ``member.permissions`` is ``permissions`` if given, else @everyone | roles
(Administrator → all; the owner → all); its ``app_permissions`` are the channel's
``bot_permissions``; its ``attachment_size_limit`` the larger of the guild's and the member's.

Strict like Discord (``spec.py``, ``channel_rules.py``): every request under /api/v10 is checked
against Discord's OpenAPI spec, vendored at ``../shared/discord-api-spec/openapi.json`` next to the
checkout (``SPEC_PATH``; missing → ``SpecMissing``), with `jsonschema`, plus the bot content limit
(2,000 characters). A refused request gets 400 ``{"code": 50035, "errors": {field: {"_errors":
[...]}}}`` and lands in ``spec_violations``; leaving ``async with DiscordLoopback()`` raises
``SpecViolationError`` if there are any (``strict=False`` to allow; ``take_spec_violations()`` to
take ones sent on purpose). Channel posts: 404 10003 for a deleted channel, 403 50001 without View
Channel, 403 50013 without Send Messages (in threads: Send Messages in Threads) or, with files,
Attach Files, 403 50007 to a member whose DMs are closed, 400 160005 in a locked thread; edits in
an archived thread 400 50083 (a post unarchives it); reactions need Add Reactions and Read Message
History. Interaction answers need no channel permission but meet the same deleted / locked /
archived rules for public messages. Gateway dispatches honour the IDENTIFY intents (no reaction
events without GUILD_MESSAGE_REACTIONS, no MESSAGE_* without GUILD_MESSAGES, …): the ones not sent
are in ``dropped_events``.

Driving (all non-blocking; they return at once, the bot answers over REST):
- ``invoke(name, options, *, guild, channel, member, subcommand=None ('show' or 'group sub'),
  attachments={'image': Upload(...)}, permissions=None, enforce_default_permissions=True,
  validate=True, locale='en-US', attachment_size_limit=None) -> InteractionRecord``. Option types
  come from the commands the bot synced (so sync first). Values: str/int/float/bool, Member/User for
  user options, Role, Channel, ``Upload(filename, data, content_type)`` (or ``server.upload(...)``)
  for attachments, which are served at ``{url}/attachments/{id}/{name}`` (resolved.attachments).
  With ``enforce_default_permissions`` a member lacking the command's default_member_permissions
  raises ``CommandNotPermitted`` (Discord would hide the command); pass False to forge one.
  ``validate`` does Discord's client-side checks (required, choices, min/max, lengths, types);
  False forges out-of-range input. ``attachment_size_limit`` defaults to the guild's upload_limit.
- ``autocomplete(name, focused, typed, options=None, guild=, channel=, member=)`` → type 4 with
  option ``focused`` marked and its partial value; answered with callback 8 (``autocomplete_choices``).
- ``click(message, custom_id, member, values=None, component_type=2)`` → type 3 with the whole message.
- ``submit_modal(rec, {custom_id: value}, member)`` after the bot answered with a modal (type 9).
- ``react(message, emoji, member)`` / ``unreact(...)`` → MESSAGE_REACTION_ADD / _REMOVE.
- ``post_as(channel, member, content)`` → a member's MESSAGE_CREATE.
- ``dispatch(event, data)`` for any other raw gateway event.

InteractionRecord: ``callback_type`` (4 message, 5 deferred, 6 deferred update, 7 update, 8
autocomplete, 9 modal), ``ack_latency`` (server-clock seconds from dispatch to the accepted
callback), ``acknowledged``, ``responses_count`` (accepted callbacks), ``attempts`` /
``rejected_callbacks`` (each with status and Discord code: 40060 twice, 10062 late),
``original`` (a ``Message``: ``content, embeds, attachments`` [``Attachment``: ``filename, size,
data, content_type, width, height``], ``components, custom_ids, flags, ephemeral, loading,
reactions, history``), ``followups``, ``messages``, ``ephemeral_messages``, ``history`` (every
create/edit/delete of @original and followups: ``MessageEdit(kind, at, content, attachments,
embeds, components, flags)`` sorted by ``at``), ``original_history``, ``modal``,
``autocomplete_choices``, ``expired``. ``await rec.wait_final(predicate=None, timeout=10)``
(default: @original exists and is not loading), ``await rec.wait_acked()``.

Discord rules enforced: first callback later than 3 s (server clock) → 404 ``{"code":10062}``; a
second callback → 400 ``{"code":40060}``; callback 8 for anything but an autocomplete (type 4), or
any other callback for one → 400 50035; webhook (followup/@original) calls on an expired token
(15 min, or ``expire_token(rec_or_token)``) → 401 ``{"code":50027}``; followups before any
acknowledgement → 404 10015; files over the limit → 413 ``{"code":40005}``; the FIRST followup
after a type-5 (thinking) defer edits that loading @original instead of creating a message and its
ephemeral flag is ignored (real Discord behaviour: defer ephemerally if the answer may be
ephemeral). For component interactions @original is the clicked message (types 6/7 edit it).
Non-ephemeral messages (channel posts, interaction responses, followups) are also sent to the bot
as MESSAGE_CREATE / MESSAGE_UPDATE / MESSAGE_DELETE, so they are in its message cache.

Channel messages: ``channel_messages(channel)`` (live, non-ephemeral, oldest first),
``await wait_for_message(channel, predicate=None, timeout=10)``, ``messages`` (all, by id).
Commands: ``commands`` ({guild_id or None: [command JSON]}), ``command(name, guild=None)``,
``command_syncs`` (every PUT in order), ``command_fetches`` (every GET of a command list).
Gateway: ``identifies`` (IDENTIFY payloads: intents, shard), ``resumes``, ``gateway_connects``,
``heartbeats``; ``await wait_ready(commands=True)``,
``await wait_for_resume(count)``. Requests: ``requests`` (``RequestLog(method, path, status, at)``,
path relative to /api/v10), ``unhandled`` (routes the server lacks → 404), ``ack_latencies``.

Time and faults: ``now()`` is the server clock; ``advance_clock(seconds)`` makes pending
interactions late / tokens old without waiting. ``fail_next(pattern, status=429, count=1,
retry_after=0.05, is_global=False, code=0) -> Fault`` (``fault.hits``): pattern is fnmatch over
``'METHOD /path'`` (e.g. ``'POST /webhooks/*'``) or ``'/path*'`` for any method; 429s carry
``retry_after``, ``Via`` and X-RateLimit-* headers, others a JSON error with ``code`` (discord.py
retries 500/502 after ~1 s). ``stall_next(pattern, count=1) -> Stall``: matching requests hang until
``stall.release()`` (``await stall.stalled.wait()`` to see one arrive); ``stall_response_next(...)``
carries the request out and hangs only its response. Channel messages honour ``nonce`` with
``enforce_nonce`` (the same nonce from the bot within 5 minutes returns the first message).
``await drop_gateway(code=4000)`` closes the socket; the client RESUMEs and missed dispatches are replayed.
``await server.wait_for(predicate, timeout)`` waits on any server-state condition (no sleeps).
"""

from . import models, records
from .models import *  # noqa: F403  (the public names: models.__all__)
from .records import *  # noqa: F403  (records.__all__)
from .server import DiscordLoopback, SpecViolationError
from .spec import SPEC_PATH, SpecMissing, SpecViolation

__all__ = ["SPEC_PATH", "DiscordLoopback", "SpecMissing", "SpecViolation", "SpecViolationError"]
__all__ += models.__all__ + records.__all__
