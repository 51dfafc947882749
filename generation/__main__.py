"""`python -m generation`: see `generation.cli`."""

from generation.cli import main

raise SystemExit(main())
