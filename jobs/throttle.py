"""Edit throttling: at most one progress edit per interval per key (a job), on an injected clock."""

from __future__ import annotations

from collections.abc import Callable


class EditThrottle:
    """`ready(key)` says whether an edit may go out now, and if so counts it as sent."""

    def __init__(self, interval_s: float, clock: Callable[[], float]) -> None:
        self._interval = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}

    def ready(self, key: str) -> bool:
        """True (and remembers now) if `interval_s` has passed since the last edit for `key`."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            return False
        self._last[key] = now
        return True

    def forget(self, key: str) -> None:
        """Drop what is known about `key` (its job ended)."""
        self._last.pop(key, None)
