"""The prompt parser: inline flags, slash options, defaults, sizes, seeds, and every refusal."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from generation.prompts.flags import KNOWN_FLAGS
from generation.prompts.parser import ASPECT_CHOICES, ParseContext, PromptError, aspect_size, parse_prompt
from generation.prompts.request import (
    IMG2IMG_STRENGTH,
    UPSCALE_FACTOR,
    UPSCALE_STRENGTH,
    VARIATION_STRENGTH,
    GenerationRequest,
    Mode,
    ModelProfile,
    PromptOptions,
    reroll_of,
    upscale_of,
    variation_of,
)

PROFILE = ModelProfile(
    name="test/model", native_size=512, default_steps=25, default_guidance=7.5, max_steps=60
)
TURBO = ModelProfile(name="turbo", native_size=512, default_steps=4, default_guidance=1.0, is_turbo=True)
HASH = "ab" * 32


def words(text: str) -> int:
    """A stand-in tokenizer: one token per word plus begin/end."""
    return len(text.split()) + 2


def parse(
    text: str,
    options: PromptOptions | None = None,
    profile: ModelProfile = PROFILE,
    mode: Mode = Mode.TXT2IMG,
    source_image: str | None = None,
) -> GenerationRequest:
    context = ParseContext(profile, words, lambda: 1000, mode=mode, source_image=source_image)
    return parse_prompt(text, options or PromptOptions(), context)


def refused(
    text: str,
    options: PromptOptions | None = None,
    mode: Mode = Mode.TXT2IMG,
    source_image: str | None = None,
) -> str:
    with pytest.raises(PromptError) as info:
        parse(text, options, mode=mode, source_image=source_image)
    message = str(info.value)
    assert message and "\n" not in message
    return message


# --- what a plain prompt gives ------------------------------------------------------------------


def test_plain_prompt_takes_the_profiles_defaults() -> None:
    r = parse("  a red fox in the snow  ")
    assert r.prompt == "a red fox in the snow"
    assert (r.width, r.height, r.aspect) == (512, 512, "1:1")
    assert (r.steps, r.guidance, r.model) == (25, 7.5, "test/model")
    assert r.seeds == (1000,)
    assert r.negative_prompt == ""
    assert r.mode is Mode.TXT2IMG and r.strength is None and r.source_image is None


def test_turbo_models_default_to_zero_guidance_but_accept_an_explicit_one() -> None:
    assert parse("a fox", profile=TURBO).guidance == 0.0
    assert parse("a fox --cfg 1.5", profile=TURBO).guidance == 1.5


def test_all_inline_flags() -> None:
    r = parse("a red fox --ar 16:9 --seed 42 --no text, watermark --steps 30 --cfg 5.5 --n 4")
    assert r.prompt == "a red fox"
    assert (r.width, r.height, r.aspect) == (704, 384, "16:9")
    assert r.seeds == (42, 43, 44, 45)
    assert r.negative_prompt == "text, watermark"
    assert (r.steps, r.guidance, r.count) == (30, 5.5, 4)


def test_alias_spellings_equals_sign_and_phone_dashes() -> None:
    a = parse("a fox --aspect 3:2 --guidance 4 --seed=9")
    assert (a.aspect, a.guidance, a.seeds) == ("3:2", 4.0, (9,))
    b = parse("a fox —ar 2:3 —seed 5")  # an em dash, as phones autocorrect `--`
    assert (b.aspect, b.seeds) == ("2:3", (5,))
    assert parse("a fox — a sly one").prompt == "a fox — a sly one"  # a dash in text stays text
    assert parse("a fox --AR 3:4").aspect == "3:4"


def test_negative_runs_to_the_next_flag() -> None:
    r = parse("a fox --no blurry, low quality --seed 3")
    assert r.negative_prompt == "blurry, low quality" and r.seeds == (3,)


def test_aspect_is_reduced() -> None:
    assert parse("a fox --ar 32:18").aspect == "16:9"


def test_slash_options_win_over_inline_flags() -> None:
    opts = PromptOptions(negative="people", aspect="9:16", steps=12, guidance=3.0, seed=7, count=2)
    r = parse("a fox --no cars --ar 16:9 --steps 40 --cfg 9 --seed 1 --n 4", opts)
    assert r.negative_prompt == "people"
    assert (r.aspect, r.width, r.height) == ("9:16", 384, 704)
    assert (r.steps, r.guidance, r.seeds) == (12, 3.0, (7, 8))
    # An inline value the slash option overrides is not used, so it is not judged either.
    assert parse("a fox --steps 900", PromptOptions(steps=10)).steps == 10


def test_slash_options_alone() -> None:
    r = parse("a fox", PromptOptions(aspect="4:3", seed=2**32 - 1, count=3, guidance=0))
    assert r.aspect == "4:3" and r.guidance == 0.0
    assert r.seeds == (2**32 - 1, 0, 1)  # wraps at 2**32


def test_random_seed_is_used_for_the_first_image_then_counts_up() -> None:
    r = parse_prompt("a fox --n 3", PromptOptions(), ParseContext(PROFILE, words, lambda: 2**32 - 2))
    assert r.seeds == (2**32 - 2, 2**32 - 1, 0)


# --- pictures to start from -------------------------------------------------------------------------


def test_a_source_image_makes_img2img_with_default_strength() -> None:
    r = parse("a fox", source_image=HASH)
    assert (r.mode, r.strength, r.source_image) == (Mode.IMG2IMG, IMG2IMG_STRENGTH, HASH)
    assert parse("a fox --strength 0.25", source_image=HASH).strength == 0.25
    assert parse("a fox --strength 1", source_image=HASH).strength == 1.0
    assert parse("a fox --strength 0.3", PromptOptions(strength=0.8), source_image=HASH).strength == 0.8


def test_strength_without_an_image_says_to_attach_one() -> None:
    assert "attach" in refused("a fox --strength 0.5")
    assert "attach" in refused("a fox", PromptOptions(strength=0.5))


@pytest.mark.parametrize("value", ["0", "-0.1", "1.01", "2"])
def test_strength_out_of_range(value: str) -> None:
    assert "--strength" in refused(f"a fox --strength {value}", source_image=HASH)


def test_img2img_mode_without_a_source_is_refused() -> None:
    assert "attach" in refused("a fox", mode=Mode.IMG2IMG)


# --- refusals -----------------------------------------------------------------------------------------


def test_unknown_flag_is_named_and_known_ones_listed() -> None:
    message = refused("a fox --v 6")
    assert "`--v`" in message
    for flag in KNOWN_FLAGS:
        assert flag in message


@pytest.mark.parametrize("flag", ["--ar", "--seed", "--no", "--steps", "--cfg", "--n", "--strength"])
def test_flag_missing_a_value(flag: str) -> None:
    message = refused(f"a fox {flag}", source_image=HASH)
    assert flag in message and "needs a value" in message
    assert "needs a value" in refused(f"a fox {flag} --seed 1", source_image=HASH)


@pytest.mark.parametrize(
    "text",
    ["a fox --seed abc", "a fox --seed 4.5", "a fox --steps 2e1", "a fox --cfg seven", "a fox --cfg nan",
     "a fox --cfg inf", "a fox --n two", "a fox --seed ٣"],
)  # fmt: skip
def test_non_numeric_values(text: str) -> None:
    message = refused(text)
    assert "number" in message and text.split()[-1] in message


@pytest.mark.parametrize(
    ("value", "hint"),
    [("16x9", "ratio like"), ("16:", "ratio like"), ("a:b", "ratio like"), ("0:1", "zero"), ("1:0", "zero"),
     ("5:1", "1:4 and 4:1"), ("1:5", "1:4 and 4:1"), ("-1:1", "ratio like")],
)  # fmt: skip
def test_bad_aspect(value: str, hint: str) -> None:
    assert hint in refused(f"a fox --ar {value}")
    assert hint in refused("a fox", PromptOptions(aspect=value))


def test_extreme_aspects_allowed() -> None:
    assert parse("a fox --ar 4:1").aspect == "4:1"
    assert parse("a fox --ar 1:4").aspect == "1:4"


@pytest.mark.parametrize(
    ("text", "flag"),
    [("a fox --steps 0", "--steps"), ("a fox --steps 61", "--steps"), ("a fox --cfg -1", "--cfg"),
     ("a fox --cfg 30.5", "--cfg"), ("a fox --n 0", "--n"), ("a fox --n 5", "--n"),
     ("a fox --seed -1", "--seed"), ("a fox --seed 4294967296", "--seed"),
     ("a fox --seed 99999999999999999999999999999999999999999", "--seed")],
)  # fmt: skip
def test_numbers_out_of_range(text: str, flag: str) -> None:
    message = refused(text)
    assert flag in message and ("between" in message or "too large" in message)


def test_range_ends_are_allowed() -> None:
    r = parse("a fox --steps 60 --cfg 30 --n 4 --seed 4294967295")
    assert (r.steps, r.guidance, r.count, r.seeds[0]) == (60, 30.0, 4, 4294967295)
    assert parse("a fox --steps 1 --cfg 0 --n 1 --seed 0").seeds == (0,)


@pytest.mark.parametrize(
    "options",
    [PromptOptions(steps=0), PromptOptions(steps=1000), PromptOptions(guidance=math.nan),
     PromptOptions(guidance=math.inf), PromptOptions(guidance=31.0), PromptOptions(count=5),
     PromptOptions(seed=-5), PromptOptions(seed=2**64), PromptOptions(steps=10**400)],
)  # fmt: skip
def test_slash_options_out_of_range(options: PromptOptions) -> None:
    assert "option" in refused("a fox", options)


@pytest.mark.parametrize(
    "text", ["", "   ", "--ar 16:9", "  --seed 4", "\u200b\u200f\u200e", "\u2800 \u3164", "\x00\x07"]
)
def test_empty_prompt(text: str) -> None:
    message = refused(text)
    assert "empty" in message or "--" in message


def test_flags_before_the_prompt_are_explained() -> None:
    assert "after the prompt" in refused("--ar 16:9 a red fox")


@pytest.mark.parametrize(
    ("text", "name"),
    [("a fox --seed 1 --seed 2", "--seed"), ("a fox --ar 1:1 --aspect 2:3", "--ar"),
     ("a fox --cfg 3 --guidance 4", "--cfg"), ("a fox --no x --no y", "--no")],
)  # fmt: skip
def test_repeated_flag_is_refused_by_name(text: str, name: str) -> None:
    message = refused(text)
    assert name in message and "twice" in message


def test_prompt_over_the_token_limit_is_refused_saying_by_how_much() -> None:
    limit = PROFILE.token_limit
    ok = " ".join(["fox"] * (limit - 2))
    assert parse(ok).prompt == ok
    message = refused(ok + " extra words")
    assert "2 tokens over" in message and str(limit) in message
    assert "1 token over" in refused(ok + " x")


def test_negative_prompt_is_limited_too() -> None:
    long = " ".join(["blur"] * 80)
    assert "negative prompt is 5 tokens over" in refused(f"a fox --no {long}")
    assert "negative prompt" in refused("a fox", PromptOptions(negative=long))


# --- text handling -----------------------------------------------------------------------------------


def test_control_characters_removed_and_whitespace_collapsed() -> None:
    assert parse("a\x00 red\x07\tfox\n\n in\r\nsnow").prompt == "a red fox in snow"


def test_zero_width_rtl_and_emoji_are_kept_inside_text() -> None:
    text = "a fox\u200b in שלג\u200f 🦊🔥 and 雪"
    assert parse(text).prompt == text


def test_six_thousand_character_prompt_is_refused_not_crashed() -> None:
    big = "fox " * 1500
    assert "tokens over" in refused(big)
    # Without spaces it is one "word" to the stand-in tokenizer: it parses and is kept whole.
    assert len(parse("x" * 6000).prompt) == 6000


def test_hyphens_in_text_are_not_flags() -> None:
    assert parse("a well-known fox -- very red").prompt == "a well-known fox -- very red"
    assert parse("a fox --5").prompt == "a fox --5"


# --- sizes -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("native", [64, 512, 1024])
@pytest.mark.parametrize("aspect", ASPECT_CHOICES)
def test_aspect_sizes(aspect: str, native: int) -> None:
    w, h = aspect_size(aspect, native)
    unit = 64 if native >= 512 else 8
    assert w % unit == 0 and h % unit == 0
    aw, ah = map(int, aspect.split(":"))
    assert abs(math.log((w / h) / (aw / ah))) < 0.06  # ratio within 6 %
    assert abs(math.log(w * h / native**2)) < 0.2  # area within 20 % of native²
    if aw > ah:
        assert w > h
    elif aw < ah:
        assert w < h
    else:
        assert (w, h) == (native, native)


def test_aspect_size_refuses_bad_input() -> None:
    with pytest.raises(PromptError):
        aspect_size("9:1", 512)


# --- derivations ---------------------------------------------------------------------------------


def test_variation_of_keeps_settings_with_new_seeds_from_the_image() -> None:
    parent = parse("a fox --ar 16:9 --n 4 --seed 10 --no text")
    v = variation_of(parent, 2, HASH, (77, 78, 79, 80))
    assert (v.mode, v.strength, v.source_image, v.seeds) == (
        Mode.VARIATION,
        VARIATION_STRENGTH,
        HASH,
        (77, 78, 79, 80),
    )
    assert (v.prompt, v.negative_prompt, v.width, v.height, v.steps) == (
        parent.prompt, parent.negative_prompt, parent.width, parent.height, parent.steps)  # fmt: skip
    with pytest.raises(IndexError):
        variation_of(parent, 4, HASH, (1,))


def test_upscale_of_doubles_within_four_times_native_pixels() -> None:
    parent = parse("a fox --n 4 --seed 10")
    u = upscale_of(parent, 3, HASH, PROFILE)
    assert (u.width, u.height) == (512 * UPSCALE_FACTOR, 512 * UPSCALE_FACTOR)
    assert (u.mode, u.strength, u.seeds, u.source_image) == (Mode.UPSCALE, UPSCALE_STRENGTH, (13,), HASH)
    wide = upscale_of(parse("a fox --ar 16:9"), 0, HASH, PROFILE)
    assert wide.width * wide.height <= 4 * 512**2
    assert wide.width % 64 == 0 and wide.height % 64 == 0 and wide.width > 704
    again = upscale_of(u, 0, HASH, PROFILE)  # already at the cap: no bigger, no smaller
    assert (again.width, again.height) == (u.width, u.height)
    with pytest.raises(IndexError):
        upscale_of(parent, 4, HASH, PROFILE)


def test_reroll_of_keeps_everything_but_the_seeds() -> None:
    parent = parse("a fox --n 2", source_image=HASH)
    r = reroll_of(parent, (5, 6))
    assert r == replace(parent, seeds=(5, 6))
    with pytest.raises(ValueError):
        reroll_of(parent, ())


def test_request_json_round_trip() -> None:
    r = parse("a fox 🦊 --ar 21:9 --n 2 --no text", source_image=HASH)
    assert GenerationRequest.from_json(r.to_json()) == r


# --- nothing but PromptError ----------------------------------------------------------------------

_FLAG_WORDS = st.sampled_from(
    [*KNOWN_FLAGS, "--", "--x", "—ar", "=", ":", "16:9", "0", "-1", "1e9", "nan", "4", "7.5"]
)
_texts = st.lists(st.one_of(st.text(max_size=12), _FLAG_WORDS), max_size=12).map(" ".join)
_numbers = st.one_of(st.none(), st.integers(min_value=-(2**70), max_value=2**70), st.floats())
_options = st.builds(
    PromptOptions,
    negative=st.one_of(st.none(), st.text(max_size=20)),
    aspect=st.one_of(st.none(), st.sampled_from(ASPECT_CHOICES), st.text(max_size=8)),
    steps=_numbers,
    guidance=_numbers,
    seed=_numbers,
    count=_numbers,
    strength=_numbers,
)


@settings(max_examples=400, deadline=None)
@given(text=_texts, options=_options, with_image=st.booleans(), native=st.sampled_from([64, 512, 1024]))
def test_any_input_parses_or_raises_prompt_error(
    text: str, options: PromptOptions, with_image: bool, native: int
) -> None:
    profile = replace(PROFILE, native_size=native)
    try:
        r = parse(text, options, profile=profile, source_image=HASH if with_image else None)
    except PromptError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert r.prompt and r.prompt == r.prompt.strip()
    assert 1 <= r.count <= 4 and all(0 <= s < 2**32 for s in r.seeds)
    assert PROFILE.min_steps <= r.steps <= PROFILE.max_steps and 0 <= r.guidance <= 30
    assert r.width % 8 == 0 and r.height % 8 == 0
    r.prompt.encode("utf-8")  # no lone surrogates reach the files and the database
