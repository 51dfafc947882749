"""The test toolkit that the tests and the benchmarks share: a loopback Discord server
(`testkit.discord_loopback`), the bot as a real process (`testkit.bot_process`), a worker process driven
over stdin/stdout (`testkit.worker_process`) and how the bot answered (`testkit.answers`)."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
"""The checkout this package runs from: the child processes' working directory and PYTHONPATH."""
