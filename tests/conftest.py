"""Shared fixtures: the tiny model (built once per session), its engine, one local Ray cluster."""

pytest_plugins = ["tests.fixtures_generation", "tests.ray_fixtures"]
