"""The prompt grammar: permutations, repeats, macros, weights and the new flags, as pure functions."""

from __future__ import annotations

import contextlib
import itertools
import math
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from generation.prompts.command import parse_command
from generation.prompts.errors import PromptError
from generation.prompts.flags import FLAG_NAMES
from generation.prompts.grammar import (
    MAX_JOBS,
    check_macro,
    count_permutations,
    expand_macros,
    expand_permutations,
)
from generation.prompts.parser import ParseContext, parse_prompt
from generation.prompts.request import GenerationRequest, ModelProfile, PromptDefaults, PromptOptions
from generation.prompts.weights import EMPHASIS, Fragment, parse_emphasis, parse_weights, plain_text

PROFILE = ModelProfile(
    name="m", native_size=512, default_steps=20, default_guidance=7.5, prompt_windows=3, supports_weights=True
)


def chars(text: str) -> int:
    """A stand-in tokenizer: one token per character plus begin/end (like `tiny`'s byte tokenizer)."""
    return len(text) + 2


def command(
    text: str,
    options: PromptOptions | None = None,
    defaults: PromptDefaults | None = None,
    macros: dict[str, str] | None = None,
    profile: ModelProfile = PROFILE,
) -> list[GenerationRequest]:
    counter = itertools.count(1000)
    return parse_command(
        text,
        options or PromptOptions(),
        profile,
        count_tokens=chars,
        random_seed=lambda: next(counter),
        defaults=defaults,
        macros=macros,
    )


# permutations -------------------------------------------------------------------------------------


def test_permutations_make_one_job_per_combination_in_order() -> None:
    jobs = command("a {red, blue} fox on {snow, grass}")
    assert [j.prompt for j in jobs] == [
        "a red fox on snow",
        "a red fox on grass",
        "a blue fox on snow",
        "a blue fox on grass",
    ]


def test_nested_groups_and_flags_inside_groups() -> None:
    assert expand_permutations("{a {x, y}, b} z") == ["a x z", "a y z", "b z"]
    jobs = command("fox --ar {1:1, 16:9}")
    assert [j.aspect for j in jobs] == ["1:1", "16:9"]


def test_escaped_braces_and_commas_are_literal() -> None:
    assert expand_permutations(r"a \{b, c\} {d\, e, f}") == ["a {b, c} d, e", "a {b, c} f"]


def test_more_than_sixteen_is_refused_with_the_count() -> None:
    with pytest.raises(PromptError, match="32 combinations"):
        command("{a,b} {c,d} {e,f} {g,h} {i,j}")
    # counted without expanding: 2**40 combinations answer at once
    with pytest.raises(PromptError, match="combinations"):
        expand_permutations("{a,b} " * 40)


@pytest.mark.parametrize("text", ["a {b, c", "a } b", "{{a}"])
def test_unbalanced_braces_are_refused(text: str) -> None:
    with pytest.raises(PromptError, match="brace"):
        expand_permutations(text)


@given(st.lists(st.lists(st.text("abcxyz ", min_size=1, max_size=4), min_size=1, max_size=3), max_size=3))
def test_count_is_the_product_of_group_sizes(groups: list[list[str]]) -> None:
    text = " ".join("{" + ", ".join(options) + "}" for options in groups)
    expected = math.prod(len(options) for options in groups)
    assert count_permutations(text) == expected
    assert len(expand_permutations(text, limit=10**6)) == expected


@given(st.text("{}\\,ab ()[]:.-0123456789", max_size=40))
def test_grammar_raises_nothing_but_prompt_error(text: str) -> None:
    for step in (expand_permutations, parse_weights, plain_text):
        with contextlib.suppress(PromptError):
            step(text)


@given(st.text(st.characters(codec="utf-8"), max_size=60))
def test_command_raises_nothing_but_prompt_error(text: str) -> None:
    try:
        jobs = command(text)
    except PromptError:
        return
    assert 1 <= len(jobs) <= MAX_JOBS


# repeat -------------------------------------------------------------------------------------------


def test_repeat_makes_jobs_with_fresh_seeds() -> None:
    jobs = command("fox --repeat 3 --n 2")
    assert len(jobs) == 3 and len({j.seeds for j in jobs}) == 3
    assert {j.prompt for j in jobs} == {"fox"}


def test_repeat_with_a_seed_continues_after_the_first_jobs_seeds() -> None:
    assert [j.seeds for j in command("fox --repeat 2 --n 2 --seed 10")] == [(10, 11), (12, 13)]


def test_repeat_range_and_the_total_cap() -> None:
    with pytest.raises(PromptError, match="`--repeat` must be between 1 and 8"):
        command("fox --repeat 9")
    with pytest.raises(PromptError, match="makes 24 jobs"):
        command("{a, b, c} --repeat 8")


@pytest.mark.parametrize("text", ["fox --repeat 0", "fox --r 0", "fox --repeat -1", "fox --repeat 9"])
def test_repeat_out_of_range_is_refused_never_taken_as_one(text: str) -> None:
    with pytest.raises(PromptError, match="must be between 1 and 8 jobs"):
        command(text)


@pytest.mark.parametrize("flag", ["--n 0", "--steps 0", "--stop 0", "--quality 0", "--cfg -1"])
def test_no_number_flag_takes_zero_or_less_as_its_default(flag: str) -> None:
    with pytest.raises(PromptError, match="must be"):
        command(f"fox {flag}")


# macros -------------------------------------------------------------------------------------------


def test_macro_expands_before_parsing() -> None:
    (job,) = command("a fox --gold", macros={"gold": "golden hour, 35mm --ar 3:2"})
    assert job.prompt == "a fox golden hour, 35mm" and job.aspect == "3:2"


def test_macros_are_not_expanded_twice() -> None:
    macros = {"a": "--b", "b": "bee"}
    assert expand_macros("x --a", macros, FLAG_NAMES) == "x --b"
    with pytest.raises(PromptError, match="Unknown flag `--b`"):
        command("x --a", macros=macros)


def test_a_flag_is_never_taken_for_a_macro() -> None:
    (job,) = command("fox --ar 16:9", macros={"ar": "ignored"})
    assert job.aspect == "16:9"


def test_check_macro() -> None:
    assert check_macro("--Gold", " golden  hour --ar 3:2 ", FLAG_NAMES) == ("gold", "golden hour --ar 3:2")
    for name, value, match in [
        ("ar", "x", "is a flag"),
        ("9x", "x", "starting with a letter"),
        ("gold", "", "needs a value"),
        ("gold", "x --silver", "not other macros"),
        ("gold", "x" * 401, "at most 400"),
    ]:
        with pytest.raises(PromptError, match=match):
            check_macro(name, value, FLAG_NAMES)


# weights ------------------------------------------------------------------------------------------


def test_emphasis_forms() -> None:
    assert parse_emphasis("a (red:1.3) fox") == (
        Fragment("a ", 1.0),
        Fragment("red", 1.3),
        Fragment(" fox", 1.0),
    )
    assert parse_emphasis("(big) [small]") == (
        Fragment("big", EMPHASIS),
        Fragment(" ", 1.0),
        Fragment("small", 1 / EMPHASIS),
    )
    assert parse_emphasis("((x))")[0].weight == pytest.approx(EMPHASIS**2)
    assert parse_emphasis(r"a \(b\) c") == (Fragment("a (b) c", 1.0),)


def test_multi_prompt_parts() -> None:
    parts = parse_weights("cat::2 dog::-0.5 bird")
    assert [(p.text, p.weight) for p in parts] == [("cat", 2.0), ("dog", -0.5), ("bird", 1.0)]
    with pytest.raises(PromptError, match="above 0"):
        parse_weights("cat::-1")
    with pytest.raises(PromptError, match="between -10 and 10"):
        parse_weights("(cat:11)")


@given(st.text("ab ()[]:\\.0123456789", max_size=30))
def test_plain_text_holds_no_syntax(text: str) -> None:
    try:
        words = plain_text(text)
    except PromptError:
        return
    assert "::" not in words


def test_weighted_prompt_is_marked_and_counted_without_syntax() -> None:
    (job,) = command("(" + "a" * 80 + ":1.2)")
    assert job.prompt_windows == 2 and job.prompt.startswith("(")
    (plain,) = command("a plain fox")
    assert not plain.weighted


def test_long_prompts_fill_windows_up_to_the_stated_limit() -> None:
    (job,) = command("b" * 200)  # 202 tokens: three windows of 75
    assert job.prompt_windows == 3
    assert command("b" * 150)[0].prompt_windows == 2 and command("b" * 75)[0].prompt_windows == 0
    with pytest.raises(PromptError, match=r"\(228 of 227\)"):
        command("b" * 226)
    with pytest.raises(PromptError, match="negative prompt"):
        command("fox --no " + "c" * 300)
    one_window = replace(PROFILE, prompt_windows=1, supports_weights=False)
    with pytest.raises(PromptError, match="over this model's limit"):
        command("b" * 100, profile=one_window)
    with pytest.raises(PromptError, match="doesn't take prompt weights"):
        command("(fox:1.2)", profile=one_window)


# flags --------------------------------------------------------------------------------------------


def test_new_flags() -> None:
    (job,) = command("fox --tile --stop 50 --chaos 30 --quality 0.5 --sampler dpmpp_2m_karras")
    assert (job.tile, job.stop, job.chaos, job.steps, job.sampler) == (True, 50, 30, 10, "dpmpp_2m_karras")
    (plain,) = command("fox")
    assert (plain.tile, plain.stop, plain.chaos, plain.sampler) == (False, 100, None, None)
    assert plain.batch_key() != job.batch_key()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ("--stop 5", "`--stop` must be between 10 and 100"),
        ("--chaos 101", "`--chaos` must be between 0 and 100"),
        ("--quality 3", "`--quality` must be one of 0.25, 0.5, 1 or 2"),
        ("--sampler plms", "`--sampler` must be one of euler, euler_a, dpmpp_2m"),
        ("--tile yes", "`--tile` takes no value"),
    ],
)
def test_wrong_flag_values_name_the_flag_and_what_is_allowed(flags: str, message: str) -> None:
    with pytest.raises(PromptError, match=message):
        command(f"fox {flags}")


def test_batch_key_separates_sampler_tile_and_weights() -> None:
    base = command("fox --seed 1")[0]
    for other in ("fox --seed 1 --sampler ddim", "fox --seed 1 --tile", "(fox:1.2) --seed 1"):
        assert command(other)[0].batch_key() != base.batch_key()


# precedence ---------------------------------------------------------------------------------------


def test_precedence_slash_then_inline_then_member_then_guild_then_model() -> None:
    guild = PromptDefaults(count=2, aspect="16:9", negative="blur", sampler="ddim", suffix="oil")
    member = PromptDefaults(count=3, sampler="unipc")
    both = member.over(guild)
    (job,) = command("fox", defaults=both)
    assert (job.count, job.aspect, job.negative_prompt, job.sampler) == (3, "16:9", "blur", "unipc")
    assert job.prompt == "fox, oil"
    (inline,) = command("fox --n 1 --ar 3:2 --no text --sampler euler", defaults=both)
    got = (inline.count, inline.aspect, inline.negative_prompt, inline.sampler)
    assert got == (1, "3:2", "text", "euler")
    (slash,) = command("fox --n 1 --ar 3:2", PromptOptions(count=4, aspect="1:1"), defaults=both)
    assert (slash.count, slash.aspect) == (4, "1:1")
    (model,) = command("fox")
    assert (model.count, model.aspect, model.steps, model.sampler) == (1, "1:1", 20, None)


def test_parse_prompt_refuses_repeat() -> None:
    with pytest.raises(PromptError, match="several jobs"):
        parse_prompt("fox --repeat 2", PromptOptions(), ParseContext(PROFILE, chars, lambda: 1))


@pytest.mark.parametrize(
    ("size", "aspect"),
    [((1920, 1080), "16:9"), ((100, 100), "1:1"), ((1000, 50), "4:1"), ((768, 1024), "3:4")],
)
def test_an_image_prompt_without_ar_takes_its_pictures_aspect(size: tuple[int, int], aspect: str) -> None:
    counter = itertools.count(1)
    (request,) = parse_command(
        "a field",
        PromptOptions(),
        PROFILE,
        count_tokens=chars,
        random_seed=lambda: next(counter),
        source_image="ab" * 32,
        source_size=size,
    )
    assert request.aspect == aspect
    (plain,) = command("a field")
    assert plain.aspect == "1:1"  # without a picture: the usual default
