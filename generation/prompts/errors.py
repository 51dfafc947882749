"""`PromptError`: the one error type of prompt parsing."""

from __future__ import annotations


class PromptError(ValueError):
    """A bad prompt or option; `str()` is a one-line message for the member."""
