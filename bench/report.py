"""Reporting a benchmark: one JSON line on stdout and a section appended to bench/RESULTS.md."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import shlex
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS_PATH = Path(__file__).with_name("RESULTS.md")
_LIBRARIES = ("aiosqlite", "discord.py", "diffusers", "transformers", "torch", "accelerate", "asyncpg", "ray")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except (OSError, ValueError):
        pass
    return None


def _gpu() -> str | None:
    """The CUDA devices, if torch is installed and sees any (imported only here, only if present)."""
    if importlib.util.find_spec("torch") is None:
        return None
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        return ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    except Exception as err:  # a broken driver must not lose the figures
        return f"unknown ({type(err).__name__})"


def machine() -> dict[str, Any]:
    """CPU, cores, RAM, GPU, Python, SQLite and key library versions."""
    versions: dict[str, str] = {}
    for lib in _LIBRARIES:
        try:
            versions[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            continue
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": _ram_gib(),
        "gpu": _gpu(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "libraries": versions,
    }


def command(name: str, argv: Sequence[str]) -> str:
    """The command line that reruns this benchmark."""
    return shlex.join(["python", "-m", "bench", name, *argv])


def report(name: str, figures: dict[str, Any], argv: list[str], *, results_path: Path | None = None) -> None:
    """Append a section (date, machine, command, figures) to RESULTS.md (or `results_path`: tests point
    it at a temp file), then print the figures as one JSON object on the last line of stdout."""
    path = results_path or RESULTS_PATH
    info = machine()
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    libs = ", ".join(f"{k} {v}" for k, v in info["libraries"].items())
    section = "\n".join(
        [
            f"## {name} — {date}",
            "",
            f"- command: `{command(name, argv)}`",
            f"- machine: {info['cpu']}, {info['cores']} cores, {info['ram_gib']} GiB RAM, "
            f"GPU: {info['gpu'] or 'none'}",
            f"- os: {info['os']}",
            f"- python {info['python']}, sqlite {info['sqlite']}; {libs}",
            "",
            "```json",
            json.dumps(figures, indent=2, sort_keys=True),
            "```",
            "",
        ]
    )
    if not path.exists():
        path.write_text("# Benchmark results\n\nAppended by `python -m bench NAME`; newest last.\n\n")
    with path.open("a", encoding="utf-8") as out:
        out.write(section + "\n")
    print(json.dumps(figures, sort_keys=True), flush=True)
