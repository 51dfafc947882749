"""The settings of `python -m generation`, from the environment: the one reader of it in generation/.

The same variables as the bot's (`bot.settings`): `MODEL_ID`, `DEVICE`, `MODEL_CACHE_DIR`; the command
line's flags win over them. `DEFAULT_MODEL_ID` is the default model of both.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MODEL_ID = "dreamlike-art/dreamlike-photoreal-2.0"


@dataclass(frozen=True)
class CliSettings:
    """Defaults for the command line's `--model`, `--device` and `--cache-dir`."""

    model_id: str = DEFAULT_MODEL_ID
    device: str = "auto"
    cache_dir: Path | None = None


def cli_settings(environ: Mapping[str, str] | None = None) -> CliSettings:
    """The CLI's defaults from `environ` (the process environment when not given)."""
    env = os.environ if environ is None else environ
    cache = env.get("MODEL_CACHE_DIR", "").strip()
    return CliSettings(
        model_id=env.get("MODEL_ID", "").strip() or DEFAULT_MODEL_ID,
        device=env.get("DEVICE", "").strip() or "auto",
        cache_dir=Path(cache) if cache else None,
    )
