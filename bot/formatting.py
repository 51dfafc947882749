"""Texts the commands send: refusals, usage, limits, help. Pure functions. (A job's own messages,
progress and results, are `jobs.messages`'.)"""

from __future__ import annotations

from collections.abc import Sequence

from generation.prompts.parser import MAX_PROMPT_WINDOWS, WINDOW_TOKENS
from generation.prompts.request import ModelProfile
from generation.prompts.samplers import SAMPLER_NAMES
from storage.interface import LimitName, Limits, LimitsPatch, LimitsView, Refusal, Usage

_LIMIT_TEXT = {
    LimitName.PER_HOUR: "your images per hour",
    LimitName.PER_DAY: "your images per day",
    LimitName.MAX_QUEUED: "your jobs waiting at once",
    LimitName.COOLDOWN: "the cooldown between requests",
}


MESSAGE_LIMIT = 2000  # Discord's limit on a message's content


def fit(
    head: Sequence[str],
    items: Sequence[str],
    tail: Sequence[str] = (),
    *,
    sep: str = "\n",
    limit: int = MESSAGE_LIMIT,
) -> str:
    """`head` lines, as many of `items` as fit (joined by `sep`) with "… and N more" for the rest,
    then `tail` lines: one message of at most `limit` characters."""

    def text(shown: int) -> str:
        listed = sep.join(items[:shown])
        if shown < len(items):
            more = f"… and {len(items) - shown} more"
            listed = f"{listed}{sep}{more}" if shown else more
        return "\n".join([*head, *([listed] if items else []), *tail])

    shown = len(items)
    while shown > 0 and len(text(shown)) > limit:
        shown -= 1
    out = text(shown)
    return out if len(out) <= limit else out[: limit - 1] + "…"


def pages(
    head: Sequence[str],
    items: Sequence[str],
    tail: Sequence[str] = (),
    *,
    sep: str = "\n",
    limit: int = MESSAGE_LIMIT,
) -> list[str]:
    """`head`, `items` (joined by `sep`) and `tail` as one message if they fit in `limit`, else as
    pages: each the `head`, its run of items, the `tail` and "Page k of n", every item on exactly one
    page (one too long for a page alone is cut with "…")."""

    def text(chunk: Sequence[str], footer: Sequence[str] = ()) -> str:
        return "\n".join([*head, *([sep.join(chunk)] if chunk else []), *tail, *footer])

    whole = text(items)
    if len(whole) <= limit or not items:
        return [fit(head, items, tail, sep=sep, limit=limit)]
    widest = f"-# Page {len(items)} of {len(items)}"
    budget = max(1, limit - len(text([], [widest])) - 1)  # - 1: the line break before the items
    chunks: list[list[str]] = [[]]
    used = 0
    for item in items:
        item = item if len(item) <= budget else item[: budget - 1] + "…"
        if chunks[-1] and used + len(sep) + len(item) > budget:
            chunks.append([])
        used = len(item) if not chunks[-1] else used + len(sep) + len(item)
        chunks[-1].append(item)
    count = len(chunks)
    out = [text(chunk, [f"-# Page {k} of {count}"]) for k, chunk in enumerate(chunks, 1)]
    return [page if len(page) <= limit else page[: limit - 1] + "…" for page in out]


def when(ts: float) -> str:
    """A Discord relative timestamp (`<t:…:R>`: "in 5 minutes"), rendered in each reader's time zone."""
    return f"<t:{int(ts + 0.999)}:R>"


def refusal_text(refusal: Refusal, count: int) -> str:
    """Why a reservation was refused and when to try again."""
    limits = refusal.limits
    detail = {
        LimitName.PER_HOUR: f"{limits.images_per_hour} images per hour",
        LimitName.PER_DAY: f"{limits.images_per_day} images per day",
        LimitName.MAX_QUEUED: f"{limits.max_queued} jobs waiting at once",
        LimitName.COOLDOWN: f"{limits.cooldown_seconds:g} s between requests",
    }[refusal.limit]
    ask = f"{count} image{'s' if count != 1 else ''}"
    return (
        f"You've hit {_LIMIT_TEXT[refusal.limit]} limit ({detail}), so this request for {ask} "
        f"wasn't queued. You can try again {when(refusal.retry_at)}."
    )


def _limit_value(value: int | float | None, unit: str = "") -> str:
    return "unlimited" if value is None else f"{value:g}{unit}"


def limits_text(limits: Limits) -> str:
    """Effective limits in one line."""
    return (
        f"{_limit_value(limits.images_per_hour)} images/hour"
        f" · {_limit_value(limits.images_per_day)} images/day"
        f" · {_limit_value(limits.max_queued)} queued · cooldown {limits.cooldown_seconds:g} s"
    )


def patch_text(patch: LimitsPatch) -> str:
    """The fields a stored row sets ("inherits" for the rest)."""
    fields = [
        ("images/hour", patch.images_per_hour),
        ("images/day", patch.images_per_day),
        ("queued", patch.max_queued),
        ("cooldown s", patch.cooldown_seconds),
    ]
    shown = [f"{name} {value:g}" for name, value in fields if value is not None]
    return ", ".join(shown) if shown else "nothing set (inherits)"


def limits_view_text(
    view: LimitsView, *, user_id: int | None, role_names: dict[int, str], extra: Sequence[str] = ()
) -> str:
    """`/limits show`: the guild default, role overrides (as many as fit, with a count of the rest),
    a user's override and effective limits, then `extra` lines."""
    head = [f"**Server default:** {patch_text(view.guild_default)}"]
    roles = [
        f"• {role_names.get(role_id, f'<@&{role_id}>')}: {patch_text(patch)}"
        for role_id, patch in sorted(view.role_overrides.items())
    ]
    if roles:
        head.append(f"**Role overrides ({len(roles)}):**")
    tail: list[str] = []
    if user_id is not None:
        override = patch_text(view.user_override) if view.user_override else "none"
        tail.append(f"**Override for <@{user_id}>:** {override}")
    if view.effective is not None:
        who = f"<@{user_id}>" if user_id is not None else "members"
        tail.append(f"**Effective for {who}:** {limits_text(view.effective)}")
    return fit(head, roles, [*tail, *extra])


def usage_text(usage: Usage, now: float) -> str:
    """`/usage`: spent and left per hour and day, queued jobs, refill times, cooldown."""
    lim = usage.limits

    def window(used: int, cap: int | None, refill: float | None, name: str) -> str:
        if cap is None:
            return f"**{name}:** {used} used (no limit)"
        left = max(0, cap - used)
        text = f"**{name}:** {used} of {cap} used, {left} left"
        if refill is not None and used > 0:
            text += f"; frees up from {when(refill)}"
        return text

    lines = [
        window(usage.used_last_hour, lim.images_per_hour, usage.hour_refills_at, "Last hour"),
        window(usage.used_last_day, lim.images_per_day, usage.day_refills_at, "Last day"),
        f"**Queued:** {usage.queued}" + (f" of {lim.max_queued}" if lim.max_queued is not None else ""),
    ]
    if usage.cooldown_until is not None and usage.cooldown_until > now:
        lines.append(f"**Cooldown:** next request {when(usage.cooldown_until)}")
    return "\n".join(lines)


HELP_TEXT = """**/imagine** `prompt` — draw a picture. Options: `negative`, `aspect`, `steps`, `guidance`, \
`seed`, `count` (1–4), `image` + `strength` (start from your own picture).
Inline flags work too: `--ar 16:9` `--seed 42` `--no text, watermark` `--steps 30` `--cfg 7.5` `--n 4` \
`--strength 0.6`. A slash option wins over the same inline flag.
Under a result: **U1–U4** upscale one image, **V1–V4** make variations of it, **🔄** rerolls with new seeds. \
Reacting with 🔄 or 1️⃣–4️⃣ on a result does the same. **📋** shows a result's parameters, **🗑️** deletes it \
(yours, or with Manage Messages); **Cancel** on a progress message stops your job.
**/usage** your limits and what's left · **/queue** what's waiting · **/cancel** stop your job · \
**/show** `job` post a result again · **/describe** `image` (or Apps → Describe on a message): four prompts \
for a picture, with **Imagine 1–4** buttons · **Animate (Low|High motion)** on a one-image result, \
or **/animate** `image`: a short video (where the bot has a video model), with **Extend** for more · \
**Edit** on a one-image result, or **/edit** `image` `instruction`: change it in words (where the bot has an \
edit model).
Admins (Manage Server): **/limits show|set|reset**, **/blocklist add|remove|list**."""
HELP_TEXT += (
    "\n**Grammar**: `a {red, blue} fox` one job per choice (16 at most) · `--repeat 3` (1–8, new seeds)"
    " · `cat::2 dog::-1` weighted parts · `(word:1.3)` `(word)` `[word]` emphasis, `\\(` a literal"
    f" parenthesis · prompts up to {MAX_PROMPT_WINDOWS * WINDOW_TOKENS} tokens · `--tile` edges wrap"
    " · `--stop 60` (10–100 % of the steps) · `--chaos 40` (0–100, how unlike the images are)"
    f" · `--quality 0.5` (0.25, 0.5, 1, 2 × steps) · `--sampler NAME` ({', '.join(SAMPLER_NAMES)})"
    " · `--model NAME` (one of the bot's models; the `model` option lists them)"
    " · `<lora:name:0.8>` or the `lora` option: a LoRA style (**/loras** lists them)"
    " · `--sref URL` (up to 4) `--sw 0–1000` a style reference, `--oref URL` `--ow 1–1000` a subject"
    " (pictures posted in Discord; also the `style_image`, `subject_image` options)"
    " · **/blend** 2–5 pictures into one."
    "\n**/settings** your defaults and Remix · **/prefer option set|list|delete** your `--name` macros"
    " · Admins: **/server-defaults** (also the server's default model and the models it offers)."
)


def model_text(name: str, profile: ModelProfile | None, *, default: bool) -> str:
    """One model for `/models`: its family, native size, default steps and guidance, and a compact
    ✓/– line of what it takes (read from its family, `Features.supported`)."""
    marker = " (default)" if default else ""
    if profile is None:
        return f"**{name}**{marker}: could not be loaded; its jobs fail until its admin fixes it."
    features = profile.features
    guidance = "no guidance" if profile.default_guidance == 0 else f"`--cfg {profile.default_guidance:g}`"
    abilities = {**features.supported(), "weights": profile.supports_weights}
    line = " ".join(f"{'✓' if able else '–'} {what}" for what, able in abilities.items())
    size = f"{profile.native_size}×{profile.native_size}"
    only = "" if features.from_text else ", edits pictures only (`image`, `--oref`, `/blend`)"
    return (
        f"**{name}**{marker}: {features.label}, {size}, {profile.default_steps} steps, {guidance}, "
        f"up to {profile.token_limit} tokens{only}\n{line}"
    )
