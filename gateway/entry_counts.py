"""A request's list lengths (images, labels, templates, texts), counted on the wire before protobuf
parses it.

Parsing builds every entry first: a 64 MB message of 10 M empty `Image` entries took 7.7 s of the
event loop and 600 MB before the 32-image limit was even looked at. Here the top-level fields of
the serialized message are walked (each entry is a tag and a length; the payloads are skipped, not
read), and the walk stops at the first entry past its limit, so a refusal costs at most that many
steps and a valid request of 1,000 labels about a millisecond.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import grpc
import grpc.aio

from clip_api import clip_service_pb2 as pb
from gateway.calls import Field
from gateway.config import Limits
from gateway.errors import RequestError, Violation, to_status
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


def first_over(data: bytes, caps: Mapping[int, int]) -> int | None:
    """The number of the first field in `caps` (field number -> most entries) that `data`, a
    serialized message, holds more entries of than allowed; None when none does, or where the bytes
    are no valid message (the parser then says so)."""
    counts = dict.fromkeys(caps, 0)
    position, end = 0, len(data)
    try:
        while position < end:
            key, position = _varint(data, position)
            number, wire_type = key >> 3, key & 7
            if number in counts:
                counts[number] += 1
                if counts[number] > caps[number]:
                    return number
            if wire_type == _VARINT:
                _, position = _varint(data, position)
            elif wire_type == _LENGTH_DELIMITED:
                length, position = _varint(data, position)
                position += length
            elif wire_type == _FIXED64:
                position += 8
            elif wire_type == _FIXED32:
                position += 4
            else:  # groups, or no valid wire type: not ours to judge
                return None
    except IndexError:  # a truncated varint
        return None
    return None


def _limited_fields(method: str) -> dict[int, tuple[str, str]]:
    """field number -> (name, its limit) for the request message of `method` ("/pkg.Service/Name")."""
    service_name, _, method_name = method.lstrip("/").rpartition("/")
    service = pb.DESCRIPTOR.services_by_name.get(service_name.rpartition(".")[2])
    if service is None or service.full_name != service_name or method_name not in service.methods_by_name:
        return {}
    request = service.methods_by_name[method_name].input_type
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

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        fields = _limited_fields(details.method)
        if handler is None or handler.unary_unary is None or not fields or handler.request_deserializer is None:
            return handler
        parse_message = handler.request_deserializer

        def parse(data: bytes) -> Any:
            limits = self._limits()
            caps = {number: cap for number, (_, limit) in fields.items() if (cap := getattr(limits, limit)) is not None}
            over = first_over(data, caps)
            if over is not None:
                name = fields[over][0]
                violation = Violation(Field(name), f"more than {caps[over]} entries, the limit per request")
                raise RefusedUnparsed(to_status(RequestError(grpc.StatusCode.INVALID_ARGUMENT, [violation])))
            return parse_message(data)

        return grpc.unary_unary_rpc_method_handler(
            handler.unary_unary, request_deserializer=parse, response_serializer=handler.response_serializer
        )
