"""One batch on an engine, run the same way by the local worker thread and by a Ray replica.

`BatchRun.run()` calls `engine.run_batch` and, at every denoising step, checks the stop flag, the time
limit and which members are still wanted; it reports progress throttled per member and renders
previews only where they are wanted; `OutOfMemory` splits the batch in halves and retries, down to
single requests. Every request ends with exactly one `Outcome` through `settle`, as soon as it is
known. Runs on the engine's thread; never raises.

Progress for a member is reported at most once per `progress_interval_s` (counted from the start of
the run), except a step that carries a preview and the last step, which are always reported: readers
show at most one edit per second or two, so a report per step would only cost the event loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from generation.backends.protocol import GeneratedImage, GenerationResult, JobCancelled, JobFailed
from generation.pipelines.contract import (
    BatchFailed,
    BatchInterrupted,
    Engine,
    NonFiniteOutput,
    NoPreview,
    OutOfMemory,
    PreviewFn,
)
from generation.prompts.request import GenerationRequest

log = logging.getLogger(__name__)

CANCELLED = "cancelled"
OUT_OF_MEMORY = "ran out of GPU memory"
NON_FINITE = (
    "the model produced an empty picture (its values went NaN or infinite, which would post as black); "
    "try another seed, prompt or sampler"
)

Outcome = tuple[GeneratedImage, ...] | JobFailed | JobCancelled
"""A request's images, or how its job ended without them (plain values: they cross to Ray's driver)."""


def outcome_for(job_id: str, outcome: Outcome) -> GenerationResult | JobFailed | JobCancelled:
    """What the job's future ends with: its result, or the `JobCancelled` / `JobFailed` it ended with."""
    if isinstance(outcome, JobFailed | JobCancelled):
        return outcome
    return GenerationResult(job_id, outcome)


def timeout_message(timeout_s: float) -> str:
    """What a job that ran past its time limit is told."""
    return f"took longer than {timeout_s:g} s"


@dataclass(frozen=True)
class StepDone:
    """Step `step` of `total` finished; `previews` holds the requests whose progress is reported now
    (request index → a preview PNG, or None)."""

    step: int
    total: int
    previews: dict[int, bytes | None] = field(default_factory=dict)


class BatchMembers(Protocol):
    """The requests' side of a run: what `BatchRun` reads of them and reports to them, from the
    engine's thread at every step. `i` is a request's index in the batch."""

    def stopped(self) -> bool:
        """The whole batch is abandoned (cancelled call, watchdog, shutdown)."""
        ...

    def cancelled(self, i: int) -> bool:
        """Request i is no longer wanted (the batch stops once none is)."""
        ...

    def watched(self, i: int) -> bool:
        """Someone would see request i's previews."""
        ...

    def report(self, step: StepDone) -> None:
        """Progress of the requests named in `step.previews`."""
        ...

    def settle(self, i: int, outcome: Outcome) -> None:
        """Request i ended (exactly once per request)."""
        ...


@dataclass
class BatchRun:
    """One batch of requests with equal `batch_key()` (see the module docstring), reporting to
    `members`."""

    engine: Engine
    requests: Sequence[GenerationRequest]
    sources: Sequence[bytes | None]
    members: BatchMembers
    deadline: float  # on `clock`
    timeout_s: float  # for the message of a job that passes `deadline`
    clock: Callable[[], float] = time.monotonic
    preview_interval_s: float = 0.5
    progress_interval_s: float = 0.25
    label: str = "batch"  # names the batch in logs
    pictures: Mapping[str, bytes] = field(default_factory=dict)  # reference pictures by hash

    def run(self) -> None:
        """Run every request to its outcome."""
        started = self.clock()
        self._last_preview = [started] * len(self.requests)
        self._last_report = [started] * len(self.requests)
        self._run_group(list(range(len(self.requests))))

    def _run_group(self, indices: list[int]) -> None:
        wanted = [i for i in indices if not self.members.cancelled(i)]
        self._end([i for i in indices if i not in wanted], JobCancelled(CANCELLED))
        if not wanted:
            return
        if self.members.stopped():
            self._end(wanted, JobCancelled(CANCELLED))
            return
        if self.clock() > self.deadline:
            self._end(wanted, JobFailed(timeout_message(self.timeout_s)))
            return
        timed_out = False

        def on_step(step: int, total: int, preview: PreviewFn) -> bool:
            nonlocal timed_out
            if self.members.stopped():
                return False
            now = self.clock()
            if now > self.deadline:
                timed_out = True
                return False
            live = [(local, i) for local, i in enumerate(wanted) if not self.members.cancelled(i)]
            if not live:
                return False
            reported = {}
            for local, i in live:
                png = self._preview(i, local, step, total, now, preview)
                if png is not None or step == total or now - self._last_report[i] >= self.progress_interval_s:
                    self._last_report[i] = now
                    reported[i] = png
            if reported:
                self.members.report(StepDone(step, total, reported))
            return True

        try:
            out = self.engine.run_batch(
                [self.requests[i] for i in wanted], [self.sources[i] for i in wanted], on_step, self.pictures
            )
        except OutOfMemory:
            if len(wanted) == 1:
                log.warning("%s: request %d ran out of memory alone", self.label, wanted[0])
                self._end(wanted, JobFailed(OUT_OF_MEMORY))
                return
            log.warning("%s: %d requests ran out of memory together; splitting", self.label, len(wanted))
            half = len(wanted) // 2
            self._run_group(wanted[:half])
            self._run_group(wanted[half:])
            return
        except BatchInterrupted:
            self._end(
                wanted, JobFailed(timeout_message(self.timeout_s)) if timed_out else JobCancelled(CANCELLED)
            )
            return
        except NonFiniteOutput as exc:
            log.warning("%s: %s", self.label, exc)
            for local, (i, images) in enumerate(zip(wanted, exc.results, strict=True)):
                self.members.settle(i, JobFailed(NON_FINITE) if local in exc.failed else tuple(images))
            return
        except BatchFailed as exc:
            log.warning("%s failed: %s", self.label, exc)
            self._end(wanted, JobFailed(str(exc)))
            return
        except Exception as exc:
            log.exception("%s failed", self.label)
            self._end(wanted, JobFailed(f"generation failed: {type(exc).__name__}"))
            return
        if len(out) != len(wanted):
            log.error("%s: the engine returned %d results for %d requests", self.label, len(out), len(wanted))
            self._end(wanted, JobFailed("generation failed: wrong number of results"))
            return
        for i, images in zip(wanted, out, strict=True):
            self.members.settle(i, tuple(images))

    def _preview(
        self, i: int, local: int, step: int, total: int, now: float, preview: PreviewFn
    ) -> bytes | None:
        if (
            step >= total
            or not self.members.watched(i)
            or now - self._last_preview[i] < self.preview_interval_s
        ):
            return None
        self._last_preview[i] = now
        try:
            return preview(local)
        except NoPreview:
            return None
        except Exception:
            log.exception("%s: preview failed", self.label)
            return None

    def _end(self, indices: Sequence[int], ending: JobFailed | JobCancelled) -> None:
        for i in indices:
            self.members.settle(i, ending)
