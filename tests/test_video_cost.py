"""The video cost of Animate, apart from Discord: the bot's VIDEO_COST, VIDEO_MODEL (and EDIT_MODEL)
settings, a guild's own cost over the bot's, the `/server-defaults video_cost:` option checked, and the
panel's line.
(Through the real client: tests/test_bot_settings.py; the stored column: tests/test_storage.py.)"""

from __future__ import annotations

import pytest

from bot.commands.errors import UserError
from bot.commands.settings import CLEAR_COST, settings_text, video_cost, video_cost_changes
from bot.settings import MAX_VIDEO_COST, SettingsError, settings_from_mapping
from jobs.delivery import SecondModel
from storage.interface import PromptSettings


def test_video_settings_default_to_eight_images_and_no_video_model() -> None:
    s = settings_from_mapping({"DISCORD_TOKEN": "x"})
    assert (s.video_cost, s.video_model) == (8, None)
    s = settings_from_mapping({"DISCORD_TOKEN": "x", "VIDEO_COST": " 12 ", "VIDEO_MODEL": " tiny-video "})
    assert (s.video_cost, s.video_model) == (12, "tiny-video")
    s = settings_from_mapping({"DISCORD_TOKEN": "x", "VIDEO_COST": "", "VIDEO_MODEL": " "})
    assert (s.video_cost, s.video_model) == (8, None)  # blank: unset
    for edge in ("1", str(MAX_VIDEO_COST)):
        assert settings_from_mapping({"DISCORD_TOKEN": "x", "VIDEO_COST": edge}).video_cost == int(edge)


def test_tiny_names_the_tiny_second_models_and_each_set_one_brings_its_buttons() -> None:
    s = settings_from_mapping({"DISCORD_TOKEN": "x", "VIDEO_MODEL": "tiny", "EDIT_MODEL": "tiny"})
    assert (s.video_model, s.edit_model) == ("tiny-video", "tiny-kontext")  # `tiny` is the image model's
    assert s.second_models == {SecondModel.ANIMATE, SecondModel.EDIT}
    s = settings_from_mapping({"DISCORD_TOKEN": "x", "EDIT_MODEL": " black-forest-labs/FLUX.1-Kontext-dev "})
    assert (s.video_model, s.edit_model) == (None, "black-forest-labs/FLUX.1-Kontext-dev")
    assert s.second_models == {SecondModel.EDIT}
    assert settings_from_mapping({"DISCORD_TOKEN": "x"}).second_models == frozenset()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("0", "VIDEO_COST must be at least 1, not 0"),
        ("-3", "VIDEO_COST must be at least 1, not -3"),
        ("101", "VIDEO_COST must be at most 100 images, not 101"),
        ("eight", "VIDEO_COST must be a whole number, not 'eight'"),
        ("2.5", "VIDEO_COST must be a whole number, not '2.5'"),
    ],
)
def test_a_video_cost_out_of_range_is_refused_naming_it(raw: str, message: str) -> None:
    with pytest.raises(SettingsError) as info:
        settings_from_mapping({"DISCORD_TOKEN": "x", "VIDEO_COST": raw})
    assert str(info.value) == message


def test_a_guilds_video_cost_wins_over_the_bots() -> None:
    assert video_cost(PromptSettings(), 8) == 8
    assert video_cost(PromptSettings(video_cost=12), 8) == 12
    assert video_cost(PromptSettings(video_cost=1, count=4), 30) == 1


def test_the_video_cost_option_sets_clears_or_is_refused() -> None:
    assert video_cost_changes(None) == {}
    assert video_cost_changes(12) == {"video_cost": 12}
    assert video_cost_changes(1) == {"video_cost": 1}
    assert video_cost_changes(MAX_VIDEO_COST) == {"video_cost": MAX_VIDEO_COST}
    assert video_cost_changes(CLEAR_COST) == {"video_cost": None}  # back to the bot's default
    for bad in (-1, MAX_VIDEO_COST + 1):
        with pytest.raises(UserError) as info:
            video_cost_changes(bad)
        assert str(info.value) == (
            "The `video_cost` option must be between 1 and 100 images "
            f"(or 0 for the bot's default), not {bad}."
        )


def test_the_guilds_panel_shows_its_video_cost() -> None:
    assert "Video cost: 8 images (the bot's default)" in settings_text(
        PromptSettings(), guild=True, video_default=8
    )
    assert (
        "Video cost: 12 images\n"
        in settings_text(PromptSettings(video_cost=12), guild=True, video_default=8) + "\n"
    )
    assert (
        "Video cost: 1 image\n"
        in settings_text(PromptSettings(video_cost=1), guild=True, video_default=8) + "\n"
    )
    assert "Video cost" not in settings_text(PromptSettings(video_cost=12), guild=False, video_default=8)
    assert "Video cost" not in settings_text(PromptSettings(), guild=True)  # no default given
