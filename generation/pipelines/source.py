"""Where a model comes from, found without loading or downloading it: the built-in `tiny` (or the tiny
model of another family, `TINY_FAMILY_IDS`), a local diffusers folder, a Hugging Face id already in the
cache, or one that would be downloaded.

`locate_model` raises `ModelNotFound` (one line naming what to fix) for a folder that does not exist
or is not a diffusers folder, and for a hub id that is not cached while the hub is offline.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import constants as hub_constants
from huggingface_hub import try_to_load_from_cache

TINY_MODEL_ID = "tiny"
TINY_FOLDER_NAME = "tiny-v1"  # bump when build_tiny_model changes, so old caches are not reused

TINY_FAMILY_FOLDERS: dict[str, str] = {
    "tiny-sdxl": "tiny-sdxl-v1",
    "tiny-sd3": "tiny-sd3-v1",
    "tiny-flux": "tiny-flux-v1",
    "tiny-flux-schnell": "tiny-flux-schnell-v1",
    "tiny-kontext": "tiny-kontext-v1",
    "tiny-flux-fill": "tiny-flux-fill-v1",
    "tiny-qwen": "tiny-qwen-v2",
    "tiny-qwen-edit": "tiny-qwen-edit-v1",
    "tiny-qwen-edit-plus": "tiny-qwen-edit-plus-v1",
    "tiny-pixart": "tiny-pixart-v1",
    "tiny-aura": "tiny-aura-v1",
}
"""The built-in tiny model of each family (`generation.pipelines.tiny_families`) → its cache folder;
bump a folder's version when its builder changes, so old caches are not reused."""
TINY_FAMILY_IDS: tuple[str, ...] = tuple(TINY_FAMILY_FOLDERS)
BUILTIN_MODEL_IDS: tuple[str, ...] = (TINY_MODEL_ID, *TINY_FAMILY_IDS)
TINY_EDIT_MODEL_ID = "tiny-kontext"  # what EDIT_MODEL=tiny loads: a tiny Kontext, which edits from words
TINY_VIDEO_MODEL_ID = "tiny-video"  # what VIDEO_MODEL=tiny loads: a tiny Wan image-to-video model


def side_model(setting: str | None, tiny_id: str) -> str | None:
    """A second model's setting (EDIT_MODEL, VIDEO_MODEL) as the name its jobs run on: `tiny` is the
    tiny model of that kind (`tiny_id`: the image model is already called `tiny`), else as written."""
    return tiny_id if setting == TINY_MODEL_ID else setting


class ModelNotFound(ValueError):
    """MODEL_ID names nothing that can be loaded; `str()` is one line saying what to fix."""


@dataclass(frozen=True)
class ModelSource:
    """`kind`: "builtin", "folder", "cached" (a hub id in the cache) or "download" (a hub id to fetch).
    `path`: the folder it loads from (or will be downloaded into); `url`: the hub page, for hub ids."""

    model_id: str
    kind: str
    path: Path
    url: str | None = None

    def describe(self) -> str:
        """One line for `--check` and the start-up log."""
        if self.kind == "builtin":
            return f"{self.model_id}: built-in test model, made locally in {self.path} (no download)"
        if self.kind == "folder":
            return f"{self.model_id}: local diffusers folder {self.path}"
        if self.kind == "cached":
            return f"{self.model_id}: found in the model cache at {self.path}"
        where = f"from {self.url} into {self.path}"
        return f"{self.model_id}: not downloaded yet; the first start fetches it {where}"


def default_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where built-in models are kept when no cache folder is given: `IMAGINE_CACHE` in `environ` (a
    settings mapping the caller passes), else `~/.cache/imagine`."""
    value = (environ or {}).get("IMAGINE_CACHE")
    return Path(value).expanduser() if value else Path("~/.cache/imagine").expanduser()


def hub_cache_dir(cache_dir: Path | None) -> Path:
    """The folder hub downloads go to: MODEL_CACHE_DIR when set, else the Hugging Face default."""
    return cache_dir if cache_dir is not None else Path(hub_constants.HF_HUB_CACHE)


def _looks_like_path(model_id: str) -> bool:
    """A hub id is `name` or `owner/name`; anything else (a leading `/`, `.` or `~`, more than one
    slash, a backslash) can only be meant as a folder."""
    return model_id.startswith(("/", ".", "~")) or model_id.count("/") > 1 or "\\" in model_id


def locate_model(model_id: str, cache_dir: Path | None, tiny_cache_dir: Path) -> ModelSource:
    """Where `model_id` loads from; `ModelNotFound` when it cannot be loaded at all."""
    if model_id == TINY_MODEL_ID:
        return ModelSource(model_id, "builtin", tiny_cache_dir / TINY_FOLDER_NAME)
    if model_id in TINY_FAMILY_FOLDERS:
        return ModelSource(model_id, "builtin", tiny_cache_dir / TINY_FAMILY_FOLDERS[model_id])
    folder = Path(model_id).expanduser()
    if folder.is_dir():
        if not (folder / "model_index.json").is_file():
            raise ModelNotFound(
                f"MODEL_ID folder {folder} has no model_index.json: it is not a diffusers model folder"
            )
        return ModelSource(model_id, "folder", folder.resolve())
    if _looks_like_path(model_id):
        raise ModelNotFound(f"MODEL_ID folder {folder} does not exist: fix the path or use a Hugging Face id")
    cache = hub_cache_dir(cache_dir)
    index = try_to_load_from_cache(model_id, "model_index.json", cache_dir=cache)
    if isinstance(index, str):
        return ModelSource(model_id, "cached", Path(index).parent)
    if hub_constants.HF_HUB_OFFLINE:
        raise ModelNotFound(
            f"MODEL_ID {model_id} is not in the model cache ({cache}) and HF_HUB_OFFLINE is set: "
            "download it once with the hub reachable, or unset HF_HUB_OFFLINE"
        )
    return ModelSource(model_id, "download", cache, f"{hub_constants.ENDPOINT}/{model_id}")


def local_folder(model_id: str, cache_dir: Path | None, tiny_cache_dir: Path) -> Path | None:
    """The diffusers folder holding `model_id`'s files on this machine, or None when they are not
    here (not downloaded yet, or nothing loadable)."""
    try:
        source = locate_model(model_id, cache_dir, tiny_cache_dir)
    except ModelNotFound:
        return None
    if source.kind == "download" or not (source.path / "model_index.json").is_file():
        return None
    return source.path
