"""EmbedStream and ClassifyStream: many requests over one call, each worked on as its unary call
would be, answered as each finishes, with at most `window` of a stream's requests in progress.

The window is the flow control: the next request is read only once an answer has been sent, so a
caller that sends faster than the service works (or reads its answers slower) is held back by
gRPC's own flow control, and a stream holds at most `window` requests (each at most
--max-request-bytes, each counted in the gateway's bytes in flight) plus what the transport
buffers. A request that fails as a whole is answered with its own status, and the stream goes on;
only a protocol fault (a message that does not parse, an id that is empty, too long or already in
progress) ends the stream. Ending the stream (its deadline, a cancel) cancels its requests' work,
and with it their Triton calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.rpc import code_pb2, status_pb2

from gateway import metrics
from gateway.byte_budget import InFlightBytes, InFlightFull
from gateway.calls import Field
from gateway.errors import RequestError, Violation, invalid, to_status
from gateway.observability import Undecodable

MAX_ID_CHARS = 128
OK = status_pb2.Status(code=code_pb2.OK)

Work = Callable[[Any], Awaitable[Any]]  # the inner request -> its unary response (raises on failure)
Answer = Callable[[str, status_pb2.Status, Any], Any]  # id, status, response or None -> stream message


@dataclass(frozen=True)
class RefusedItem:
    """A stream request refused from its bytes (gateway.entry_counts), answered under its id."""

    id: str
    status: status_pb2.Status


class _End:
    """The reader read the last request and every request's answer is queued."""


END = _End()


def _check_id(item_id: str, in_progress: dict[str, int]) -> None:
    if not item_id:
        raise invalid(Field("id"), "every stream request needs an id (1 to 128 characters) to match its answer")
    if len(item_id) > MAX_ID_CHARS:
        raise invalid(Field("id"), f"{len(item_id)} characters, more than {MAX_ID_CHARS}")
    if item_id in in_progress:
        raise invalid(Field("id"), f"{item_id!r} is already in progress on this stream: ids must be unique")


def _size_refusal(size: int, in_flight: InFlightBytes | None) -> status_pb2.Status | None:
    """Why a request of `size` bytes cannot be held now (too large for the whole budget, or the
    budget full); None when its bytes were taken."""
    if in_flight is None:
        return None
    if in_flight.limit and size > in_flight.limit:
        error = RequestError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            [Violation(Field("request"), f"{size} bytes, more than the gateway holds at once (--max-inflight-bytes)")],
        )
        return to_status(error)
    if not in_flight.take(size):
        return to_status(InFlightFull(in_flight.limit))
    return None


async def answers(
    requests: AsyncIterator[Any],
    method: str,
    work: Work,
    answer: Answer,
    window: int,
    in_flight: InFlightBytes | None,
) -> AsyncIterator[Any]:
    """The stream's answers, as each request's work finishes. Raises RequestError (ending the
    stream) for a protocol fault."""
    free = asyncio.Semaphore(window)
    finished: asyncio.Queue[Any] = asyncio.Queue()
    in_progress: dict[str, int] = {}  # id -> its bytes held in flight
    tasks: set[asyncio.Task[None]] = set()

    async def one(item_id: str, request: Any) -> None:
        try:
            status, response = OK, await work(request)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the request's failure is its answer; the stream goes on
            status, response = to_status(error), None
        finished.put_nowait((item_id, status, response))

    async def read() -> None:
        try:
            incoming = aiter(requests)
            while True:
                await free.acquire()  # no request read while `window` are in progress
                try:
                    item = await anext(incoming)
                except StopAsyncIteration:
                    break
                if isinstance(item, RefusedItem):
                    _check_id(item.id, in_progress)
                    in_progress[item.id] = 0
                    finished.put_nowait((item.id, item.status, None))
                    continue
                if isinstance(item, Undecodable):
                    raise invalid(Field("request"), "a stream message is not a valid message of this method")
                _check_id(item.id, in_progress)
                size = item.ByteSize()
                refusal = _size_refusal(size, in_flight)
                in_progress[item.id] = 0 if refusal is not None else size
                if refusal is not None:
                    finished.put_nowait((item.id, refusal, None))
                    continue
                task = asyncio.create_task(one(item.id, item.request))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.gather(*tasks)
            finished.put_nowait(END)
        except Exception as error:  # a protocol fault (or the transport's): the stream ends with it
            finished.put_nowait(error)

    reader = asyncio.create_task(read())
    try:
        while (entry := await finished.get()) is not END:
            if isinstance(entry, Exception):
                raise entry
            item_id, status, response = entry
            metrics.STREAM_REQUESTS.labels(method, code_pb2.Code.Name(status.code)).inc()
            yield answer(item_id, status, response)  # returns once gRPC has taken the message
            size = in_progress.pop(item_id)
            if in_flight is not None and size:
                in_flight.give_back(size)
            free.release()
    finally:
        # However the stream ends (cancel, deadline, fault): its requests' work ends with it.
        for task in [reader, *tasks]:
            task.cancel()
        await asyncio.gather(reader, *tasks, return_exceptions=True)
        if in_flight is not None:
            in_flight.give_back(sum(in_progress.values()))
