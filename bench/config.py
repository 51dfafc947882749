"""What the benchmarks take from the environment: read once, by `python -m bench`, and passed down.

This is the only module of `bench` that reads the environment; child processes get theirs from
`BenchSettings.child_env`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

LIMITS_PG_URL_ENV = "BENCH_LIMITS_PG_URL"
"""How `bench limits` hands its PostgreSQL URL to its child processes (not argv: passwords)."""


@dataclass(frozen=True)
class BenchSettings:
    """The benchmarks' settings (see `load_settings` for where each comes from)."""

    results_path: Path | None = None  # $BENCH_RESULTS (tests: a temp file); None: bench/RESULTS.md
    database_url: str | None = None  # $DATABASE_URL: `bench limits --postgres` without a URL
    limits_pg_url: str | None = None  # $BENCH_LIMITS_PG_URL: the server of a `bench.limits child`
    environ: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)  # for children

    def cache_dir(self) -> Path:
        """Where built-in models are kept: `$IMAGINE_CACHE`, else `~/.cache/imagine`."""
        from generation.pipelines.loading import default_cache_dir

        return default_cache_dir(self.environ)

    def child_env(self, **extra: str) -> dict[str, str]:
        """The environment of a child process: this process's, plus `extra`."""
        return {**self.environ, **extra}


def load_settings(environ: Mapping[str, str] | None = None) -> BenchSettings:
    """The settings from `environ` (default: the process environment); empty values count as unset."""
    env = dict(os.environ if environ is None else environ)
    results = env.get("BENCH_RESULTS")
    return BenchSettings(
        results_path=Path(results) if results else None,
        database_url=env.get("DATABASE_URL") or None,
        limits_pg_url=env.get(LIMITS_PG_URL_ENV) or None,
        environ=env,
    )
