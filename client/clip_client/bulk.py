"""The bookkeeping of embed_many and classify_many, whatever the client: which requests of a stream
are out, which wait to be sent again, and which results may be handed to the caller.

Inputs are read lazily, `batch_size` to a stream request, and at most `window` requests are out
(sent and not answered, or waiting to be sent again) at once, so memory stays bounded however long
the input is. A request whose answer says to retry it (busy, the model server restarting) waits
its delay and is sent again; when the stream itself breaks (a gateway restarted, a connection
reached its maximum age) every request that was out is sent again on a new stream. A request is
only ever answered to the caller once: a result is taken when its answer is read, and an answer
lost with its stream is worked on again.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

Result = TypeVar("Result")


@dataclass
class Chunk:
    """One stream request: `count` inputs from input position `first`."""

    id: str
    first: int
    count: int
    message: Any  # the *StreamRequest to send
    budget: Any  # the CallBudget of the request, its retries included
    attempts: int = 1
    not_before: float = 0.0


@dataclass
class Ledger(Generic[Result]):
    inputs: Iterator[Any]
    batch_size: int
    window: int
    build: Callable[[str, list[Any]], Any]  # id, inputs -> the *StreamRequest
    new_budget: Callable[[], Any]
    ordered: bool
    sent: dict[str, Chunk] = field(default_factory=dict)
    waiting: list[Chunk] = field(default_factory=list)
    exhausted: bool = False
    _next_input: int = 0
    _next_output: int = 0
    _ready: dict[int, Result] = field(default_factory=dict)
    _ids: Iterator[int] = field(default_factory=itertools.count)

    @classmethod
    def of(
        cls,
        inputs: Iterable[Any],
        batch_size: int,
        window: int,
        build: Callable[[str, list[Any]], Any],
        new_budget: Callable[[], Any],
        ordered: bool,
    ) -> Ledger[Result]:
        if batch_size < 1 or window < 1:
            raise ValueError(f"batch_size and window must be at least 1, not {batch_size} and {window}")
        return cls(iter(inputs), batch_size, window, build, new_budget, ordered)

    @property
    def done(self) -> bool:
        return self.exhausted and not self.sent and not self.waiting

    def to_send(self) -> list[Chunk]:
        """The requests to write now: those waiting whose time came, then new ones up to the window."""
        now = time.monotonic()
        due = [chunk for chunk in self.waiting if chunk.not_before <= now]
        self.waiting = [chunk for chunk in self.waiting if chunk.not_before > now]
        for chunk in due:
            self.sent[chunk.id] = chunk
        while not self.exhausted and len(self.sent) + len(self.waiting) < self.window:
            batch = list(itertools.islice(self.inputs, self.batch_size))
            if not batch:
                self.exhausted = True
                break
            chunk_id = str(next(self._ids))
            chunk = Chunk(chunk_id, self._next_input, len(batch), self.build(chunk_id, batch), self.new_budget())
            self._next_input += len(batch)
            self.sent[chunk_id] = chunk
            due.append(chunk)
        return due

    def messages(self) -> list[Any]:
        """The messages to write now (to_send's), then None, which ends the request stream, once
        every input is answered."""
        return [chunk.message for chunk in self.to_send()] + ([None] if self.done else [])

    @property
    def only_waiting(self) -> bool:
        """Nothing is out but requests waiting for their retry delay: no answer will come first."""
        return not self.sent and bool(self.waiting)

    def seconds_to_next(self) -> float:
        """How long until a waiting request is due (0 when none waits)."""
        if not self.waiting:
            return 0.0
        return max(0.0, min(chunk.not_before for chunk in self.waiting) - time.monotonic())

    def answered(self, chunk_id: str) -> Chunk:
        chunk = self.sent.pop(chunk_id, None)
        if chunk is None:
            raise KeyError(f"the server answered stream request {chunk_id!r}, which is not out")
        return chunk

    def again(self, chunk: Chunk, delay: float) -> None:
        chunk.attempts += 1
        chunk.not_before = time.monotonic() + delay
        self.waiting.append(chunk)

    def stream_lost(self) -> None:
        """Every request that was out is sent again (on the next stream)."""
        self.waiting.extend(self.sent.values())
        self.sent.clear()

    def deliver(self, results: list[tuple[int, Result]]) -> list[tuple[int, Result]]:
        """What the caller may have now: `results` as they come, or in input order (those after a
        gap held until it is filled; at most the window's worth)."""
        if not self.ordered:
            return results
        self._ready.update(results)
        out = []
        while self._next_output in self._ready:
            out.append((self._next_output, self._ready.pop(self._next_output)))
            self._next_output += 1
        return out
