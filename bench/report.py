"""Reporting a benchmark: one JSON line on stdout and a section appended to bench/RESULTS.md."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shlex
import sqlite3
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS_PATH = Path(__file__).with_name("RESULTS.md")
_LIBRARIES = (
    "aiosqlite",
    "discord.py",
    "diffusers",
    "transformers",
    "torch",
    "accelerate",
    "asyncpg",
    "ray",
    "xformers",
)


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


def source_commit() -> str:
    """The commit being measured: `git rev-parse HEAD`, else `bench/wheels/COMMIT` (written when the
    GPU run's wheels were prepared: a device machine gets the files without `.git`), else "unknown"."""
    try:
        git = ["git", "rev-parse", "HEAD"]
        out = subprocess.run(
            git, cwd=RESULTS_PATH.parent, capture_output=True, text=True, timeout=10, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        marker = RESULTS_PATH.parent / "wheels" / "COMMIT"
        return marker.read_text().strip() if marker.is_file() else "unknown"


def command(name: str, argv: Sequence[str]) -> str:
    """The command line that reruns this benchmark (a variant's section, `service-switching`, reruns
    with its benchmark's name and the variant's flag in `argv`)."""
    return shlex.join(["python", "-m", "bench", name.partition("-")[0], *argv])


def report(
    name: str,
    figures: dict[str, Any],
    argv: list[str],
    *,
    results_path: Path | None = None,
    host: dict[str, Any] | None = None,
) -> None:
    """Append a section (date, machine, command, figures) to RESULTS.md (or `results_path`: tests point
    it at a temp file), then print the figures as one JSON object on the last line of stdout. `host`:
    the `machine()` the figures were measured on, where that is not this one."""
    path = results_path or RESULTS_PATH
    info = host or machine()
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    libs = ", ".join(f"{k} {v}" for k, v in info["libraries"].items())
    section = "\n".join(
        [
            f"## {name} — {date}",
            "",
            f"- command: `{command(name, argv)}`",
            f"- commit: {figures.get('commit') or source_commit()}",
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
    path.write_text(refresh_table(path.read_text(encoding="utf-8")), encoding="utf-8")
    print(json.dumps(figures, sort_keys=True), flush=True)


# The figures the table at the top of RESULTS.md shows for each benchmark (those its section has).
HEADLINES = {
    "limits": ("reservations_per_s", "concurrent_reservations_per_s", "overspent"),
    "service": ("overhead_pct", "loop_stall_p99_ms", "batched_jobs_per_s"),
    "gpu": (
        "sd15_images_per_s",
        "service_vs_plain",
        "sd15_denoise_steps_per_s_single",
        "baseline_images_per_s",
        "images_per_s",
        "steps_per_s_single",
    ),
    "scale": ("median_images_per_s_per_replica", "scaling_efficiency_8", "dispatch_overhead_ms"),
    "load": ("ack_p99_ms", "lost", "answered_twice", "rss_growth_mib"),
    "encode": ("n8_pool_speedup", "single_encode_ms"),
    "service-switching": ("two_vs_one_pct", "two_one_fits_vs_one_pct", "adapter_switch_ms"),
    "service-edits": ("zoom_out_2x_batched_speedup", "vary_subtle_batched_speedup", "from_pipe_added_bytes"),
    "service-families": ("worst_overhead_pct", "slowest_setup_ms"),
    "service-edits-families": ("from_pipe_added_bytes", "lowest_batched_speedup"),
    "service-video": ("frames_per_s", "encode_s_per_video_s", "mp4_bytes", "fits_every_limit"),
    "service-references": (
        "reference_cost_ratio",
        "encoder_ms_per_picture",
        "batched_speedup",
        "adapter_load_s",
    ),
    "service-references-tiny-flux": (
        "reference_cost_ratio",
        "encoder_ms_per_picture",
        "batched_speedup",
        "adapter_load_s",
    ),
}
TABLE_BEGIN, TABLE_END = "<!-- latest figures: begin -->", "<!-- latest figures: end -->"
_TABLE_NOTE = (
    "Rebuilt by `bench.report` from the sections below at each report. Machine: the GPU's name where the "
    "figures came from one. Commit: the one measured, or for sections older than that line, the commit "
    "that recorded them."
)
_SECTION = re.compile(r"^## (\S+) — (.+?)\n(.*?)```json\n(.*?)\n```", re.M | re.S)


def _field(body: str, name: str) -> str:
    found = re.search(rf"^- {name}: (.*)$", body, re.M)
    return found.group(1).strip() if found else ""


def _machine(line: str) -> str:
    gpu = line.rsplit("GPU: ", 1)[-1] if "GPU: " in line else "none"
    return f"GPU: {gpu}" if gpu != "none" else f"CPU only ({line.split(', GPU:')[0]})"


def latest_table(text: str) -> str:
    """A markdown table of the latest section of each benchmark command in RESULTS.md `text`: its
    headline figures, machine (the GPU's name where it ran on one), commit and date."""
    latest: dict[str, tuple[str, str, str, dict[str, Any]]] = {}
    for name, date, body, blob in _SECTION.findall(text):
        try:
            figures = json.loads(blob)
        except json.JSONDecodeError:
            continue
        latest[_field(body, "command").strip("`")] = (name, date, body, figures)
    rows = ["| benchmark | latest figures | machine | commit | date |", "| --- | --- | --- | --- | --- |"]
    for cmd, (name, date, body, figures) in latest.items():
        shown = [f"{k} {json.dumps(figures[k])}" for k in HEADLINES.get(name, ()) if k in figures]
        commit = _field(body, "commit") or _field(body, "recorded in commit")
        machine = _machine(_field(body, "machine"))
        rows.append(f"| `{cmd}` | {'; '.join(shown)} | {machine} | {commit or '?'} | {date} |")
    return "\n".join(rows)


def refresh_table(text: str) -> str:
    """`text` with its table of latest figures (between the markers, made if missing) rebuilt."""
    heading = "## Latest figure of each benchmark"
    table = f"{TABLE_BEGIN}\n{heading}\n\n{_TABLE_NOTE}\n\n{latest_table(text)}\n{TABLE_END}"
    if TABLE_BEGIN in text and TABLE_END in text:
        head, rest = text.split(TABLE_BEGIN, 1)
        return head + table + rest.split(TABLE_END, 1)[1]
    first = text.find("\n## ")
    if first < 0:
        return text.rstrip("\n") + "\n\n" + table + "\n"
    return text[: first + 1] + table + "\n\nHistory, newest last:\n\n" + text[first + 1 :]
