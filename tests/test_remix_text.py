"""Remix's pre-filled text, parsed back as `/imagine` parses it, and the inline `--zoom F`."""

from __future__ import annotations

import pytest

from generation.prompts.command import parse_command
from generation.prompts.edits import EditError, EditKind, edit_spec
from generation.prompts.remix import gives_shape, remix_text, remixed, split_zoom_flag
from generation.prompts.request import Mode, ModelProfile, PromptOptions, edit_of, variation_of
from tests.fixtures_generation import tiny_request

PROFILE = ModelProfile(name="tiny", native_size=64, default_steps=4, default_guidance=7.5)


def parse(text: str) -> list:  # type: ignore[type-arg]
    return parse_command(
        text, PromptOptions(), PROFILE, count_tokens=lambda t: len(t.split()) + 2, random_seed=lambda: 9
    )


def test_the_prefilled_text_parses_back_to_the_same_prompt_side_settings() -> None:
    original = tiny_request(
        prompt="a fox", negative_prompt="text, watermark", steps=6, guidance=5.0, seeds=(1, 2)
    )
    [again] = parse(remix_text(original, with_shape=True))
    assert (again.prompt, again.negative_prompt, again.steps, again.guidance) == (
        "a fox",
        "text, watermark",
        6,
        5.0,
    )
    assert again.count == 2 and again.aspect == original.aspect
    assert "--n " not in remix_text(original) and "--ar" not in remix_text(original)


def test_remixed_takes_the_new_prompt_and_keeps_the_picture_side() -> None:
    parent = tiny_request(prompt="a fox", seeds=(1, 2, 3, 4))
    variation = variation_of(parent, 2, "ab" * 32, (7, 8, 9, 10))
    [submitted] = parse("a wolf at night --steps 8 --no blur")
    out = remixed(variation, submitted)
    assert (out.prompt, out.negative_prompt, out.steps) == ("a wolf at night", "blur", 8)
    assert (out.mode, out.source_image, out.strength) == (Mode.VARIATION, "ab" * 32, variation.strength)
    zoom = edit_of(parent, edit_spec(EditKind.ZOOM_OUT, factor=2), "cd" * 32, (64, 64), (5,))
    kept = remixed(zoom, submitted)
    assert (kept.edit, kept.seeds, kept.width, kept.height) == (zoom.edit, (5,), 64, 64)


def test_a_remixed_variation_runs_the_submitted_aspect_count_and_seed() -> None:
    parent = tiny_request(prompt="a fox", width=112, height=64, aspect="16:9", seeds=(1, 2))
    variation = variation_of(parent, 0, "ab" * 32, (7, 8))
    prefill = remix_text(parent, with_shape=True)
    assert "--ar 16:9" in prefill and "--n 2" in prefill
    [submitted] = parse(prefill.replace("--ar 16:9", "--ar 1:1").replace("--n 2", "--n 3 --seed 40"))
    out = remixed(variation, submitted)
    assert (out.width, out.height, out.aspect, out.seeds) == (64, 64, "1:1", (40, 41, 42))
    assert (out.mode, out.source_image) == (Mode.VARIATION, "ab" * 32)


@pytest.mark.parametrize(
    ("text", "shaped"), [("a fox --ar 1:1", True), ("a fox --aspect 2:3", True), ("a fox", False)]
)
def test_gives_shape_sees_an_aspect_flag(text: str, shaped: bool) -> None:
    assert gives_shape(text) is shaped


@pytest.mark.parametrize(
    ("text", "rest", "factor"),
    [
        ("a fox --zoom 1.5", "a fox", 1.5),
        ("a fox --zoom 2x --steps 4", "a fox --steps 4", 2.0),
        ("a fox", "a fox", None),
    ],
)
def test_inline_zoom_is_taken_out_and_checked(text: str, rest: str, factor: float | None) -> None:
    assert split_zoom_flag(text) == (rest, factor)


@pytest.mark.parametrize(
    ("text", "message"),
    [("a --zoom 3", "at most 2"), ("a --zoom", "needs a factor"), ("a --zoom 1.5 --zoom 2", "once")],
)
def test_a_bad_inline_zoom_is_refused_clearly(text: str, message: str) -> None:
    with pytest.raises(EditError, match=message):
        split_zoom_flag(text)
