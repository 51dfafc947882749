"""Logging for the bot process: plain text (default) or `LOG_FORMAT=json` (one JSON object a line),
the token redacted on every handler, and the library noise an admin cannot act on filtered at start.

Job lines carry their ids as fields (`jobs.log_fields.job_fields`: `job_id`, `guild_id`,
`member_id` on the record); the JSON formatter writes them as keys, the plain one leaves the message
as it is.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import warnings
from typing import Any

from bot.settings import Settings, install_redaction

PLAIN_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
JOB_FIELDS = ("job_id", "guild_id", "member_id")

# Library lines about optional extras this bot never uses (voice; torchvision's image backends: the
# PIL ones are what the safety checker's feature extractor needs). Matched per logger, by text.
NOISE: dict[str, tuple[str, ...]] = {
    "discord.client": ("PyNaCl is not installed", "davey is not installed"),
    "transformers.utils.import_utils": ("requires torchvision (not installed)",),
}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, the job fields when present, and the
    traceback (as text) when there is one. Times are UTC."""

    converter = time.gmtime  # type: ignore[assignment]

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in JOB_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["traceback"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False, default=str)


class DropNoise(logging.Filter):
    """Drops one logger's records whose message contains one of `needles`."""

    def __init__(self, needles: tuple[str, ...]) -> None:
        super().__init__()
        self._needles = needles

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(needle in message for needle in self._needles)


def quiet_libraries() -> None:
    """Filter, by category, what libraries say that a bot admin cannot act on: deprecation and
    future warnings from the ML libraries (ours to act on, in the code, not the admin's) and the
    voice-support and torchvision notices. Imports nothing (a failed login stays fast)."""
    for module in ("diffusers", "transformers", "huggingface_hub", "accelerate", "torch"):
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=module)
    for name, needles in NOISE.items():
        logging.getLogger(name).addFilter(DropNoise(needles))


def quiet_ml_libraries() -> None:
    """Before the model loads: diffusers' and transformers' lines go through our handlers only (their
    own stderr handlers would print each a second time, outside our format), and their terminal
    progress bars are off (a service log keeps lines; downloads log their progress themselves)."""
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    transformers_logging.disable_default_handler()
    transformers_logging.enable_propagation()
    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    diffusers_logging.disable_default_handler()
    diffusers_logging.enable_propagation()
    diffusers_logging.disable_progress_bar()


def configure_logging(settings: Settings) -> None:
    """Log to stderr at LOG_LEVEL in LOG_FORMAT, every handler filtering out the token."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
    formatter = JsonFormatter() if settings.log_format == "json" else logging.Formatter(PLAIN_FORMAT)
    for handler in root.handlers:
        handler.setFormatter(formatter)
    root.setLevel(settings.log_level)
    logging.getLogger("discord").setLevel(max(logging.INFO, logging.getLevelName(settings.log_level)))
    install_redaction(settings.secrets, root)
