"""Shared fixtures: the tiny model (built once per session) and its engine."""

pytest_plugins = ["tests.fixtures_generation"]
