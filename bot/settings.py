"""Settings: the environment and an optional `.env` file (the environment wins), read once at start.

`load_settings()` raises `SettingsError` with a one-line message; `bot.cli` prints it and exits 2.
The token is kept out of `repr()` and out of the logs (`TokenRedactor`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from dotenv import dotenv_values

from generation.cli_settings import DEFAULT_MODEL_ID
from generation.model_set import ModelSet
from generation.pipelines.options import OptimiseOptions, parse_optimise
from generation.pipelines.safety_options import DEFAULT_SAFETY_CHECKER, SAFETY_MODES
from generation.pipelines.source import TINY_EDIT_MODEL_ID, TINY_VIDEO_MODEL_ID, side_model
from jobs.delivery import SecondModel
from storage.interface import Limits

BACKENDS = ("local", "ray")
DEVICE_PREFIXES = ("auto", "cpu", "cuda", "mps")
LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")
LOG_FORMATS = ("plain", "json")
DEFAULT_LIMITS = Limits(images_per_hour=40, images_per_day=200, max_queued=4, cooldown_seconds=0.0)
UNLIMITED = ("", "none", "unlimited", "off")
MAX_VIDEO_COST = 100  # VIDEO_COST and a guild's /server-defaults video_cost: 1 to this many images


class SettingsError(ValueError):
    """A setting is missing or malformed; `str()` is one line saying what to set."""


@dataclass(frozen=True)
class Settings:
    """Everything the process is configured with. Frozen; build it with `load_settings()`."""

    discord_token: str = field(repr=False)
    discord_api_base: str | None = None
    discord_gateway_url: str | None = None
    model_id: str = DEFAULT_MODEL_ID
    device: str = "auto"
    database_path: Path = Path("data/imagine.db")
    output_dir: Path = Path("data/images")
    generation_backend: str = "local"
    ray_address: str | None = None
    ray_replicas: int | None = None  # fixed replica count (neither this nor ray_autoscale: one)
    ray_autoscale: tuple[int, int] | None = None  # (min, max) replicas, autoscaled by Ray Serve
    database_url: str | None = field(default=None, repr=False)  # may hold a password
    shard_count: int | None = None
    shard_ids: tuple[int, ...] | None = None
    dispatch_capacity: int = 4  # jobs claimed from a shared (PostgreSQL) queue and generating at once
    job_lease_s: float = 60.0  # a claimed job goes back to the queue this long after its process died
    default_limits: Limits = DEFAULT_LIMITS
    job_timeout_s: float = 300.0
    log_level: str = "INFO"
    sync_guild_id: int | None = None
    model_cache_dir: Path | None = None
    describe_model: str | None = None  # DESCRIBE_MODEL: the /describe captioner (hub id, folder, or tiny)
    models: str | None = None  # MODELS: name=source,…; None: MODEL_ID alone
    model_memory_gb: float | None = None  # MODEL_MEMORY_GB: the models' budget off CUDA (None: no limit)
    lora_dir: Path | None = None  # LORA_DIR: a folder of NAME.safetensors LoRA adapters
    video_model: str | None = None  # VIDEO_MODEL: the image-to-video pipeline of Animate (unset: none)
    edit_model: str | None = None  # EDIT_MODEL: the instruction-editing model of Edit (unset: none)
    video_cost: int = 8  # VIDEO_COST: images of a member's quota one video spends (guilds may override)

    @property
    def second_models(self) -> frozenset[SecondModel]:
        """The second models set (VIDEO_MODEL, EDIT_MODEL): one-image results carry their buttons."""
        set_up = {SecondModel.ANIMATE: self.video_model, SecondModel.EDIT: self.edit_model}
        return frozenset(kind for kind, model in set_up.items() if model is not None)

    @property
    def model_set(self) -> ModelSet:
        """The models on offer: MODELS, else MODEL_ID alone."""
        return ModelSet.parse(self.models) if self.models else ModelSet.single(self.model_id)

    optimise: OptimiseOptions = field(default_factory=OptimiseOptions)  # OPTIMISE=channels_last,…
    log_format: str = "plain"  # LOG_FORMAT=json: one JSON object a line
    health_port: int | None = None  # HEALTH_PORT: /healthz, /readyz, /metrics (unset: off)
    health_host: str = "0.0.0.0"  # HEALTH_HOST: where the health endpoints listen
    shutdown_grace_s: float = 30.0  # SIGTERM: how long the running batch may take to finish
    retention_days: float | None = None  # RETENTION_DAYS: finished jobs and their images (unset: kept)
    safety: str = "model"  # SAFETY=model|require|off
    safety_checker_id: str = DEFAULT_SAFETY_CHECKER  # SAFETY_CHECKER_ID: the standalone checker

    @property
    def secrets(self) -> tuple[str, ...]:
        """Strings that must never reach a log line."""
        return tuple(s for s in (self.discord_token, self.database_url) if s)


_N = TypeVar("_N", int, float)


def _number(env: Mapping[str, str], name: str, parse: Callable[[str], _N], what: str) -> _N | None:
    """`name` read with `parse` (None when unset or blank); SettingsError saying it must be `what`."""
    raw = env.get(name, "").strip()
    if raw == "":
        return None
    try:
        return parse(raw)
    except ValueError:
        raise SettingsError(f"{name} must be {what}, not {raw!r}") from None


def _int(env: Mapping[str, str], name: str, default: int | None, *, minimum: int = 0) -> int | None:
    value = _number(env, name, int, "a whole number")
    if value is None:
        return default
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, not {value}")
    return value


def _limit(env: Mapping[str, str], name: str, default: int | None) -> int | None:
    raw = env.get(name)
    if raw is None:
        return default
    if raw.strip().lower() in UNLIMITED:
        return None
    return _int(env, name, default)


def _float(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0.0) -> float:
    value = _number(env, name, float, "a number")
    if value is None:
        return default
    if not value >= minimum or value != value or value == float("inf"):
        raise SettingsError(f"{name} must be a finite number of at least {minimum}, not {env[name].strip()}")
    return value


def _pair(env: Mapping[str, str], name: str) -> tuple[int, int] | None:
    raw = _str(env, name)
    if raw is None:
        return None
    try:
        low, high = (int(part) for part in raw.replace(" ", "").split(","))
    except ValueError:
        raise SettingsError(f"{name} must be MIN,MAX replicas, e.g. 1,4 (got {raw!r})") from None
    if not 0 <= low <= high or high < 1:
        raise SettingsError(f"{name} must satisfy 0 <= MIN <= MAX and MAX >= 1 (got {raw!r})")
    return low, high


def _str(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return None
    return raw.strip()


def settings_from_mapping(env: Mapping[str, str]) -> Settings:
    """Build settings from one mapping of variable names to values."""
    token = _str(env, "DISCORD_TOKEN")
    if token is None:
        raise SettingsError(
            "DISCORD_TOKEN is not set: put your bot token in the environment or in .env (see .env.example)"
        )
    backend = (_str(env, "GENERATION_BACKEND") or "local").lower()
    if backend not in BACKENDS:
        raise SettingsError(f"GENERATION_BACKEND must be one of {', '.join(BACKENDS)}, not {backend!r}")
    device = (_str(env, "DEVICE") or "auto").lower()
    if device.split(":", 1)[0] not in DEVICE_PREFIXES or (
        ":" in device and not (device.startswith("cuda:") and device[5:].isdigit())
    ):
        raise SettingsError(f"DEVICE must be auto, cpu, cuda, cuda:N or mps, not {device!r}")
    log_level = (_str(env, "LOG_LEVEL") or "INFO").upper()
    if log_level not in LOG_LEVELS:
        raise SettingsError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, not {log_level!r}")
    shard_ids: tuple[int, ...] | None = None
    raw_ids = _str(env, "SHARD_IDS")
    if raw_ids is not None:
        try:
            shard_ids = tuple(int(part) for part in raw_ids.replace(" ", "").split(",") if part)
        except ValueError:
            raise SettingsError(f"SHARD_IDS must be comma-separated numbers, not {raw_ids!r}") from None
    shard_count = _int(env, "SHARD_COUNT", None, minimum=1)
    if shard_ids and shard_count is None:
        raise SettingsError("SHARD_IDS needs SHARD_COUNT too")
    if shard_ids and shard_count is not None and any(i >= shard_count for i in shard_ids):
        raise SettingsError(f"every SHARD_IDS entry must be below SHARD_COUNT ({shard_count})")
    if _str(env, "RAY_REPLICAS") and _str(env, "RAY_AUTOSCALE"):
        raise SettingsError("set RAY_REPLICAS (a fixed count) or RAY_AUTOSCALE (MIN,MAX), not both")
    try:
        optimise = parse_optimise(_str(env, "OPTIMISE") or "")
    except ValueError as exc:
        raise SettingsError(f"OPTIMISE: {exc}") from None
    cache = _str(env, "MODEL_CACHE_DIR")
    log_format = (_str(env, "LOG_FORMAT") or "plain").lower()
    if log_format not in LOG_FORMATS:
        raise SettingsError(f"LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    safety = (_str(env, "SAFETY") or "model").lower()
    if safety not in SAFETY_MODES:
        raise SettingsError(f"SAFETY must be one of {', '.join(SAFETY_MODES)}, not {safety!r}")
    health_port = _int(env, "HEALTH_PORT", None, minimum=1)
    if health_port is not None and health_port > 65535:
        raise SettingsError(f"HEALTH_PORT must be a TCP port (1-65535), not {health_port}")
    retention = _str(env, "RETENTION_DAYS")
    base = Settings(discord_token=token)
    video_cost = _int(env, "VIDEO_COST", base.video_cost, minimum=1) or base.video_cost
    if video_cost > MAX_VIDEO_COST:
        raise SettingsError(f"VIDEO_COST must be at most {MAX_VIDEO_COST} images, not {video_cost}")
    return Settings(
        discord_token=token,
        discord_api_base=(_str(env, "DISCORD_API_BASE") or "").rstrip("/") or None,
        discord_gateway_url=_str(env, "DISCORD_GATEWAY_URL"),
        model_id=_str(env, "MODEL_ID") or DEFAULT_MODEL_ID,
        device=device,
        database_path=Path(_str(env, "DATABASE_PATH") or base.database_path),
        output_dir=Path(_str(env, "OUTPUT_DIR") or base.output_dir),
        generation_backend=backend,
        ray_address=_str(env, "RAY_ADDRESS"),
        ray_replicas=_int(env, "RAY_REPLICAS", None, minimum=1),
        ray_autoscale=_pair(env, "RAY_AUTOSCALE"),
        database_url=_str(env, "DATABASE_URL"),
        shard_count=shard_count,
        shard_ids=shard_ids,
        dispatch_capacity=_int(env, "DISPATCH_CAPACITY", base.dispatch_capacity, minimum=1) or 1,
        job_lease_s=_float(env, "JOB_LEASE_SECONDS", base.job_lease_s, minimum=3.0),
        default_limits=Limits(
            images_per_hour=_limit(env, "IMAGES_PER_HOUR", base.default_limits.images_per_hour),
            images_per_day=_limit(env, "IMAGES_PER_DAY", base.default_limits.images_per_day),
            max_queued=_limit(env, "MAX_QUEUED", base.default_limits.max_queued),
            cooldown_seconds=_float(env, "COOLDOWN_SECONDS", base.default_limits.cooldown_seconds),
        ),
        job_timeout_s=_float(env, "JOB_TIMEOUT_SECONDS", base.job_timeout_s, minimum=1.0),
        log_level=log_level,
        sync_guild_id=_int(env, "SYNC_GUILD_ID", None, minimum=1),
        optimise=optimise,
        model_cache_dir=Path(cache).expanduser() if cache else None,
        log_format=log_format,
        health_port=health_port,
        health_host=_str(env, "HEALTH_HOST") or base.health_host,
        shutdown_grace_s=_float(env, "SHUTDOWN_GRACE_SECONDS", base.shutdown_grace_s),
        retention_days=(
            None
            if retention is None or retention.lower() in UNLIMITED
            else _float(env, "RETENTION_DAYS", 0.0, minimum=1.0)
        ),
        safety=safety,
        safety_checker_id=_str(env, "SAFETY_CHECKER_ID") or base.safety_checker_id,
        describe_model=_str(env, "DESCRIBE_MODEL"),
        models=_models(env),
        model_memory_gb=_float(env, "MODEL_MEMORY_GB", 0.0, minimum=0.1) or None,
        lora_dir=Path(lora).expanduser() if (lora := _str(env, "LORA_DIR")) else None,
        video_model=side_model(_str(env, "VIDEO_MODEL"), TINY_VIDEO_MODEL_ID),
        edit_model=side_model(_str(env, "EDIT_MODEL"), TINY_EDIT_MODEL_ID),
        video_cost=video_cost,
    )


def _models(env: Mapping[str, str]) -> str | None:
    text = _str(env, "MODELS")
    if text is None:
        return None
    try:
        ModelSet.parse(text)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    return text


def load_settings(environ: Mapping[str, str] | None = None, env_file: Path | None = Path(".env")) -> Settings:
    """Settings from `env_file` (if it exists) overlaid by `environ` (default: the process environment)."""
    merged: dict[str, str] = {}
    if env_file is not None and env_file.is_file():
        merged.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    merged.update(os.environ if environ is None else environ)
    return settings_from_mapping(merged)


class TokenRedactor(logging.Filter):
    """Replaces every secret in a log record (message, arguments and traceback) with `[redacted]`."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        super().__init__()
        self._secrets = tuple(s for s in secrets if s)

    def _clean(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "[redacted]")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg = self._clean(message)
        record.args = None
        if record.exc_text:
            record.exc_text = self._clean(record.exc_text)
        if record.stack_info:
            record.stack_info = self._clean(record.stack_info)
        return True


def install_redaction(secrets: tuple[str, ...], root: logging.Logger | None = None) -> TokenRedactor:
    """Attach a `TokenRedactor` to every handler of the root logger (filters on handlers see every
    record, also those propagated from child loggers)."""
    target = root or logging.getLogger()
    redactor = TokenRedactor(secrets)
    for handler in target.handlers:
        handler.addFilter(redactor)
    return redactor
