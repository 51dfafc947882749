"""Prometheus metrics of one bot process (prometheus-client, in a registry of its own).

`BotMetrics` is the `jobs.metrics.JobMetrics` the runner reports to; the queue depth and GPU memory
are read when `/metrics` is scraped (`refresh`); Discord's rate-limit waits are counted from
discord.py's own log lines (`RateLimitCounter`): discord.py has no hook for them.
"""

from __future__ import annotations

import logging
import sys

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from generation.backends.protocol import GenerationBackend

OUTCOMES = ("delivered", "failed", "cancelled", "flagged")
GENERATION_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, float("inf"))


class RateLimitCounter(logging.Handler):
    """Counts discord.py's "We are being rate limited" warnings (each is one wait before a retry)."""

    def __init__(self, counter: Counter) -> None:
        super().__init__(logging.WARNING)
        self._counter = counter

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, str) and record.msg.startswith("We are being rate limited"):
            self._counter.inc()


class BotMetrics:
    """Every metric `/metrics` exports; the runner reports through the `JobMetrics` methods."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.queue_depth = Gauge(
            "imagine_queue_depth", "Jobs waiting or running on the generator", registry=r
        )
        self.jobs = Counter("imagine_jobs", "Jobs settled, by outcome", ["outcome"], registry=r)
        for outcome in OUTCOMES:
            self.jobs.labels(outcome)
        self.generation_seconds = Histogram(
            "imagine_generation_seconds",
            "Seconds from a job's start on the engine to its images",
            buckets=GENERATION_BUCKETS,
            registry=r,
        )
        self.steps_per_second = Gauge(
            "imagine_steps_per_second", "Denoising steps per second of the last finished job", registry=r
        )
        self.images = Counter("imagine_images", "Images generated", registry=r)
        self.refunds = Counter("imagine_refunded_images", "Images given back to members' quotas", registry=r)
        self.delivery_retries = Counter("imagine_delivery_retries", "Delivery attempts retried", registry=r)
        self.rate_limit_waits = Counter(
            "imagine_discord_rate_limit_waits", "Waits on Discord's rate limits (429 answers)", registry=r
        )
        self.gpu_memory = Gauge(
            "imagine_gpu_memory_bytes", "GPU memory allocated by torch", ["device"], registry=r
        )

    # -- jobs.metrics.JobMetrics ----------------------------------------------------------------------

    def job_settled(self, outcome: str) -> None:
        self.jobs.labels(outcome).inc()

    def generated(self, seconds: float, steps: int, images: int) -> None:
        self.generation_seconds.observe(seconds)
        self.images.inc(images)
        if seconds > 0 and steps > 0:  # a clip's steps are its video model's own (not in its request)
            self.steps_per_second.set(steps / seconds)

    def refunded(self, images: int) -> None:
        self.refunds.inc(images)

    def delivery_retry(self) -> None:
        self.delivery_retries.inc()

    # -- scraping -------------------------------------------------------------------------------------

    def count_rate_limits(self, logger: logging.Logger | None = None) -> RateLimitCounter:
        """Count discord.py's rate-limit waits (attach to the `discord.http` logger)."""
        handler = RateLimitCounter(self.rate_limit_waits)
        (logger or logging.getLogger("discord.http")).addHandler(handler)
        return handler

    def refresh(self, backend: GenerationBackend | None) -> None:
        """Read what is sampled at scrape time: the queue depth and (where torch is loaded) GPU memory."""
        if backend is not None:
            self.queue_depth.set(len(backend.queue_snapshot()))
        if "torch" in sys.modules:  # only a process that generates here has loaded it
            from generation.pipelines.devices import gpu_memory_in_use

            for device, used in gpu_memory_in_use().items():
                self.gpu_memory.labels(device).set(used)

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)
