"""The bot's pure pieces: settings, redaction, custom ids, blocked words, throttling, texts."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from bot.formatting import MESSAGE_LIMIT, fit, refusal_text, usage_text, when
from bot.settings import SettingsError, TokenRedactor, load_settings, settings_from_mapping
from bot.views.custom_ids import Action, ButtonRef, make_custom_id, new_job_id, parse_custom_id
from generation.prompts.request import GenerationRequest
from jobs.messages import result_text
from jobs.throttle import EditThrottle
from storage.blocklist import clean_phrase, find_blocked
from storage.interface import LimitName, Limits, Refusal, Usage

TOKEN = "MTIzNDU2Nzg5.secret-token.value"
ROOT = Path(__file__).resolve().parents[1]


# -- settings ---------------------------------------------------------------------------------------


def test_settings_defaults_and_overrides(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("DISCORD_TOKEN=from-file\nMODEL_ID=tiny\nIMAGES_PER_HOUR=5\n")
    s = load_settings({"DISCORD_TOKEN": TOKEN, "MAX_QUEUED": "unlimited", "SYNC_GUILD_ID": "42"}, env_file)
    assert s.discord_token == TOKEN  # the environment wins over .env
    assert s.model_id == "tiny"  # .env fills what the environment lacks
    assert s.default_limits == Limits(5, 200, None, 0.0)
    assert s.sync_guild_id == 42
    assert s.ray_replicas is None and s.ray_autoscale is None
    assert not s.optimise.compile_unet
    tuned = settings_from_mapping({"DISCORD_TOKEN": "x", "OPTIMISE": "channels_last, compile"}).optimise
    assert tuned.channels_last and tuned.compile_unet and not tuned.fuse_qkv
    assert settings_from_mapping({"DISCORD_TOKEN": "x", "RAY_AUTOSCALE": "1, 4"}).ray_autoscale == (1, 4)
    assert s.database_path == Path("data/imagine.db") and s.device == "auto"
    assert TOKEN not in repr(s)
    assert s.model_set.names == ("tiny",) and s.model_memory_gb is None  # MODEL_ID alone
    several = settings_from_mapping({"DISCORD_TOKEN": "x", "MODELS": "a=tiny,b=/m", "MODEL_MEMORY_GB": "6"})
    assert several.model_set.names == ("a", "b") and several.model_memory_gb == 6.0
    on_ray = settings_from_mapping(
        {"DISCORD_TOKEN": "x", "MODELS": "a=tiny,b=tiny", "GENERATION_BACKEND": "ray"}
    )
    assert on_ray.model_set.names == ("a", "b") and on_ray.generation_backend == "ray"


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({}, "DISCORD_TOKEN"),
        ({"DISCORD_TOKEN": "x", "IMAGES_PER_HOUR": "many"}, "IMAGES_PER_HOUR"),
        ({"DISCORD_TOKEN": "x", "DEVICE": "tpu"}, "DEVICE"),
        ({"DISCORD_TOKEN": "x", "GENERATION_BACKEND": "k8s"}, "GENERATION_BACKEND"),
        ({"DISCORD_TOKEN": "x", "COOLDOWN_SECONDS": "-1"}, "COOLDOWN_SECONDS"),
        ({"DISCORD_TOKEN": "x", "SHARD_IDS": "0,3", "SHARD_COUNT": "2"}, "SHARD_IDS"),
        ({"DISCORD_TOKEN": "x", "RAY_AUTOSCALE": "4,1"}, "RAY_AUTOSCALE"),
        ({"DISCORD_TOKEN": "x", "OPTIMISE": "compile,warp_speed"}, "OPTIMISE"),
        ({"DISCORD_TOKEN": "x", "RAY_AUTOSCALE": "two"}, "RAY_AUTOSCALE"),
        ({"DISCORD_TOKEN": "x", "RAY_REPLICAS": "2", "RAY_AUTOSCALE": "1,4"}, "not both"),
        ({"DISCORD_TOKEN": "x", "MODELS": "photo"}, "MODELS"),
        ({"DISCORD_TOKEN": "x", "MODEL_MEMORY_GB": "0"}, "MODEL_MEMORY_GB"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], needle: str) -> None:
    with pytest.raises(SettingsError, match=needle):
        settings_from_mapping(env)


def test_missing_token_exits_2_with_one_line(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "bot"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "DISCORD_TOKEN" in lines[0]


def test_redactor_hides_token_in_messages_args_and_tracebacks() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("test.redaction")
    handler = logging.StreamHandler(stream)
    handler.addFilter(TokenRedactor((TOKEN,)))
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("token is %s", TOKEN)
        logger.warning(f"inline {TOKEN}")
        try:
            raise RuntimeError(f"failed with {TOKEN}")
        except RuntimeError:
            logger.exception("boom")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert TOKEN not in out
    assert out.count("[redacted]") == 3 and "RuntimeError" in out


# -- custom ids ---------------------------------------------------------------------------------------


def test_custom_ids_round_trip() -> None:
    job = new_job_id()
    for ref in (
        ButtonRef(Action.VARIATION, job, 0),
        ButtonRef(Action.UPSCALE, job, 3),
        ButtonRef(Action.REROLL, job),
        ButtonRef(Action.CANCEL, job),
        ButtonRef(Action.INFO, job),
        ButtonRef(Action.DELETE, job),
    ):
        cid = make_custom_id(ref)
        assert len(cid) <= 100 and parse_custom_id(cid) == ref
    assert make_custom_id(ButtonRef(Action.VARIATION, job, 0)) == f"imagine:v:{job}:1"


@pytest.mark.parametrize(
    "forged",
    [
        "imagine:v:abc:1",  # not a job id
        "imagine:v:0123456789ab:5",  # no image 5
        "imagine:v:0123456789ab:0",
        "imagine:x:0123456789ab:1",
        "imagine:r:0123456789ab:1",
        "imagine:c:0123456789ab:1",  # job controls carry no index
        "imagine:d:0123456789ab:2",
        "imagine:v:0123456789ab:1 ",
        "imagine:v:0123456789ab:1' OR 1=1 --",
        "imagine:u:0123456789AB:1",
        "",
    ],
)
def test_forged_custom_ids_are_rejected(forged: str) -> None:
    assert parse_custom_id(forged) is None


def test_make_custom_id_refuses_bad_parts() -> None:
    with pytest.raises(ValueError):
        make_custom_id(ButtonRef(Action.UPSCALE, "nope", 0))
    with pytest.raises(ValueError):
        make_custom_id(ButtonRef(Action.UPSCALE, new_job_id(), 4))


# -- blocked words ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "phrases", "hit"),
    [
        ("A GORE scene", ["gore"], "gore"),
        ("gorеous", ["gore"], None),  # part of a word (and a Cyrillic е): no match
        ("gorgeous sunset", ["gore"], None),
        ("blood-red sky", ["blood"], "blood"),
        ("a red   fox here", ["red fox"], "red fox"),
        ("a redfox", ["red fox"], None),
        ("Straße bei Nacht", ["STRASSE"], "STRASSE"),  # casefold: ß → ss
        ("ein Mädchen", ["mädchen"], "mädchen"),
        ("einMädchen", ["mädchen"], None),  # unicode letters are word characters
        ("убийство ночью", ["Убийство"], "Убийство"),
        ("猫", ["猫"], "猫"),
        ("b\u200bad idea", ["bad"], "bad"),  # zero-width space inside the word is ignored
        ("Robert'); DROP TABLE jobs;--", ["drop table"], "drop table"),
        ("it's 100% fine", ["100%"], "100%"),
        ("a.b*c", ["a.b*c"], "a.b*c"),  # regex characters are data
        ("aXb", ["a.b"], None),
    ],
)
def test_blocked_word_matching(prompt: str, phrases: list[str], hit: str | None) -> None:
    assert find_blocked(prompt, phrases) == hit


def test_clean_phrase() -> None:
    assert clean_phrase("  Red   FOX ") == "red fox"
    assert clean_phrase("x'); DROP TABLE t;--") == "x'); drop table t;--"
    with pytest.raises(ValueError):
        clean_phrase(" \u200b ")
    with pytest.raises(ValueError):
        clean_phrase("a" * 101)


# -- throttle -----------------------------------------------------------------------------------------


def test_throttle_allows_one_edit_per_interval_per_job() -> None:
    now = [100.0]
    throttle = EditThrottle(1.5, lambda: now[0])
    assert throttle.ready("a")
    assert not throttle.ready("a")
    assert throttle.ready("b")  # other jobs are independent
    now[0] += 1.49
    assert not throttle.ready("a")
    now[0] += 0.01
    assert throttle.ready("a")
    throttle.forget("a")
    assert throttle.ready("a")


# -- texts --------------------------------------------------------------------------------------------


def _request(**kw: object) -> GenerationRequest:
    base = dict(
        prompt="a red fox", width=512, height=288, steps=20, guidance=7.5, seeds=(42, 43), model="tiny"
    )
    base.update(kw)
    return GenerationRequest(**base)  # type: ignore[arg-type]


def test_refusal_text_names_limit_and_relative_time() -> None:
    refusal = Refusal(LimitName.PER_HOUR, 1_700_000_000.2, Limits(10, 50, 2, 0.0))
    text = refusal_text(refusal, 4)
    assert "images per hour" in text and "10" in text and "<t:1700000001:R>" in text
    cooldown = refusal_text(Refusal(LimitName.COOLDOWN, 5.0, Limits(None, None, None, 30.0)), 1)
    assert "cooldown" in cooldown and "30 s" in cooldown


def test_result_text_shows_prompt_seeds_size_and_mention() -> None:
    text = result_text(_request(negative_prompt="text"), (42, 43), 777, mention=True)
    assert "a red fox" in text and "42, 43" in text and "512×288" in text and "20 steps" in text
    assert "<@777>" in text and "text" in text
    assert "<@777>" not in result_text(_request(), (42,), 777, mention=False)
    long = result_text(_request(prompt="x" * 6000), (1,), 1, mention=False)
    assert len(long) < 2000
    assert "@everyone" not in result_text(_request(prompt="@everyone look"), (1,), 1, mention=False)


def test_usage_text() -> None:
    usage = Usage(Limits(10, None, 3, 60.0), 4, 9, 1, 1000.0, 2000.0, 1060.0)
    text = usage_text(usage, now=1000.0)
    assert "4 of 10 used, 6 left" in text and "9 used (no limit)" in text
    assert when(1000.0) in text and "1 of 3" in text and when(1060.0) in text


def test_fit_cuts_a_long_list_to_one_message_with_a_count_of_the_rest() -> None:
    items = [f"• `job{i:06d}`: position {i}" for i in range(300)]
    text = fit(["**300** job(s) waiting."], items, ["(end)"])
    assert len(text) <= MESSAGE_LIMIT
    shown = text.count("• `job")
    assert 0 < shown < 300 and text.endswith(f"… and {300 - shown} more\n(end)")
    assert text.startswith("**300** job(s) waiting.\n• `job000000`")
    assert fit(["a"], ["b", "c"], ["d"]) == "a\nb\nc\nd"  # what fits is left alone
    words = fit(["Blocked (500):"], [f"“w{i}”" for i in range(500)], sep=", ", limit=100)
    assert len(words) <= 100 and words.startswith("Blocked (500):\n“w0”, “w1”") and "more" in words
    assert len(fit(["x" * 3000], [])) == MESSAGE_LIMIT  # even a head too long is cut
