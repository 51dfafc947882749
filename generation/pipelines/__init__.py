"""Diffusers pipelines: loading models, running batches, previews. The only place that imports torch."""
