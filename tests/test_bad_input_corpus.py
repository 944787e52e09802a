"""Every case of the bad-input corpus (tests/corpus/bad_inputs.py) gets its documented answer,
and a good request right after each succeeds."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from clip_api import clip_service_pb2 as pb
from clip_api import clip_service_pb2_grpc
from tests.corpus.bad_inputs import GOOD, LIMITS, Case, cases
from tests.support import servers
from tests.support.gateway import gateway_config
from tests.support.servers import LauncherTriton

CASES = cases()


@pytest.fixture(scope="module")
def channel(tiny_triton: LauncherTriton) -> Iterator[grpc.Channel]:
    with servers.gateway(gateway_config(tiny_triton.grpc_url, limits=LIMITS)) as gateway:
        options = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]
        with grpc.insecure_channel(gateway.target, options=options) as opened:
            yield opened


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
    unworded = [case.name for case in CASES if case.expected != "OK" and not case.message]
    assert unworded == [], "every refused case states the words its error must contain"


def check_answer(case: Case, code: grpc.StatusCode, details: str, response: Any) -> None:
    """The documented answer: the status code, and for refusals the stated words; for an image
    case that only its own item fails (its neighbour answered)."""
    if case.image is not None and case.scope == "item":
        assert code == grpc.StatusCode.OK, details
        good, bad = response.results
        assert good.status.code == 0 and len(good.labels) == 2
        assert bad.status.code == getattr(grpc.StatusCode, case.expected).value[0], bad.status.message
        if case.expected == "OK":
            assert len(bad.labels) == 2 and abs(sum(label.probability for label in bad.labels) - 1) < 1e-4
        else:
            assert case.message in bad.status.message, bad.status.message
        assert "Traceback" not in bad.status.message
    else:
        assert code.name == case.expected, details
        assert case.message in details, details
        assert "Traceback" not in details


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_case_gets_its_documented_answer(channel: grpc.Channel, case: Case) -> None:
    check_answer(case, *call(channel, case))
    after = clip_service_pb2_grpc.ClipServiceStub(channel).Classify(
        pb.ClassifyRequest(images=[pb.Image(data=GOOD)], labels=["a"]), timeout=60
    )
    assert after.results[0].status.code == 0


def test_the_check_fails_on_wrong_answers() -> None:
    """Self-test: a wrong code, wrong words, or a failed neighbour are each caught."""
    case = Case("PDF", "INVALID_ARGUMENT", b"%PDF", message="PDF is not an accepted")

    def response(neighbour_code: int, message: str) -> Any:
        return pb.ClassifyResponse(
            results=[
                pb.ImageClassification(status={"code": neighbour_code}, labels=[pb.LabelScore(), pb.LabelScore()]),
                pb.ImageClassification(status={"code": 3, "message": message}),
            ]
        )

    check_answer(case, grpc.StatusCode.OK, "", response(0, "PDF is not an accepted image format"))
    for wrong in (
        response(0, "not an image in an accepted format"),  # the wrong reason
        response(3, "PDF is not an accepted image format"),  # the neighbour failed too
    ):
        with pytest.raises(AssertionError):
            check_answer(case, grpc.StatusCode.OK, "", wrong)
    with pytest.raises(AssertionError):  # the whole call failed instead of the item
        check_answer(case, grpc.StatusCode.INVALID_ARGUMENT, "PDF is not an accepted", None)
    request_case = Case("x", "INVALID_ARGUMENT", request={}, message="labels[0]")
    with pytest.raises(AssertionError):
        check_answer(request_case, grpc.StatusCode.INVALID_ARGUMENT, "images: at least one", None)
    with pytest.raises(AssertionError):
        check_answer(request_case, grpc.StatusCode.RESOURCE_EXHAUSTED, "labels[0]: too long", None)
