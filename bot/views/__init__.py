"""Persistent components on results: custom ids and the `DynamicItem` buttons."""
