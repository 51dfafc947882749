"""Turning generation requests into pictures: parsing, the worker that owns the pipeline, results."""
