"""`python -m bench ...` in a subprocess, as a user runs it, for the benchmarks' end-to-end tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from testkit import REPO_ROOT


def run_bench(args: list[str], results: Path, *, timeout: float, **env: str) -> dict[str, Any]:
    """Run the benchmark offline for models, reporting to `results` (not bench/RESULTS.md) with `env`
    added; it must exit with 0. Returns the figures: the JSON object on its last line of output."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=REPO_ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "BENCH_RESULTS": str(results), **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return figures
