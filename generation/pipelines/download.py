# mypy: disable-error-code="no-untyped-call"
"""Downloading a hub model with progress as log lines (a service manager's log keeps lines, not a
terminal bar): "downloading <id>: 35% of 2.1 GB into <cache>", about every 5%.

diffusers' `DiffusionPipeline.download` picks the files (variant, safetensors) exactly as
`from_pretrained` would; it takes no progress callback, so for the length of the download the hub's
progress-bar class (`huggingface_hub._snapshot_download.hf_tqdm`, the one hook there is) is swapped
for `LoggedProgress`, then restored. Without that hook the download still runs, without lines.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

log = logging.getLogger(__name__)

LOG_EVERY = 0.05  # of the total known so far
_swap_lock = threading.Lock()


def _size(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


class LoggedProgress(tqdm):  # type: ignore[misc]
    """A tqdm that never draws: it logs a line each time another 5% of the total is done, and one
    when it closes. `label` and `target` name the download in those lines (set by `logged_bar`)."""

    label = "model"
    target = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.pop("name", None)
        kwargs["disable"] = False  # count even without a terminal: the lines are the point
        kwargs.setdefault("mininterval", 0.5)
        self._logged_n = 0.0
        self._counted = not str(kwargs.get("desc", "")).startswith(
            "Downloading bytes"
        )  # one of the hub's two bars
        super().__init__(*args, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        """Called by tqdm instead of drawing; logs when enough is new."""
        total = float(self.total or 0)
        if self._counted and total > 0 and self.n - self._logged_n >= total * LOG_EVERY:
            self._logged_n = float(self.n)
            log.info(
                "downloading %s: %d%% of %s into %s",
                self.label,
                min(100, int(100 * self.n / total)),
                _size(total),
                self.target,
            )
        return True

    def close(self) -> None:
        if self._counted and not self.disable and self.n and self.n != self._logged_n:
            log.info("downloading %s: %s done", self.label, _size(float(self.n)))
            self._logged_n = float(self.n)
        super().close()


@contextlib.contextmanager
def logged_bar(label: str, target: Path) -> Iterator[type[LoggedProgress]]:
    """For the block, hub downloads report through a `LoggedProgress` naming `label` and `target`."""
    bar = type("ModelDownloadProgress", (LoggedProgress,), {"label": label, "target": str(target)})
    try:
        from huggingface_hub import _snapshot_download as hub
    except ImportError:
        yield bar
        return
    if not hasattr(hub, "hf_tqdm"):
        log.info("this huggingface_hub reports no download progress here; downloading %s", label)
        yield bar
        return
    with _swap_lock:
        saved = hub.hf_tqdm
        hub.hf_tqdm = bar
        try:
            yield bar
        finally:
            hub.hf_tqdm = saved


def download_model(model_id: str, cache_dir: Path, variant: str | None) -> Path:
    """Fetch `model_id` (the files `from_pretrained` would use) into `cache_dir`; its local folder."""
    from diffusers import DiffusionPipeline

    log.info("downloading %s from the Hugging Face hub into %s (first start only)", model_id, cache_dir)
    with logged_bar(model_id, cache_dir):
        folder = DiffusionPipeline.download(model_id, cache_dir=str(cache_dir), variant=variant)
    log.info("downloaded %s to %s", model_id, folder)
    return Path(folder)
