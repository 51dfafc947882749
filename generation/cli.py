"""`python -m generation "a red fox --ar 16:9 --seed 42" --model tiny --out DIR`: one command from a shell.

Parses the prompt as `/imagine` would (`{a, b}` permutations and `--repeat` make one job each, and
what `/imagine` refuses is refused with its message), runs the jobs through `GenerationService` (the
same worker the bot uses), writes one PNG per image (each carrying its `parameters` chunk) and prints
their paths, one per line, on stdout. tqdm's progress bar goes to stderr only when stderr is a
terminal. Exit codes: 0 done, 1 the model or a generation failed (the other jobs' PNGs are still
written), 2 bad input (one line on stderr), 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import secrets
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from generation.backends.local import GenerationService
from generation.backends.protocol import (
    GenerationError,
    GenerationResult,
    JobHandle,
    Progress,
    Queued,
    Started,
)
from generation.cli_settings import CliSettings, cli_settings
from generation.media.image_store import InvalidImage, load_source
from generation.pipelines.contract import Engine
from generation.prompts.command import parse_command
from generation.prompts.errors import PromptError
from generation.prompts.request import GenerationRequest, Mode, PromptOptions
from generation.scheduling.job_state import MemoryImages

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def build_parser(defaults: CliSettings | None = None) -> argparse.ArgumentParser:
    """The command line's arguments, defaulting to `defaults` (MODEL_ID, DEVICE, MODEL_CACHE_DIR)."""
    defaults = defaults or CliSettings()
    p = argparse.ArgumentParser(prog="python -m generation", description=__doc__.splitlines()[0])
    p.add_argument("prompt", help='the prompt with inline flags, e.g. "a red fox --ar 16:9 --seed 42"')
    p.add_argument(
        "--model", default=defaults.model_id, help="model id, folder or `tiny` (default $MODEL_ID)"
    )
    p.add_argument("--out", type=Path, default=Path("."), help="folder for the PNGs (created if missing)")
    p.add_argument(
        "--device", default=defaults.device, help="auto, cuda, cuda:N, mps or cpu (default $DEVICE)"
    )
    p.add_argument("--image", type=Path, help="start from this picture (image-to-image)")
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=defaults.cache_dir,
        help="where models are downloaded or built (default $MODEL_CACHE_DIR)",
    )
    p.add_argument("--timeout", type=float, default=600.0, help="seconds before the job is given up")
    p.add_argument("-v", "--verbose", action="store_true", help="log what happens on stderr")
    return p


def _engine_factory(model: str, device: str, cache_dir: Path | None, quiet: bool) -> Engine:
    # torch and diffusers are only imported here, in the worker thread
    if quiet:  # through the libraries' own switches, before they are imported and warn
        from transformers.utils import logging as transformers_logging

        transformers_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
        transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        # A first download still says how far it is (generation.pipelines.download's lines).
        downloads = logging.getLogger("generation.pipelines.download")
        downloads.addHandler(logging.StreamHandler())
        downloads.setLevel(logging.INFO)

        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.set_verbosity_error()
        diffusers_logging.disable_progress_bar()
        warnings.filterwarnings("ignore", category=FutureWarning)
    from generation.pipelines.engine import DiffusersEngine
    from generation.pipelines.loading import load_pipeline, resolve_device

    return DiffusersEngine(load_pipeline(model, resolve_device(device), cache_dir=cache_dir))


def _slug(text: str, limit: int = 40) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-")
    return slug or "image"


def _free_path(folder: Path, stem: str) -> Path:
    path = folder / f"{stem}.png"
    n = 1
    while path.exists():
        path = folder / f"{stem}-{n}.png"
        n += 1
    return path


async def _show_progress(handle: JobHandle, stream: TextIO) -> None:
    """tqdm's bar over the job's steps (queue position as its description while it waits)."""
    with tqdm(total=None, file=stream, unit="step", desc="starting", leave=False) as bar:
        async for event in handle.events():
            if isinstance(event, Queued):
                bar.set_description_str(f"queued ({event.position})")
            elif isinstance(event, Started):
                bar.set_description_str("generating")
            elif isinstance(event, Progress):
                bar.total = event.total
                bar.update(event.step - bar.n)
                if event.step == event.total:
                    bar.refresh()  # tqdm throttles draws; the last step is always shown


async def run(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    """Load, parse, generate, write; returns the exit code."""
    sources = MemoryImages()
    source: str | None = None
    source_size: tuple[int, int] | None = None
    if args.image is not None:
        try:
            data = args.image.read_bytes()
            source = sources.add(data)
            source_size = load_source(data).size
        except OSError as exc:
            print(f"error: cannot read {args.image}: {exc.strerror}", file=stderr)
            return EXIT_USAGE
        except InvalidImage as exc:
            print(f"error: {args.image}: {exc}", file=stderr)
            return EXIT_USAGE
    service = GenerationService(
        lambda: _engine_factory(args.model, args.device, args.cache_dir, not args.verbose),
        sources,
        job_timeout_s=args.timeout,
    )
    try:
        try:
            await service.start()
        except Exception as exc:
            print(f"error: could not load model {args.model!r}: {exc}", file=stderr)
            return EXIT_FAILED
        try:
            requests = parse_command(
                args.prompt,
                PromptOptions(),
                service.profile,
                count_tokens=service.count_tokens,
                random_seed=lambda: secrets.randbelow(2**32),
                mode=Mode.IMG2IMG if source else Mode.TXT2IMG,
                source_image=source,
                source_size=source_size,
            )
        except PromptError as exc:
            print(f"error: {exc}", file=stderr)
            return EXIT_USAGE
        for warning in dict.fromkeys(w for request in requests for w in request.warnings):
            print(f"warning: {warning}", file=stderr)
        handles = [service.submit(f"cli-{n}", "cli", request) for n, request in enumerate(requests)]
        failed = False
        for request, handle in zip(requests, handles, strict=True):
            bar = asyncio.create_task(_show_progress(handle, stderr)) if stderr.isatty() else None
            try:
                result: GenerationResult = await handle.result()
            except GenerationError as exc:
                print(f"error: {request.prompt}: {exc}", file=stderr)
                failed = True
                continue
            finally:
                if bar is not None:
                    await bar
            _write(result, request, args.out, stdout)
    finally:
        await service.close()
    return EXIT_FAILED if failed else EXIT_OK


def _write(result: GenerationResult, request: GenerationRequest, folder: Path, stdout: TextIO) -> None:
    """One job's PNGs into `folder` (created if missing), each path printed on its own line."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = _slug(request.prompt)
    for image in result.images:
        path = _free_path(folder, f"{stem}-{image.seed}")
        path.write_bytes(image.png)
        print(path, file=stdout)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m generation`."""
    args = build_parser(cli_settings()).parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.ERROR, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return asyncio.run(run(args, sys.stdout, sys.stderr))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
