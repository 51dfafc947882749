"""A submitted job's state on the event loop, its event stream and its handle: shared by the local
service and the Ray backend (both keep their jobs on the loop and settle them there)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from generation.backends.protocol import GenerationResult, JobEvent, Progress, Queued
from generation.prompts.request import GenerationRequest


class SourceImages(Protocol):
    """Where source images (img2img, variations, upscales) are read from, by sha256 digest."""

    def get(self, digest: str) -> bytes:
        """The stored bytes; raises if there are none."""
        ...


class MemoryImages:
    """`SourceImages` in memory (the command line's one `--image`; tests)."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def add(self, data: bytes) -> str:
        """Keep `data`; returns its sha256 digest."""
        digest = hashlib.sha256(data).hexdigest()
        self.data[digest] = data
        return digest

    def get(self, digest: str) -> bytes:
        """The bytes kept under `digest` (KeyError if none)."""
        return self.data[digest]


class Subscriber:
    """One `events()` iterator's buffer. Unbounded in effect but latest-wins: a new Queued or
    Progress replaces an unread one of the same kind, so a slow reader never piles up events."""

    def __init__(self) -> None:
        self.items: deque[JobEvent | None] = deque()
        self.ready = asyncio.Event()

    def put(self, event: JobEvent | None) -> None:
        """Buffer an event (None: the job ended)."""
        if self.items and event is not None:
            tail = self.items[-1]
            if isinstance(tail, Queued) and isinstance(event, Queued):
                self.items[-1] = event
                return
            if isinstance(tail, Progress) and isinstance(event, Progress):
                if event.preview_png is None and tail.preview_png is not None:
                    event = Progress(event.step, event.total, tail.preview_png)
                self.items[-1] = event
                return
        self.items.append(event)
        self.ready.set()


class EventStream:
    """Async iterator over one job's events; ends when the job ends."""

    def __init__(self, job: Job) -> None:
        self._job = job
        self._sub = job.subscribe()
        self._ended = False

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> JobEvent:
        sub = self._sub
        if self._ended:
            raise StopAsyncIteration
        while not sub.items:
            sub.ready.clear()
            await sub.ready.wait()
        event = sub.items.popleft()
        if event is None:
            self._ended = True
            self._job.unsubscribe(sub)
            raise StopAsyncIteration
        return event


@dataclass(eq=False)
class Job:
    """A job's state. Loop thread only, except `request`, `job_id` and `cancelled`, which the worker
    reads, and `subscribers`, whose emptiness it reads (a list's length is read atomically)."""

    job_id: str
    owner: str
    request: GenerationRequest
    future: asyncio.Future[GenerationResult]
    cancelled: bool = False  # set on the loop; the worker reads it at each step
    position: int = 0
    last_event: JobEvent | None = None
    subscribers: list[Subscriber] = field(default_factory=list)
    on_subscribe: Callable[[Job], None] | None = None  # called before a new reader sees `last_event`

    @property
    def done(self) -> bool:
        """True once the job has its result or error."""
        return self.future.done()

    def subscribe(self) -> Subscriber:
        """A new reader, primed with the latest event."""
        if self.on_subscribe is not None and not self.done:
            self.on_subscribe(self)
        sub = Subscriber()
        if self.last_event is not None:
            sub.put(self.last_event)
        if self.done:
            sub.put(None)
        else:
            self.subscribers.append(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        """Drop a reader."""
        with contextlib.suppress(ValueError):
            self.subscribers.remove(sub)

    def settle(self, outcome: GenerationResult | BaseException) -> bool:
        """End the job with its result or error and close every reader; False if it had ended."""
        if self.done:
            return False
        if isinstance(outcome, BaseException):
            self.future.set_exception(outcome)
        else:
            self.future.set_result(outcome)
        for sub in self.subscribers:
            sub.put(None)
        self.subscribers.clear()
        return True

    def publish(self, event: JobEvent) -> None:
        """Send an event to every reader (nothing after the job ended)."""
        if self.done:
            return
        self.last_event = event
        for sub in self.subscribers:
            sub.put(event)


class Handle:
    """What `submit` returns: the job id, its events and its result."""

    def __init__(self, job: Job) -> None:
        self._job = job
        self.job_id = job.job_id

    def events(self) -> EventStream:
        """Events from now until the job ends. Any number of iterators may be open at once; each
        starts with the job's latest event (its current state), so a late reader misses nothing
        that matters. Unread Queued/Progress events are replaced by newer ones (latest wins)."""
        return EventStream(self._job)

    async def result(self) -> GenerationResult:
        """The images; raises `JobFailed` or `JobCancelled`. Cancelling the caller leaves the job be."""
        return await asyncio.shield(self._job.future)


def mark_retrieved(future: asyncio.Future[GenerationResult]) -> None:
    """Done-callback for a job's future: an exception nobody awaited is not logged as lost."""
    # A job nobody awaits (e.g. cancelled before anyone asked) must not log "exception never retrieved".
    if not future.cancelled():
        future.exception()
