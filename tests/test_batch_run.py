"""`generation.scheduling.batch_run.BatchRun`: the per-step checks, progress throttling and OutOfMemory
split that the local worker and the Ray replica share. Run synchronously on a scripted engine and a
fake clock."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from generation.backends.protocol import GeneratedImage, GenerationResult, JobCancelled, JobFailed
from generation.pipelines.contract import BatchInterrupted, OutOfMemory, StepCallback
from generation.prompts.request import GenerationRequest, ModelProfile
from generation.scheduling.batch_run import CANCELLED, OUT_OF_MEMORY, BatchRun, Outcome, StepDone, outcome_for


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class ScriptedEngine:
    """Advances `clock` by `step_s` before each step; more than `max_fit` requests → OutOfMemory."""

    clock: Clock
    step_s: float = 0.1
    max_fit: int = 99
    calls: list[list[str]] = field(default_factory=list)
    previews: list[tuple[int, int]] = field(default_factory=list)  # (step, local index) rendered
    profile: ModelProfile = field(
        default_factory=lambda: ModelProfile(
            name="fake", native_size=64, default_steps=10, default_guidance=5.0
        )
    )

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def max_batch_images(self, request: GenerationRequest) -> int:
        return self.max_fit

    def run_batch(
        self,
        requests: Sequence[GenerationRequest],
        sources: Sequence[bytes | None],
        on_step: StepCallback,
        pictures: Mapping[str, bytes] | None = None,
    ) -> list[list[GeneratedImage]]:
        self.calls.append([r.prompt for r in requests])
        if len(requests) > self.max_fit:
            raise OutOfMemory("too many")
        total = requests[0].steps

        def preview(i: int) -> bytes:
            self.previews.append((step, i))
            return f"preview:{requests[i].prompt}".encode()

        for step in range(1, total + 1):
            self.clock.now += self.step_s
            if not on_step(step, total, preview):
                raise BatchInterrupted()
        return [[GeneratedImage(r.prompt.encode(), s, r.width, r.height) for s in r.seeds] for r in requests]


def requests(*prompts: str, steps: int = 10) -> list[GenerationRequest]:
    return [
        GenerationRequest(prompt=p, width=64, height=64, steps=steps, guidance=5.0, seeds=(i,), model="fake")
        for i, p in enumerate(prompts)
    ]


@dataclass(frozen=True)
class Ended:
    """A settled request that has no images: how it ended (exceptions compare by identity)."""

    kind: type[Exception]
    message: str


def failed(message: str) -> Ended:
    return Ended(JobFailed, message)


CANCELLED_ENDING = Ended(JobCancelled, CANCELLED)


@dataclass
class Recorder:
    """`BatchMembers` that records steps and outcomes; `run()` may replace its flags and `report`."""

    steps: list[StepDone] = field(default_factory=list)
    outcomes: dict[int, list[tuple[GeneratedImage, ...] | Ended]] = field(default_factory=dict)
    is_stopped: Callable[[], bool] = lambda: False
    is_cancelled: Callable[[int], bool] = lambda i: False
    is_watched: Callable[[int], bool] = lambda i: True
    on_report: Callable[[StepDone], None] | None = None

    def stopped(self) -> bool:
        return self.is_stopped()

    def cancelled(self, i: int) -> bool:
        return self.is_cancelled(i)

    def watched(self, i: int) -> bool:
        return self.is_watched(i)

    def report(self, step: StepDone) -> None:
        (self.on_report or self.steps.append)(step)

    def settle(self, i: int, outcome: Outcome) -> None:
        recorded = outcome if isinstance(outcome, tuple) else Ended(type(outcome), str(outcome))
        self.outcomes.setdefault(i, []).append(recorded)


MEMBER_OPTIONS = {
    "stopped": "is_stopped",
    "cancelled": "is_cancelled",
    "watched": "is_watched",
    "report": "on_report",
}


def run(engine: ScriptedEngine, reqs: list[GenerationRequest], rec: Recorder, **options: object) -> None:
    for option, attribute in MEMBER_OPTIONS.items():
        if option in options:
            setattr(rec, attribute, options.pop(option))
    defaults: dict[str, object] = {"deadline": 1e9, "timeout_s": 60.0, "clock": engine.clock}
    BatchRun(engine, reqs, [None] * len(reqs), rec, **(defaults | options)).run()  # type: ignore[arg-type]


def test_progress_is_reported_once_per_interval_and_always_at_the_last_step() -> None:
    engine, rec = ScriptedEngine(Clock(), step_s=0.1), Recorder()
    run(engine, requests("fox", "cat"), rec, progress_interval_s=0.25, preview_interval_s=1e9)
    # steps end at 0.1, 0.2, ... 1.0: reported at 0.3 (0.3 - 0 >= 0.25), 0.6, 0.9 and the last step
    assert [s.step for s in rec.steps] == [3, 6, 9, 10]
    assert all(s.total == 10 and s.previews == {0: None, 1: None} for s in rec.steps)
    assert {i: [type(o) for o in outs] for i, outs in rec.outcomes.items()} == {0: [tuple], 1: [tuple]}


def test_a_zero_interval_reports_every_step_and_previews_are_always_reported() -> None:
    engine, rec = ScriptedEngine(Clock(), step_s=0.1), Recorder()
    run(engine, requests("fox", steps=4), rec, progress_interval_s=0.0, preview_interval_s=1e9)
    assert [s.step for s in rec.steps] == [1, 2, 3, 4]

    engine, rec = ScriptedEngine(Clock(), step_s=0.1), Recorder()
    run(engine, requests("fox", steps=6), rec, progress_interval_s=1e9, preview_interval_s=0.2)
    # previews every 0.2 s, never at the last step; each preview is reported even inside the interval
    assert [(s.step, s.previews[0]) for s in rec.steps] == [
        (2, b"preview:fox"),
        (4, b"preview:fox"),
        (6, None),
    ]


def test_previews_are_rendered_only_for_watched_requests() -> None:
    engine, rec = ScriptedEngine(Clock(), step_s=0.1), Recorder()
    run(engine, requests("fox", "cat", steps=3), rec, preview_interval_s=0.0, watched=lambda i: i == 1)
    assert engine.previews == [(1, 1), (2, 1)]  # local index 1 (cat) only, steps 1 and 2
    assert [s.previews for s in rec.steps[:2]] == [{1: b"preview:cat"}, {1: b"preview:cat"}]


def test_out_of_memory_splits_in_halves_down_to_single_requests() -> None:
    engine, rec = ScriptedEngine(Clock(), max_fit=1), Recorder()
    run(engine, requests("a", "b", "c"), rec)
    assert engine.calls == [["a", "b", "c"], ["a"], ["b", "c"], ["b"], ["c"]]
    assert all(isinstance(outs[0], tuple) and len(outs) == 1 for outs in rec.outcomes.values())

    engine, rec = ScriptedEngine(Clock(), max_fit=0), Recorder()
    run(engine, requests("a"), rec)
    assert rec.outcomes == {0: [failed(OUT_OF_MEMORY)]}


def test_time_limit_stop_and_cancel_end_each_request_once() -> None:
    engine, rec = ScriptedEngine(Clock(), step_s=1.0), Recorder()
    run(engine, requests("a", "b"), rec, deadline=2.5, timeout_s=2.5)
    assert rec.outcomes == {0: [failed("took longer than 2.5 s")], 1: [failed("took longer than 2.5 s")]}

    stopped = [False]
    engine, rec = ScriptedEngine(Clock()), Recorder()
    engine.step_s = 0.1
    run(
        engine, requests("a"), rec, stopped=lambda: stopped[0], report=lambda _s: stopped.__setitem__(0, True)
    )
    assert rec.outcomes == {0: [CANCELLED_ENDING]}

    # one member cancelled before the run: skipped and ended as cancelled; the other runs alone
    engine, rec = ScriptedEngine(Clock()), Recorder()
    run(engine, requests("a", "b"), rec, cancelled=lambda i: i == 0)
    assert (
        engine.calls == [["b"]]
        and rec.outcomes[0] == [CANCELLED_ENDING]
        and isinstance(rec.outcomes[1][0], tuple)
    )


def test_an_engine_error_fails_the_batch_with_its_type() -> None:
    class Broken(ScriptedEngine):
        def run_batch(self, *args: object, **kwargs: object) -> list[list[GeneratedImage]]:
            raise ValueError("boom")

    rec = Recorder()
    run(Broken(Clock()), requests("a", "b"), rec)
    boom = failed("generation failed: ValueError")
    assert rec.outcomes == {0: [boom], 1: [boom]}


def test_outcomes_map_to_what_a_job_ends_with() -> None:
    image = GeneratedImage(b"png", 1, 64, 64)
    assert outcome_for("j", (image,)) == GenerationResult("j", (image,))
    cancelled = JobCancelled(CANCELLED)
    assert outcome_for("j", cancelled) is cancelled
    too_long = outcome_for("j", JobFailed("took longer than 5 s"))
    assert isinstance(too_long, JobFailed) and str(too_long) == "took longer than 5 s"
