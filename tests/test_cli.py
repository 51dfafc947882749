"""`python -m generation` in a subprocess on the tiny model: PNG files, their parameters, determinism,
the progress bar only on a terminal, and one-line errors with exit code 2."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def run_cli(cache: Path, out: Path, prompt: str, *, stderr_tty: bool = False) -> tuple[int, str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "generation", prompt, "--model", "tiny", "--device", "cpu"]
    cmd += ["--out", str(out), "--cache-dir", str(cache)]
    if not stderr_tty:
        proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
        return proc.returncode, proc.stdout, proc.stderr
    master, slave = pty.openpty()
    # A terminal 100 columns wide (a fresh pty has none, and tqdm fits its bar to the width).
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        child = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=slave, text=True)
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the child closed its end
                break
            if not data:
                break
            chunks.append(data)
        stdout = child.stdout.read() if child.stdout else ""
        if child.stdout:
            child.stdout.close()
        code = child.wait(timeout=120)
    finally:
        os.close(master)
    return code, stdout, b"".join(chunks).decode(errors="replace")


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_cli_writes_a_16_9_png_with_its_parameters_and_the_same_seed_gives_the_same_pixels(
    tiny_cache_dir: Path,
    tmp_path: Path,
) -> None:
    prompt = "a red fox --ar 16:9 --seed 42"
    code, out, err = run_cli(tiny_cache_dir, tmp_path / "one", prompt)
    assert code == 0, err
    paths = [Path(line) for line in out.splitlines()]
    assert len(paths) == 1 and paths[0].parent == tmp_path / "one" and paths[0].suffix == ".png"
    assert "[" not in err  # no progress bar when stderr is not a terminal
    with Image.open(paths[0]) as im:
        width, height = im.size
        params = im.text["parameters"]  # type: ignore[attr-defined]
    assert abs(width / height - 16 / 9) < 0.1
    assert params.startswith("a red fox\n") and "Seed: 42" in params and f"Size: {width}x{height}" in params

    code2, out2, err2 = run_cli(tiny_cache_dir, tmp_path / "two", prompt, stderr_tty=True)
    assert code2 == 0, err2
    assert re.search(r"generating: +100%.* 4/4 \[", err2), (
        err2
    )  # tqdm's bar on the terminal, last step included
    second = Path(out2.strip())
    assert np.array_equal(pixels(paths[0]), pixels(second))
    assert paths[0].read_bytes() == second.read_bytes()


def test_cli_bad_prompt_is_one_line_on_stderr_and_exit_2(tiny_cache_dir: Path, tmp_path: Path) -> None:
    code, out, err = run_cli(tiny_cache_dir, tmp_path / "out", "a fox --ar 99:1")
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and "--ar" in err
    assert not (tmp_path / "out").exists()


def test_cli_expands_permutations_and_repeat_into_one_job_each(tiny_cache_dir: Path, tmp_path: Path) -> None:
    code, out, err = run_cli(tiny_cache_dir, tmp_path / "out", "a {red, blue} fox --repeat 2 --n 1 --steps 2")
    assert code == 0, err
    paths = [Path(line) for line in out.splitlines()]
    assert len(paths) == 4 and len(set(paths)) == 4 and all(p.is_file() for p in paths)
    prompts = []
    for path in paths:
        with Image.open(path) as im:
            prompts.append(im.text["parameters"].split("\n", 1)[0])  # type: ignore[attr-defined]
    assert sorted(prompts) == ["a blue fox", "a blue fox", "a red fox", "a red fox"]  # braces expanded


def test_cli_refuses_what_imagine_refuses_with_its_message(tiny_cache_dir: Path, tmp_path: Path) -> None:
    for prompt, message in [
        ("a fox --repeat 0", "`--repeat` must be between 1 and 8 jobs, not 0."),
        ("{a, b, c} fox --repeat 8", "That command makes 24 jobs; one command makes at most 16."),
    ]:
        code, out, err = run_cli(tiny_cache_dir, tmp_path / "out", prompt)
        assert (code, out, err.strip()) == (2, "", f"error: {message}")
    assert not (tmp_path / "out").exists()
