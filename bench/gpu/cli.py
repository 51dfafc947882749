"""The GPU run's command line and step loop (see `bench.gpu`)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

from bench.config import BenchSettings
from bench.gpu.context import Run
from bench.gpu.plan import DRY, FULL
from bench.gpu.profile import profile
from bench.gpu.records import Budget, ResultsFile, last_run, latest, read_records
from bench.gpu.steps_dit import flux_schnell, sd35_medium
from bench.gpu.steps_sd import env, flops, inpaint, safety, sd15_batches, sd15_single, sdxl, turbo, vae_decode
from bench.gpu.steps_service import service, variants
from bench.gpu.steps_video import wan_i2v
from bench.gpu.summary import summarise
from bench.gpu.timing import OverLimit, free
from bench.report import report

DEFAULT_RESULTS = Path(__file__).resolve().parents[1] / "gpu-results.jsonl"
DRY_RUN_RESULTS = Path(tempfile.gettempdir()) / "bench-gpu-dry-run.jsonl"

# (name, step, seconds that must be left to start it): planning thresholds, not measurements.
STEPS: tuple[tuple[str, Callable[[Run], None], float], ...] = (
    ("env", env, 0.0),
    ("sd15_batches", sd15_batches, 30.0),
    ("sd15_single", sd15_single, 10.0),
    ("service", service, 30.0),
    ("turbo", turbo, 15.0),
    ("sdxl", sdxl, 60.0),
    ("flux_schnell", flux_schnell, 45.0),  # guessed: build 15 s, batch 1 4 × 1.5 s; batch 4 if it fits
    ("sd35_medium", sd35_medium, 45.0),  # guessed: build 10 s, batch 1 4 × 3 s; batch 4 if it fits
    ("wan_i2v", wan_i2v, 100.0),  # guessed: build 30 s, a 1-step warm call and a 3-step call, VAE ~15 s each
    ("inpaint", inpaint, 20.0),
    ("flops", flops, 10.0),
    ("safety", safety, 10.0),
    ("vae_decode", vae_decode, 10.0),
    ("profile", profile, 10.0),
    ("variants", variants, 60.0),
)
STEP_NAMES = tuple(name for name, _, _ in STEPS)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench gpu", description="every GPU figure in one run")
    parser.add_argument(
        "--dry-run", action="store_true", help="tiny architectures on the CPU (walks every step)"
    )
    parser.add_argument("--budget-s", type=float, default=480.0, help="seconds for all steps (default 480)")
    parser.add_argument("--results", type=Path, help=f"JSON-lines results file (default {DEFAULT_RESULTS})")
    parser.add_argument("--only", help=f"comma list of steps to run: {','.join(STEP_NAMES)}")
    parser.add_argument("--device", default="auto", help="auto, cuda or cuda:N (cpu with --dry-run)")
    parser.add_argument("--model-dir", type=Path, help="where to save the built models (default: a temp dir)")
    parser.add_argument(
        "--report", type=Path, metavar="FILE", help="only append FILE's summary to RESULTS.md"
    )
    return parser


def _only(text: str | None) -> set[str]:
    if not text:
        return set(STEP_NAMES)
    names = {part.strip() for part in text.split(",") if part.strip()}
    unknown = names - set(STEP_NAMES)
    if unknown or not names:
        raise ValueError(
            f"--only: unknown step(s) {', '.join(sorted(unknown))}; expected {','.join(STEP_NAMES)}"
        )
    return names


def _device(setting: str, dry: bool) -> str:
    from generation.pipelines.loading import resolve_device

    device = "cpu" if dry and setting == "auto" else resolve_device(setting)
    if not dry and not device.startswith("cuda"):
        raise ValueError(f"device {device}: the GPU run needs CUDA (use --dry-run to walk it on the CPU)")
    return device


def run_steps(run: Run, names: set[str]) -> bool:
    """Run the chosen steps in order, each one's failure recorded and the next one started; a step
    over its time limit ends the run. Returns False if the run was ended early."""
    for name, step, needs_s in STEPS:
        if name not in names:
            continue
        left = run.budget.remaining()
        if left < needs_s:
            run.results.write(
                "step", "skipped", name=name, reason=f"{left:.0f} s left, {needs_s:.0f} s needed"
            )
            continue
        began = run.budget.elapsed()
        try:
            step(run)
        except OverLimit as over:
            run.results.write(
                "step", "skipped", name=name, reason=str(over), seconds=run.budget.elapsed() - began
            )
            return False
        except Exception as exc:
            trace = traceback.format_exc(limit=-3)[-1500:]
            run.results.write(
                "step", "error", name=name, error=f"{type(exc).__name__}: {exc}"[:500], trace=trace
            )
            free(run.device)
            continue
        run.results.write("step", name=name, seconds=run.budget.elapsed() - began)
    return True


def main(argv: list[str], settings: BenchSettings) -> int:
    """CLI entry point (see `bench.gpu`)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.report:
        records = last_run(read_records(args.report))
        host = next(latest(records, "env"), {}).get("host")  # the machine that measured them
        report("gpu", summarise(records), argv, results_path=settings.results_path, host=host)
        return 0
    try:
        names = _only(args.only)
        device = _device(args.device, args.dry_run)
    except ValueError as err:
        parser.error(str(err))
    plan = DRY if args.dry_run else FULL
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    if device == "cpu":  # like for like with the service's worker, which load_pipeline sets so
        torch.set_num_threads(max(1, (os.cpu_count() or 1) - 1))
    temp = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    path = args.results or (DRY_RUN_RESULTS if args.dry_run else DEFAULT_RESULTS)
    budget = Budget(args.budget_s)
    results = ResultsFile(path, budget)
    results.write("start", argv=argv, dry_run=args.dry_run, budget_s=args.budget_s, steps=sorted(names))
    run = Run(plan, device, dtype, results, budget, args.model_dir or temp)
    finished = False
    try:
        finished = run_steps(run, names)
        results.write("end", finished=finished)
    finally:
        results.close()
        if finished:
            shutil.rmtree(temp, ignore_errors=True)
    print(f"results: {path}", file=sys.stderr)
    figures = summarise(last_run(read_records(path)))
    if args.dry_run and settings.results_path is None:
        print(json.dumps(figures, sort_keys=True), flush=True)  # a dry run leaves bench/RESULTS.md alone
    else:
        report("gpu", figures, argv, results_path=settings.results_path)
    if not finished:  # a thread past its limit still holds the GPU: leave without waiting for it
        sys.stdout.flush()
        os._exit(0)
    return 0
