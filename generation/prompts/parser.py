"""Turning a member's `/imagine` text and slash options into a `GenerationRequest`.

Pure: token counting and random seeds are passed in. Inline flags go at the end of the prompt,
Midjourney style (`a fox --ar 16:9 --seed 42 --no text, watermark`); a slash option given too wins
over its inline flag. Every bad input raises `PromptError`, whose `str()` is one line fit to show
the member; nothing else is ever raised for any text.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction

from generation.families.features import Features, Guidance
from generation.prompts.errors import PromptError as PromptError

# Re-exported: the commands' settings panels read them here (`bot.commands.settings`, `imagine`).
from generation.prompts.flags import ASPECT_CHOICES as ASPECT_CHOICES
from generation.prompts.flags import (
    MAX_RATIO,
    check_range,
    option_float,
    option_int,
    parse_float,
    parse_int,
    show_number,
    show_value,
    split_flags,
)
from generation.prompts.flags import parse_aspect as parse_aspect
from generation.prompts.grammar import MAX_REPEAT
from generation.prompts.loras import extract_loras
from generation.prompts.references import (
    DEFAULT_WEIGHT,
    MAX_STYLE_PICTURES,
    NEEDS_ADAPTER,
    STYLE_WEIGHTS,
    SUBJECT_WEIGHTS,
    Reference,
    ReferenceKind,
)
from generation.prompts.request import (
    IMG2IMG_STRENGTH,
    MAX_IMAGES,
    SEED_MODULUS,
    UPSCALE_STRENGTH,
    VARIATION_STRENGTH,
    GenerationRequest,
    Mode,
    ModelProfile,
    PromptDefaults,
    PromptOptions,
    consecutive_seeds,
    model_unit,
    size_unit,
    snap_size,
)
from generation.prompts.samplers import SAMPLER_LABELS
from generation.prompts.weights import parse_weights, plain_text, uses_weights

MAX_GUIDANCE = 30.0
QUALITY_CHOICES = (0.25, 0.5, 1.0, 2.0)
WINDOW_TOKENS = 75  # tokens of one window, without its begin/end tokens
MAX_PROMPT_WINDOWS = 4  # where weights are encoded, a prompt may fill this many windows (300 tokens)
# Characters that draw nothing although they are not whitespace or format characters.
_BLANKS = frozenset("\u115f\u1160\u3164\uffa0\u2800\u180e\u034f")


def clean_text(text: str) -> str:
    """Control characters and lone surrogates removed, whitespace runs made one space, stripped.
    Zero-width and direction marks inside the text are kept."""
    out: list[str] = []
    for ch in text:
        if ch.isspace():
            out.append(" ")
        elif unicodedata.category(ch) not in ("Cc", "Cs"):
            out.append(ch)
    return " ".join("".join(out).split())


def is_blank(text: str) -> bool:
    """True when `text` would draw nothing: only whitespace, format or other invisible characters."""
    for ch in text:
        if ch.isspace() or ch in _BLANKS:
            continue
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zs", "Zl", "Zp", "Mn", "Me"):
            continue
        return False
    return True


def aspect_size(aspect: str, native: int) -> tuple[int, int]:
    """Width and height for `aspect` ("W:H") on a model drawing native×native: about native² pixels,
    multiples of 64 (native >= 512) or 8, ratio as close as those allow. 1:1 gives native×native.
    Raises PromptError for a malformed or out-of-range aspect."""
    w, h = parse_aspect("The aspect ratio", aspect)
    unit = size_unit(native)
    return snap_size(w / h, float(native * native), unit)


def picture_aspect(width: int, height: int) -> str:
    """A picture's aspect as `W:H` in small whole numbers (1920×1080 → 16:9), within 1:4..4:1."""
    ratio = Fraction(width, max(height, 1)).limit_denominator(32)
    ratio = min(max(ratio, Fraction(1, int(MAX_RATIO))), Fraction(int(MAX_RATIO), 1))
    return f"{ratio.numerator}:{ratio.denominator}"


@dataclass(frozen=True)
class ParsedPrompt:
    """One parsed text: its request, how many jobs `--repeat` asks for, and whether a seed was given."""

    request: GenerationRequest
    repeat: int
    seeded: bool

    def jobs(self, random_seed: Callable[[], int]) -> list[GenerationRequest]:
        """The request, then its `--repeat` copies with fresh seeds (with `--seed s`: the seeds after
        the first job's, so a repeated command is repeatable too)."""
        first = self.request
        jobs = [first]
        for k in range(1, self.repeat):
            seed = (first.seeds[0] + k * first.count) % SEED_MODULUS if self.seeded else random_seed()
            jobs.append(first.with_seeds(consecutive_seeds(seed, first.count)))
        return jobs


@dataclass(frozen=True)
class ParseContext:
    """What parsing one text needs besides the text and the slash options (see `parse_one`)."""

    profile: ModelProfile
    count_tokens: Callable[[str], int]
    random_seed: Callable[[], int]
    defaults: PromptDefaults | None = None
    mode: Mode = Mode.TXT2IMG
    source_image: str | None = None
    models: Sequence[str] = ()  # the model names on offer (none: only the profile's)
    loras: Sequence[str] = ()  # the LoRA adapters installed
    source_size: tuple[int, int] | None = None  # the source picture's width and height, where known
    profiles: Mapping[str, ModelProfile] = field(default_factory=dict)  # each model's, where known
    counters: Mapping[str, Callable[[str], int]] = field(default_factory=dict)  # each model's tokens
    attached: Mapping[ReferenceKind, str] = field(default_factory=dict)  # `style_image`/`subject_image` URLs

    def for_model(self, name: str) -> tuple[ModelProfile, Callable[[str], int]]:
        """The profile and token counter of model `name` (the default's where it is not known)."""
        profile = self.profiles.get(name, self.profile)
        return replace(profile, name=name), self.counters.get(name, self.count_tokens)


def parse_prompt(text: str, options: PromptOptions, context: ParseContext) -> GenerationRequest:
    """Build the one request for `text` (prompt plus inline flags) and the slash `options`; see
    `parse_one`. `--repeat` above 1 is refused here (`generation.prompts.command` makes the jobs)."""
    parsed = parse_one(text, options, context)
    if parsed.repeat > 1:
        raise PromptError("`--repeat` makes several jobs, which only `/imagine` does.")
    return parsed.request


def parse_one(text: str, options: PromptOptions, context: ParseContext) -> ParsedPrompt:
    """The request for `text` (prompt plus inline flags) and the slash `options`, and its `--repeat`.

    What wins: a slash option, an inline flag, `defaults` (the member's over the guild's), then
    `profile` (steps, guidance; 0 guidance for turbo models). With a seed s and n images the seeds
    are s..s+n-1 (mod 2**32); without one, `random_seed()` gives the first. A source image makes
    txt2img into img2img (strength 0.6 unless given). A prompt longer than the model's token windows
    is refused (never silently cut), saying by how much. Raises PromptError, and only PromptError.
    """
    mode, source_image = context.mode, context.source_image
    given = context.defaults or PromptDefaults()
    prompt_part, flags = split_flags(clean_text(text if isinstance(text, str) else ""))
    prompt, adapters = extract_loras(prompt_part.strip(), context.loras)

    def label(key: str) -> str:
        if getattr(options, key, None) is not None:
            return f"The `{key}` option"
        spelled = flags[key][0] if key in flags else f"--{key}"
        return f"`{spelled}`"

    def given_here(key: str) -> bool:
        return getattr(options, key, None) is not None or key in flags

    # 0. The model, whose family decides what the rest may be.
    model_raw = options.model or flags.get("model", ("", None))[1]
    model = _pick_model(label("model"), model_raw, context.profile, context.models)
    profile, count_tokens = context.for_model(model)
    features = profile.features
    for key, able, what in (
        ("tile", features.tile, "`--tile`"),
        ("stop", features.stop, "`--stop`"),
        ("chaos", features.chaos, "`--chaos`"),
        ("guidance", features.guidance is not Guidance.NONE, "`--cfg` (it is distilled: no guidance)"),
        ("negative", features.negative, "A negative prompt (`--no`)"),
    ):
        if given_here(key) and not able:
            raise PromptError(features.refusal(what, model))
    if source_image is not None and not features.image:
        raise PromptError(features.refusal("Starting from a picture (`image`)", model))

    def pick_int(key: str) -> int | None:
        value = getattr(options, key, None)
        if value is not None:
            return option_int(label(key), value)
        return parse_int(label(key), flags[key][1]) if key in flags else None

    def pick_float(key: str) -> float | None:
        value = getattr(options, key, None)
        if value is not None:
            return option_float(label(key), value)
        return parse_float(label(key), flags[key][1]) if key in flags else None

    # 1. The image's shape.
    aspect_raw = options.aspect if options.aspect is not None else flags.get("aspect", ("", None))[1]
    if aspect_raw is None and source_image is not None and context.source_size is not None:
        aspect_raw = picture_aspect(*context.source_size)  # an image prompt keeps its picture's shape
    aspect_raw = aspect_raw if aspect_raw is not None else (given.aspect or "1:1")
    if not isinstance(aspect_raw, str):
        raise PromptError("The `aspect` option must be a ratio like 16:9.")
    aw, ah = parse_aspect(label("aspect"), aspect_raw)
    width, height = snap_size(aw / ah, float(profile.native_size**2), model_unit(profile))

    # 2. Numbers.
    steps = pick_int("steps")
    if steps is None:
        steps = profile.default_steps
    else:
        check_range(label("steps"), steps, profile.min_steps, profile.max_steps, " for this model")
    quality = pick_float("quality")
    if quality is not None:
        if quality not in QUALITY_CHOICES:
            shown = show_number(quality)
            raise PromptError(f"{label('quality')} must be one of 0.25, 0.5, 1 or 2, not {shown}.")
        steps = min(profile.max_steps, max(profile.min_steps, round(steps * quality)))
    guidance = pick_float("guidance")
    if guidance is None:
        guidance = 0.0 if profile.is_turbo else float(profile.default_guidance)
    else:
        check_range(label("guidance"), guidance, 0.0, MAX_GUIDANCE)
    count = pick_int("count")
    if count is None:
        count = given.count or 1
    else:
        check_range(label("count"), count, 1, MAX_IMAGES, " images")
    seed = pick_int("seed")
    if seed is not None:
        check_range(label("seed"), seed, 0, SEED_MODULUS - 1)
    repeat = pick_int("repeat")
    if repeat is None:
        repeat = 1
    else:
        check_range(label("repeat"), repeat, 1, MAX_REPEAT, " jobs")
    stop = pick_int("stop")
    if stop is not None:
        check_range(label("stop"), stop, 10, 100, " percent")
    chaos = pick_int("chaos")
    if chaos is not None:
        check_range(label("chaos"), chaos, 0, 100)
    sampler: str | None
    if "sampler" in flags:
        sampler = _pick_sampler(label("sampler"), flags["sampler"][1], features.samplers)
    else:  # a member's or server's default sampler applies where this model takes it
        sampler = given.sampler if given.sampler in features.samplers else None

    # 3. What it starts from.
    if source_image is not None and mode is Mode.TXT2IMG:
        mode = Mode.IMG2IMG
    from_picture = features.samplers_from(picture=True)
    if mode is not Mode.TXT2IMG and sampler is not None and sampler not in from_picture:
        if "sampler" in flags:
            raise PromptError(
                f"{label('sampler')} {sampler} doesn't work from a picture on `{model}`"
                f" ({features.label}); it takes {', '.join(from_picture)} there."
            )
        sampler = None  # a default sampler it can't run from a picture: the model's own
    strength = pick_float("strength")
    if strength is not None and not features.strength:
        raise PromptError(features.refusal("`--strength`", model))
    if mode is Mode.TXT2IMG:
        if strength is not None:
            raise PromptError(
                f"{label('strength')} only works when you start from a picture: "
                "attach one with the `image` option."
            )
    else:
        if chaos is not None:
            raise PromptError(f"{label('chaos')} only works on new pictures, not from a picture.")
        if source_image is None:
            raise PromptError("This needs a picture to start from: attach one with the `image` option.")
        if strength is None and features.strength:  # none where the model's image input takes none
            strength = {Mode.VARIATION: VARIATION_STRENGTH, Mode.UPSCALE: UPSCALE_STRENGTH}.get(
                mode, IMG2IMG_STRENGTH
            )
        elif strength is not None and not (math.isfinite(strength) and 0.0 < strength <= 1.0):
            shown = show_number(strength) if abs(strength) < 1e15 else "that"
            raise PromptError(f"{label('strength')} must be more than 0 and at most 1, not {shown}.")

    references = _references(flags, context.attached, label, features, model)
    if references and source_image is not None and not features.reference_adapter:
        raise PromptError(
            f"`{model}` ({features.label}) takes one picture as its own input: "
            "give `image` or a subject picture (`--oref`), not both."
        )
    if mode is Mode.TXT2IMG and not references and not features.from_text:
        raise PromptError(
            f"`{model}` ({features.label}) only edits pictures, it draws nothing from words alone: "
            "attach one with the `image` option, give a subject picture (`--oref`), or use `/blend`."
        )

    # 4. Text.
    if is_blank(prompt):
        raise PromptError("Your prompt is empty: describe what to draw, then any flags like `--ar 16:9`.")
    if given.suffix and not is_blank(given.suffix):
        prompt = f"{prompt}, {clean_text(given.suffix)}"
    if options.negative is not None:
        if not isinstance(options.negative, str):
            raise PromptError("The `negative` option must be text.")
        negative = clean_text(options.negative)
    else:
        negative = flags["negative"][1] if "negative" in flags else clean_text(given.negative or "")
    if is_blank(negative) or not features.negative:  # a default negative where the model takes none
        negative = ""
    windows, pushed_away = _check_text(prompt, negative, profile, count_tokens)

    first = context.random_seed() if seed is None else seed
    request = GenerationRequest(
        prompt=prompt,
        width=width,
        height=height,
        steps=steps,
        guidance=guidance,
        seeds=consecutive_seeds(first, count),
        model=model,
        negative_prompt=negative,
        aspect=f"{aw}:{ah}",
        mode=mode,
        strength=strength,
        source_image=source_image,
        sampler=sampler,
        tile="tile" in flags,
        stop=100 if stop is None else stop,
        chaos=chaos,
        prompt_windows=windows,
        loras=adapters,
        true_cfg=features.true_cfg_for(pushed_away),
        references=references,
    )
    return ParsedPrompt(request, repeat, seeded=seed is not None)


def _references(
    flags: Mapping[str, tuple[str, str]],
    attached: Mapping[ReferenceKind, str],
    label: Callable[[str], str],
    features: Features,
    model: str,
) -> tuple[Reference, ...]:
    """The style and subject references of `--sref`/`--sw`, `--oref`/`--ow` and the attachments (their
    pictures not fetched yet: the bot fetches them before anything is spent)."""
    style = flags["sref"][1].split() if "sref" in flags else []
    style += [attached[ReferenceKind.STYLE]] if ReferenceKind.STYLE in attached else []
    subject = flags["oref"][1].split() if "oref" in flags else []
    subject += [attached[ReferenceKind.SUBJECT]] if ReferenceKind.SUBJECT in attached else []
    if not style and not subject:
        for key, needs in (
            ("sw", "`--sref` or the `style_image` option"),
            ("ow", "`--oref` or `subject_image`"),
        ):
            if key in flags:
                raise PromptError(f"{label(key)} sets how strongly a reference counts: give {needs} too.")
        return ()
    if not features.references:
        raise PromptError(
            f"{features.refusal('Style and subject references (`--sref`, `--oref`)', model)} {NEEDS_ADAPTER}"
        )
    if not features.reference_adapter:  # the model's own picture input: a subject, no style, no weight
        if style:
            raise PromptError(
                f"{features.refusal('A style reference (`--sref`, `style_image`)', model)} It takes a"
                " picture as its own input: a subject (`--oref`, `subject_image`) or `/blend` works on it."
            )
        if "ow" in flags:
            raise PromptError(features.refusal(f"{label('ow')} (its picture input has no weight)", model))
    if style and subject and features.reference_kinds < 2:
        raise PromptError(
            f"{features.refusal('A style and a subject reference together', model)} Its adapter takes one"
            " reference at a time: give `--sref` or `--oref`."
        )
    if len(style) > MAX_STYLE_PICTURES:
        raise PromptError(
            f"Give at most {MAX_STYLE_PICTURES} style pictures (`--sref`, `style_image`), not {len(style)}."
        )
    if len(subject) > 1:
        raise PromptError("Give one subject picture (`--oref` or `subject_image`), not several.")
    references = []
    for kind, pictures, key, (low, high) in (
        (ReferenceKind.STYLE, style, "sw", STYLE_WEIGHTS),
        (ReferenceKind.SUBJECT, subject, "ow", SUBJECT_WEIGHTS),
    ):
        weight = parse_int(label(key), flags[key][1]) if key in flags else DEFAULT_WEIGHT
        if not pictures:
            if key in flags:
                flag = "--sref" if kind is ReferenceKind.STYLE else "--oref"
                raise PromptError(f"{label(key)} sets how strongly a reference counts: give `{flag}` too.")
            continue
        check_range(label(key), weight, low, high)
        references.append(Reference(kind, weight, tuple(pictures)))
    return tuple(references)


def _pick_model(label: str, raw: str | None, profile: ModelProfile, models: Sequence[str]) -> str:
    """The model a job names (`models`: the names on offer; none given: only the profile's)."""
    if raw is None or not raw.strip():
        return profile.name
    offered = tuple(models) or (profile.name,)
    wanted = raw.strip().casefold()
    for name in offered:
        if name.casefold() == wanted:
            return name
    raise PromptError(f"{label} must be one of {', '.join(offered)}, not {show_value(raw)}.")


def _pick_sampler(label: str, raw: str, offered: Sequence[str]) -> str:
    """A `--sampler` name the model takes (`offered`: its family's)."""
    name = raw.strip().lower().replace("-", "_").replace("+", "p")
    if name in offered:
        return name
    if not offered:
        raise PromptError(f"{label} doesn't work on this model: it runs its own sampler only.")
    if name in SAMPLER_LABELS:
        raise PromptError(
            f"{label} {show_value(raw)} doesn't work on this model; it takes {', '.join(offered)}."
        )
    raise PromptError(f"{label} must be one of {', '.join(offered)}, not {show_value(raw)}.")


def _check_text(
    prompt: str, negative: str, profile: ModelProfile, count_tokens: Callable[[str], int]
) -> tuple[int, bool]:
    """Check both prompts' syntax and length. Returns the token windows of the weighted encoding
    they need (weights, or longer than the model's window; else 0), and whether anything pushes
    away (a negative prompt, or a `::` part with a negative weight)."""
    syntax = uses_weights(prompt) or uses_weights(negative)
    if syntax and not profile.supports_weights:
        raise PromptError("This model doesn't take prompt weights (`::`, `( )`, `[ ]`, `\\`); remove them.")
    parts = parse_weights(prompt)
    if not parts:
        raise PromptError("Your prompt is empty once its weights are taken out.")
    windows = profile.prompt_windows if profile.supports_weights else 1
    limit = profile.token_limit if windows == 1 else windows * WINDOW_TOKENS + 2
    longest = 0
    for part in parts:
        longest = max(longest, _check_tokens("Your prompt", part.text, limit, count_tokens))
    negative_text = " ".join([plain_text(negative), *(p.text for p in parts if p.weight < 0)]).strip()
    if negative_text:
        longest = max(longest, _check_tokens("Your negative prompt", negative_text, limit, count_tokens))
    pushed_away = bool(negative_text)
    if not syntax and longest <= profile.token_limit:
        return 0, pushed_away
    return max(1, -(-(longest - 2) // WINDOW_TOKENS)), pushed_away


def _check_tokens(what: str, text: str, limit: int, count_tokens: Callable[[str], int]) -> int:
    tokens = count_tokens(text)
    if tokens > limit:
        over = tokens - limit
        raise PromptError(
            f"{what} is {over} token{'s' if over != 1 else ''} over this model's limit "
            f"({tokens} of {limit}); please shorten it."
        )
    return tokens
