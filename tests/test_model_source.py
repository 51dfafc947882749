"""Where models come from: MODEL_CACHE_DIR is the hub cache `from_pretrained` reads (a hub id cached
there loads offline, and `--check` finds it), folders are checked before any load, and a download's
progress arrives as log lines about every 5%, never as a terminal bar (the hub's progress class is
swapped for `LoggedProgress` only while downloading). No network here: the hub is never asked."""

from __future__ import annotations

import itertools
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import _snapshot_download as hub_snapshot
from huggingface_hub import constants as hub_constants
from huggingface_hub.utils.tqdm import _create_progress_bar

from generation.pipelines.download import LoggedProgress, logged_bar
from generation.pipelines.loading import load_pipeline
from generation.pipelines.source import ModelNotFound, locate_model
from generation.pipelines.tiny import TINY_FOLDER_NAME

REPO_ID = "imagine-tests/tiny-copy"
REVISION = "0" * 40


def hub_bar_class() -> Any:
    """The progress class snapshot_download uses now (its module global)."""
    return vars(hub_snapshot)["hf_tqdm"]


def hub_cache_with_tiny(cache: Path, tiny_cache_dir: Path) -> Path:
    """`cache` laid out as the hub's cache, holding a copy of tiny under REPO_ID."""
    repo = cache / f"models--{REPO_ID.replace('/', '--')}"
    shutil.copytree(tiny_cache_dir / TINY_FOLDER_NAME, repo / "snapshots" / REVISION)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    return repo / "snapshots" / REVISION


def test_a_hub_id_loads_from_model_cache_dir(tmp_path: Path, tiny_cache_dir: Path) -> None:
    if not hub_constants.HF_HUB_OFFLINE:
        pytest.skip("needs HF_HUB_OFFLINE=1 (scripts/test.sh sets it): the hub must not be asked")
    snapshot = hub_cache_with_tiny(tmp_path / "models", tiny_cache_dir)
    found = locate_model(REPO_ID, tmp_path / "models", tmp_path)
    assert found.kind == "cached" and found.path == snapshot
    with pytest.raises(ModelNotFound, match=r"not in the model cache .* HF_HUB_OFFLINE"):
        locate_model(REPO_ID, tmp_path / "elsewhere", tmp_path)
    model = load_pipeline(REPO_ID, "cpu", cache_dir=tmp_path / "models")
    assert model.profile.native_size == 64
    with pytest.raises(OSError):  # the same id, another cache: nothing there, and offline
        load_pipeline(REPO_ID, "cpu", cache_dir=tmp_path / "empty")


def test_folders_are_checked_without_loading(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="does not exist"):
        locate_model(str(tmp_path / "missing"), None, tmp_path)
    (tmp_path / "not-a-model").mkdir()
    with pytest.raises(ModelNotFound, match=r"no model_index\.json"):
        locate_model(str(tmp_path / "not-a-model"), None, tmp_path)
    assert locate_model("tiny", None, tmp_path).describe().endswith("(no download)")


def test_download_progress_is_log_lines_every_five_percent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    original = hub_bar_class()
    with (
        caplog.at_level(logging.INFO, "generation.pipelines.download"),
        logged_bar("some/model", tmp_path) as bar,
    ):
        assert hub_bar_class() is bar and issubclass(bar, LoggedProgress)
        # The two bars snapshot_download makes, as it makes them; the files' sizes arrive as they start.
        common: dict[str, Any] = {"log_level": logging.WARNING, "total": 0, "initial": 0, "unit": "B"}
        transfer = _create_progress_bar(cls=bar, desc="Downloading bytes", **common)
        written = _create_progress_bar(cls=bar, desc="Reconstructing (incomplete total...)", **common)
        for bar_ in (transfer, written):
            bar_.total = 2_000_000_000
            bar_.mininterval = 0  # every update may report (the default throttles to one a half second)
        for _ in range(100):
            transfer.update(20_000_000)
            written.update(20_000_000)
        transfer.close()
        written.close()
    assert hub_bar_class() is original
    lines = [r.getMessage() for r in caplog.records]
    percents = [int(m) for line in lines for m in re.findall(r": (\d+)% of 2\.00 GB into ", line)]
    assert all(f"into {tmp_path}" in line or "done" in line for line in lines)
    assert percents == sorted(percents) and percents[-1] == 100
    assert 19 <= len(percents) <= 21 and all(b - a >= 5 for a, b in itertools.pairwise(percents))
    err = capsys.readouterr().err
    assert "it/s" not in err and "%|" not in err  # no terminal bar
