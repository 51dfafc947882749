"""`Model hash:` for PNG parameters: a short name for the exact weights a model was loaded from,
worked out once when it loads (torch-free).

A hub model in the cache is named by its commit (the snapshot folder's name), which says the same as
hashing its files and costs nothing. A local folder (the built-in `tiny` too) is hashed: sha256 over
its weight files' relative paths and bytes, in path order. Either way the first ten hex digits, the
length AUTOMATIC1111 shows."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from huggingface_hub import try_to_load_from_cache

SHORT = 10
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth")
_SNAPSHOT = re.compile(r"[/\\]snapshots[/\\]([0-9a-f]{40})(?:[/\\]|$)")
_CHUNK = 1 << 20


def folder_hash(folder: Path) -> str:
    """The short sha256 of a diffusers folder's weight files (paths and bytes, in path order)."""
    digest = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    for path in files:
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()[:SHORT]


def model_hash(source: str, cache_dir: Path | None) -> str | None:
    """The short hash of the model loaded from `source` (a folder, or a hub id in the cache at
    `cache_dir`, None: the hub's default); None when neither can be found."""
    folder = Path(source).expanduser()
    if folder.is_dir():
        commit = _SNAPSHOT.search(str(folder.resolve()))
        return commit.group(1)[:SHORT] if commit else folder_hash(folder)
    index = try_to_load_from_cache(source, "model_index.json", cache_dir=cache_dir)
    if isinstance(index, str) and (commit := _SNAPSHOT.search(index)):
        return commit.group(1)[:SHORT]
    return None
