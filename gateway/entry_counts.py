"""A request's list lengths (images, labels, templates, texts), counted on the wire before protobuf
parses it.

Parsing builds every entry first: a 64 MB message of 10 M empty `Image` entries took 7.7 s of the
event loop and 600 MB before the 32-image limit was even looked at. Here the top-level fields of
the serialized message are walked (each entry is a tag and a length; the payloads are skipped, not
read), and the walk stops at the first entry past its limit, so a refusal costs at most that many
steps and a valid request of 1,000 labels about a millisecond.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import grpc
import grpc.aio
from google.rpc import status_pb2

from clip_api import clip_service_pb2 as pb
from gateway.calls import Field
from gateway.config import Limits
from gateway.errors import RequestError, Violation, to_status
from gateway.grpc_streams import RefusedItem
from gateway.observability import RefusedUnparsed

# The request fields whose entries are limited, and the Limits field that limits them.
LIMITED_FIELDS = {
    "images": "max_images",
    "labels": "max_labels",
    "prompt_templates": "max_templates",
    "texts": "max_texts",
}
_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5


def _varint(data: bytes, position: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7


class _NotAMessage(Exception):
    """The bytes are no valid message: the parser then says so."""


def _fields(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(field number, payload start, payload end) for each top-level field of the serialized
    message `data`, the payloads skipped, not read (start == end for all but length-delimited
    fields); _NotAMessage where the wire format breaks (groups, a bad wire type, a truncated varint)."""
    position, end = 0, len(data)
    try:
        while position < end:
            key, position = _varint(data, position)
            number, wire_type = key >> 3, key & 7
            start = position
            if wire_type == _VARINT:
                _, position = _varint(data, position)
                start = position
            elif wire_type == _LENGTH_DELIMITED:
                length, start = _varint(data, position)
                position = start + length
            elif wire_type == _FIXED64:
                position = start = position + 8
            elif wire_type == _FIXED32:
                position = start = position + 4
            else:  # groups, or no valid wire type: not ours to judge
                raise _NotAMessage
            yield number, start, position
    except IndexError:  # a truncated varint
        raise _NotAMessage from None


def first_over(data: bytes, caps: Mapping[int, int]) -> int | None:
    """The number of the first field in `caps` (field number -> most entries) that `data`, a
    serialized message, holds more entries of than allowed; None when none does, or where the bytes
    are no valid message (the parser then says so)."""
    counts = dict.fromkeys(caps, 0)
    try:
        for number, _, _ in _fields(data):
            if number in counts:
                counts[number] += 1
                if counts[number] > caps[number]:
                    return number
    except _NotAMessage:
        return None
    return None


def field_bytes(data: bytes, wanted: int) -> bytes | None:
    """The payload of the last field `wanted` at the top level of `data` (as protobuf merges a
    message field: the last one wins), or None where there is none or the bytes are no valid message."""
    found = None
    try:
        for number, start, end in _fields(data):
            if number == wanted:
                found = data[start:end]
    except _NotAMessage:
        return None
    return found


STREAM_ID, STREAM_REQUEST = 1, 2  # the fields of every *StreamRequest: the caller's id, the request


def _method(method: str) -> Any:
    """The method descriptor of `method` ("/pkg.Service/Name") in clip.v1, or None."""
    service_name, _, method_name = method.lstrip("/").rpartition("/")
    service = pb.DESCRIPTOR.services_by_name.get(service_name.rpartition(".")[2])
    if service is None or service.full_name != service_name or method_name not in service.methods_by_name:
        return None
    return service.methods_by_name[method_name]


def _limited_fields(method: str) -> dict[int, tuple[str, str]]:
    """field number -> (name, its limit) for the request message of `method` (for a stream's, of
    the request each of its messages carries)."""
    descriptor = _method(method)
    if descriptor is None:
        return {}
    request = descriptor.input_type
    if descriptor.client_streaming:
        request = request.fields_by_number[STREAM_REQUEST].message_type
    return {
        field.number: (field.name, LIMITED_FIELDS[field.name])
        for field in request.fields
        if field.name in LIMITED_FIELDS and field.is_repeated
    }


class EntryCountInterceptor(grpc.aio.ServerInterceptor):
    """Refuses (INVALID_ARGUMENT, naming the field) a request with more entries in a list than its
    limit, from the wire bytes, before the message is parsed. The limits are read per call from
    `limits` (the ones in force: the repository's are only known once Triton has been ready)."""

    def __init__(self, limits: Callable[[], Limits]) -> None:
        self._limits = limits

    def _refusal(self, data: bytes, fields: dict[int, tuple[str, str]]) -> status_pb2.Status | None:
        """INVALID_ARGUMENT naming the first list of the serialized request `data` past its limit."""
        limits = self._limits()
        caps = {number: cap for number, (_, limit) in fields.items() if (cap := getattr(limits, limit)) is not None}
        over = first_over(data, caps)
        if over is None:
            return None
        violation = Violation(Field(fields[over][0]), f"more than {caps[over]} entries, the limit per request")
        return to_status(RequestError(grpc.StatusCode.INVALID_ARGUMENT, [violation]))

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        fields = _limited_fields(details.method)
        if handler is None or not fields or handler.request_deserializer is None:
            return handler
        parse_message = handler.request_deserializer
        if handler.stream_stream is not None:

            def parse_stream_message(data: bytes) -> Any:
                # A stream's request past a limit is that request's answer, under its id: the
                # stream goes on (gateway.grpc_streams).
                refusal = self._refusal(field_bytes(data, STREAM_REQUEST) or b"", fields)
                if refusal is None:
                    return parse_message(data)
                item_id = (field_bytes(data, STREAM_ID) or b"").decode("utf-8", errors="replace")
                return RefusedItem(item_id, refusal)

            return grpc.stream_stream_rpc_method_handler(
                handler.stream_stream,
                request_deserializer=parse_stream_message,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_unary is None:
            return handler

        def parse(data: bytes) -> Any:
            refusal = self._refusal(data, fields)
            if refusal is not None:
                raise RefusedUnparsed(refusal)
            return parse_message(data)

        return grpc.unary_unary_rpc_method_handler(
            handler.unary_unary, request_deserializer=parse, response_serializer=handler.response_serializer
        )
