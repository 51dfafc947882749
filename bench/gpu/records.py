"""The GPU run's results file and clock: one JSON object per line, written and flushed to disk as soon
as a figure is measured (a run killed at its time limit keeps everything measured before), and the
time budget the steps are planned against."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class Budget:
    """Seconds left of the run's budget, counted from its creation."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = time.monotonic()

    def elapsed(self) -> float:
        """Seconds since the run began."""
        return time.monotonic() - self.started

    def remaining(self) -> float:
        """Seconds left (negative once spent)."""
        return self.seconds - self.elapsed()


class ResultsFile:
    """Append-only JSON lines: `write` returns only once the line is on disk."""

    def __init__(self, path: Path, budget: Budget) -> None:
        self.path = path
        self.budget = budget
        path.parent.mkdir(parents=True, exist_ok=True)
        cut = path.is_file() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
        self._file = path.open("a", encoding="utf-8")
        if cut:  # the last run was killed mid-line: start on a line of our own
            self._file.write("\n")

    def write(self, step: str, status: str = "ok", **figures: Any) -> dict[str, Any]:
        """One record: the step, its status (ok, skipped, error), seconds into the run, the figures."""
        record = {"step": step, "status": status, "t_s": round(self.budget.elapsed(), 2), **figures}
        self._file.write(json.dumps(_rounded(record), sort_keys=True) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        return record

    def close(self) -> None:
        """Close the file (every record is already on disk)."""
        self._file.close()


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every record of a results file, in order (a last line cut off by a kill is dropped)."""
    records: list[dict[str, Any]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def last_run(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records from the last `start` record on (a results file keeps every run, appended)."""
    starts = [i for i, r in enumerate(records) if r["step"] == "start"]
    return records[starts[-1] :] if starts else records


def latest(records: list[dict[str, Any]], step: str) -> Iterator[dict[str, Any]]:
    """The `ok` records of `step`, in order."""
    return (r for r in records if r["step"] == step and r["status"] == "ok")


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    return value


_SMI_FIELDS = (
    "name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,clocks.max.mem,"
    "power.draw,power.limit,temperature.gpu,utilization.gpu"
)


def gpu_clocks() -> dict[str, str] | None:
    """`nvidia-smi`'s name, driver, clocks (MHz), power (W) and temperature, as read now; None without it."""
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={_SMI_FIELDS}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=15,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    values = [v.strip() for v in out.stdout.splitlines()[0].split(",")] if out.stdout.strip() else []
    return dict(zip(_SMI_FIELDS.split(","), values, strict=False)) or None
