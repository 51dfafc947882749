"""The edit spec of one picture's actions: defaults, checks, names, storage."""

from __future__ import annotations

import json

import pytest

from generation.prompts.edits import (
    EDIT_DEFAULTS,
    REGION_NAMES,
    Direction,
    EditError,
    EditKind,
    EditSpec,
    canonical_regions,
    edit_spec,
    parse_zoom,
)


def test_every_kind_has_defaults_and_only_masked_kinds_inpaint() -> None:
    assert set(EDIT_DEFAULTS) == set(EditKind)
    inpainting = {kind for kind, d in EDIT_DEFAULTS.items() if d.inpaint}
    assert inpainting == {EditKind.VARY_REGION, EditKind.ZOOM_OUT, EditKind.PAN, EditKind.MAKE_SQUARE}
    assert EDIT_DEFAULTS[EditKind.VARY_SUBTLE].strength < EDIT_DEFAULTS[EditKind.VARY_STRONG].strength
    subtle, creative = EDIT_DEFAULTS[EditKind.UPSCALE_SUBTLE], EDIT_DEFAULTS[EditKind.UPSCALE_CREATIVE]
    assert subtle.strength < creative.strength


def test_spec_takes_its_kinds_default_strength_unless_given() -> None:
    assert edit_spec(EditKind.VARY_STRONG).strength == EDIT_DEFAULTS[EditKind.VARY_STRONG].strength
    assert edit_spec(EditKind.VARY_STRONG, strength=0.5, steps=9) == EditSpec(EditKind.VARY_STRONG, 0.5, 9)


@pytest.mark.parametrize(
    ("kind", "kwargs", "words"),
    [
        (EditKind.ZOOM_OUT, {}, "zoom factor"),
        (EditKind.VARY_SUBTLE, {"factor": 1.5}, "zoom factor"),
        (EditKind.PAN, {}, "direction"),
        (EditKind.ZOOM_OUT, {"factor": 1.5, "direction": Direction.UP}, "direction"),
        (EditKind.VARY_REGION, {}, "Choose a part"),
        (EditKind.PAN, {"direction": Direction.UP, "regions": ("top",)}, "only with it"),
        (EditKind.VARY_SUBTLE, {"strength": 0.0}, "strength"),
        (EditKind.VARY_SUBTLE, {"strength": 1.5}, "strength"),
        (EditKind.VARY_SUBTLE, {"steps": 0}, "steps"),
        (EditKind.VARY_REGION, {"regions": ("middle",)}, "Unknown part"),
    ],
)
def test_bad_specs_are_refused_with_a_clear_message(
    kind: EditKind, kwargs: dict[str, object], words: str
) -> None:
    with pytest.raises(EditError, match=words):
        edit_spec(kind, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["1", "0.5", "2.01", "nan", "inf", "big", ""])
def test_zoom_factors_outside_one_to_two_are_refused(text: str) -> None:
    with pytest.raises(EditError, match="zoom factor"):
        parse_zoom(text)


def test_zoom_factors_are_read_as_members_type_them() -> None:
    assert [parse_zoom(t) for t in ("2", "1.5", " 1.25x ", "2X")] == [2.0, 1.5, 1.25, 2.0]


def test_regions_are_canonical_names_once_in_grid_order() -> None:
    assert canonical_regions(["Bottom_Right", "top", "centre", "TOP"]) == ("top", "center", "bottom right")
    assert canonical_regions(list(reversed(REGION_NAMES))) == REGION_NAMES


def test_action_text_names_what_was_done_and_the_job() -> None:
    zoom = edit_spec(EditKind.ZOOM_OUT, factor=2, of_job="j1")
    assert zoom.action_text() == "Action: zoom out 2x of job j1"
    assert edit_spec(EditKind.MAKE_SQUARE).action_text() == "Action: make square"
    assert edit_spec(EditKind.ZOOM_OUT, factor=1.5).describe() == "zoom out 1.5x"
    assert edit_spec(EditKind.PAN, direction=Direction.LEFT).describe() == "pan left"
    region = edit_spec(EditKind.VARY_REGION, regions=("center", "top"), mask_image="ab" * 32)
    assert region.describe() == "vary (region) top, center + uploaded mask"
    assert edit_spec(EditKind.MAKE_SQUARE).describe() == "make square"


def test_json_round_trips_and_a_forged_value_is_refused() -> None:
    specs = [
        edit_spec(EditKind.ZOOM_OUT, factor=1.5, steps=12),
        edit_spec(EditKind.PAN, direction=Direction.DOWN),
        edit_spec(EditKind.VARY_REGION, regions=("left",), mask_image="cd" * 32),
        edit_spec(EditKind.UPSCALE_CREATIVE, of_job="0123456789ab"),
    ]
    assert [EditSpec.from_json(s.to_json()) for s in specs] == specs
    forged = json.loads(specs[0].to_json()) | {"factor": 7}
    with pytest.raises(EditError, match="zoom factor"):
        EditSpec.from_json(json.dumps(forged))
    for broken in ('{"kind": "explode"}', "[]", "not json", json.dumps(forged | {"strength": "x"})):
        with pytest.raises(EditError):
            EditSpec.from_json(broken)


def test_batch_key_groups_by_kind_strength_and_steps() -> None:
    two, one_half = edit_spec(EditKind.ZOOM_OUT, factor=2), edit_spec(EditKind.ZOOM_OUT, factor=1.5)
    assert two.batch_key() == one_half.batch_key()  # masks differ per image, the call is the same
    assert two.batch_key() != edit_spec(EditKind.ZOOM_OUT, factor=2, strength=0.5).batch_key()
    assert two.batch_key() != edit_spec(EditKind.MAKE_SQUARE).batch_key()
