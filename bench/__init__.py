"""Benchmarks: `python -m bench NAME [args]` runs `bench.NAME.main(args)`; results go to bench/RESULTS.md."""
