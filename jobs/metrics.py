"""What the runner reports about jobs, for whoever counts them (`bot.metrics` exports them to
Prometheus); `NoMetrics` when nobody does. jobs/ stays free of the exporter and of bot/."""

from __future__ import annotations

from typing import Protocol


class JobMetrics(Protocol):
    """Counters and timings of jobs, reported by `JobRunner` as they happen."""

    def job_settled(self, outcome: str) -> None:
        """A job ended: "delivered", "failed", "cancelled" or "flagged" (all its images flagged)."""

    def generated(self, seconds: float, steps: int, images: int) -> None:
        """A job's images came back: `seconds` from its start on the engine, `steps` per image."""

    def refunded(self, images: int) -> None:
        """Images given back to their owner's quota."""

    def delivery_retry(self) -> None:
        """A delivery attempt failed transiently and is retried."""


class NoMetrics:
    """Counts nothing."""

    def job_settled(self, outcome: str) -> None:
        pass

    def generated(self, seconds: float, steps: int, images: int) -> None:
        pass

    def refunded(self, images: int) -> None:
        pass

    def delivery_retry(self) -> None:
        pass
