"""`Model hash:` in PNG parameters: a local folder's weights hashed once at load (the built-in `tiny`
too), a cached hub model named by its commit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from generation.media.compose import read_parameters
from generation.pipelines.model_hash import folder_hash, model_hash
from generation.pipelines.tiny import TINY_FOLDER_NAME, build_tiny_model
from tests.fixtures_generation import tiny_request

pytest_plugins = ["tests.fixtures_generation"]


def test_a_folders_hash_follows_its_weights_and_nothing_else(tiny_cache_dir: Path, tmp_path: Path) -> None:
    cached = tiny_cache_dir / TINY_FOLDER_NAME
    build_tiny_model(tmp_path / "same", seed=0)
    build_tiny_model(tmp_path / "other", seed=1)
    (tmp_path / "same" / "README.md").write_text("not weights")
    ours = folder_hash(cached)
    assert len(ours) == 10 and int(ours, 16) >= 0
    assert folder_hash(tmp_path / "same") == ours
    assert folder_hash(tmp_path / "other") != ours
    assert model_hash(str(cached), None) == ours


def test_a_cached_hub_model_is_named_by_its_commit(tmp_path: Path) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--owner--photo"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "model_index.json").write_text("{}")
    assert model_hash("owner/photo", tmp_path) == commit[:10]
    assert model_hash(str(repo / "snapshots" / commit), None) == commit[:10]
    assert model_hash("owner/elsewhere", tmp_path) is None


def test_pngs_carry_the_hash_worked_out_at_load(
    tiny_model: Any, tiny_engine: Any, tiny_cache_dir: Path
) -> None:
    assert tiny_model.model_hash == folder_hash(tiny_cache_dir / TINY_FOLDER_NAME)
    [[image]] = tiny_engine.run_batch([tiny_request(seeds=(5,))], [None], lambda *_: True)
    assert f"Size: 64x64, Model hash: {tiny_model.model_hash}, Model: tiny" in (
        read_parameters(image.png) or ""
    )
