"""Every case of the bad-input corpus (tests/corpus/bad_inputs.py) gets its documented answer,
and a good request right after each succeeds."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from clip_client._generated import clip_service_pb2 as pb
from clip_client._generated import clip_service_pb2_grpc
from launcher.server import TritonServer
from tests.corpus.bad_inputs import GOOD, LIMITS, Case, cases
from tests.support.gateway import GatewayThread, gateway_config

CASES = cases()


@pytest.fixture(scope="module")
def channel(tiny_triton: TritonServer) -> Iterator[grpc.Channel]:
    gateway = GatewayThread(gateway_config(tiny_triton.grpc_url, limits=LIMITS))
    gateway.wait_ready()
    options = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]
    with grpc.insecure_channel(gateway.target, options=options) as opened:
        yield opened
    gateway.stop()


def call(channel: grpc.Channel, case: Case) -> tuple[grpc.StatusCode, str, object]:
    stub = clip_service_pb2_grpc.ClipServiceStub(channel)
    try:
        if case.image is not None:
            request = pb.ClassifyRequest(images=[pb.Image(data=GOOD), pb.Image(data=case.image)], labels=["a", "b"])
            return grpc.StatusCode.OK, "", stub.Classify(request, timeout=60)
        fields = dict(case.request)
        if "raw" in fields:
            # bytes that are no valid message: sent as they are, without our serializer
            return (
                grpc.StatusCode.OK,
                "",
                channel.unary_unary("/clip.v1.ClipService/Classify")(fields["raw"], timeout=30),
            )
        method = fields.pop("method", "Classify")
        images = [pb.Image(data=data) for data in fields.pop("images", [])]
        if method == "Embed":
            return grpc.StatusCode.OK, "", stub.Embed(pb.EmbedRequest(images=images, **fields), timeout=60)
        return grpc.StatusCode.OK, "", stub.Classify(pb.ClassifyRequest(images=images, **fields), timeout=60)
    except grpc.RpcError as error:
        return error.code(), error.details() or "", None


def test_the_corpus_is_large_and_covers_every_answer() -> None:
    assert len(CASES) >= 200
    assert {case.expected for case in CASES} == {"OK", "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_case_gets_its_documented_answer(channel: grpc.Channel, case: Case) -> None:
    code, details, response = call(channel, case)
    if case.image is not None and case.scope == "item":
        assert code == grpc.StatusCode.OK, details
        good, bad = response.results  # type: ignore[attr-defined]
        assert good.status.code == 0 and len(good.labels) == 2
        expected = getattr(grpc.StatusCode, case.expected).value[0]
        assert bad.status.code == expected, bad.status.message
        assert case.message in bad.status.message
        assert "Traceback" not in bad.status.message
    else:
        assert code.name == case.expected, details
        assert case.message in details
        assert "Traceback" not in details
    after = clip_service_pb2_grpc.ClipServiceStub(channel).Classify(
        pb.ClassifyRequest(images=[pb.Image(data=GOOD)], labels=["a"]), timeout=60
    )
    assert after.results[0].status.code == 0
