"""`python -m bench NAME [args]`: import `bench.NAME` and call its `main(argv, settings)` with the
settings read from the environment (`bench.config`)."""

from __future__ import annotations

import importlib
import pkgutil
import re
import sys
from collections.abc import Sequence
from pathlib import Path

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_NOT_BENCHMARKS = {
    "report",
    "archs",
    "plain",
    "settings",
    "service_edits",
    "switching",
    "video",
    "references",
}  # helpers, not benchmarks


def available() -> list[str]:
    """The benchmark modules in this package."""
    folder = str(Path(__file__).parent)
    return sorted(
        m.name
        for m in pkgutil.iter_modules([folder])
        if not m.name.startswith("_") and m.name not in _NOT_BENCHMARKS
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to one benchmark; returns its exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(f"usage: python -m bench NAME [args]   (NAME: {', '.join(available())})")
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if not _NAME.match(name) or name in _NOT_BENCHMARKS or name not in available():
        print(f"unknown benchmark {name!r}; available: {', '.join(available())}", file=sys.stderr)
        return 2
    from bench.config import load_settings

    module = importlib.import_module(f"bench.{name}")
    result = module.main(rest, load_settings())
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
