"""Per-item errors, every validation limit at and just past its edge, and error hygiene."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from PIL import Image

from clip_api import clip_service_pb2 as pb
from clip_api import clip_service_pb2_grpc
from clip_client import (
    NO_RETRY,
    ClientConfig,
    ClipClient,
    InvalidRequestError,
    RequestTooLargeError,
)
from gateway.config import Limits
from tests.support import images, servers
from tests.support.gateway import GatewayThread, gateway_config
from tests.support.images import photo_pngs
from tests.support.servers import LauncherTriton

PHOTO = photo_pngs()[0]
CORRUPT = PHOTO[: len(PHOTO) // 3]
SMALL = Limits(
    max_images=3,
    max_labels=4,
    max_texts=3,
    max_templates=2,
    max_prompts=6,
    max_label_chars=20,
    max_image_bytes=len(PHOTO) + 10,
    max_image_pixels=512 * 512,
    max_request_bytes=6 * len(PHOTO),
)


@pytest.fixture(scope="module")
def small_gateway(tiny_triton: LauncherTriton) -> Iterator[GatewayThread]:
    with servers.gateway(gateway_config(tiny_triton.grpc_url, limits=SMALL)) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def small(small_gateway: GatewayThread) -> Iterator[ClipClient]:
    with ClipClient(config=ClientConfig(target=small_gateway.target, retry=NO_RETRY)) as client:
        yield client


def test_one_corrupt_image_does_not_fail_its_neighbours(clip_client: ClipClient) -> None:
    batch = [PHOTO, CORRUPT, photo_pngs()[1], b"", b"%PDF-1.4"]
    result = clip_client.classify(batch, ["cat", "dog"])
    assert [item.ok for item in result] == [True, False, True, False, False]
    assert "corrupt or truncated PNG" in str(result[1].error)
    assert "empty image" in str(result[3].error)
    assert "PDF is not an accepted image format" in str(result[4].error)
    assert isinstance(result[1].error, InvalidRequestError) and result[1].labels == ()
    alone = clip_client.classify([photo_pngs()[1]], ["cat", "dog"])
    assert [s.index for s in result[2].labels] == [s.index for s in alone[0].labels]
    assert result[2].labels[0].score == pytest.approx(alone[0].labels[0].score, abs=1e-3)
    embedded = clip_client.embed(batch)
    assert sorted(embedded.image_errors) == [1, 3, 4]
    assert np.isnan(embedded.images[1]).all() and not np.isnan(embedded.images[2]).any()
    similarity = clip_client.similarity(batch, ["a cat"])
    assert sorted(similarity.image_errors) == [1, 3, 4]
    with pytest.raises(InvalidRequestError, match="corrupt"):
        _ = result[1].top


def test_all_images_bad_still_answers_each(clip_client: ClipClient) -> None:
    result = clip_client.classify([CORRUPT, b"junk"], ["cat"])
    assert [item.ok for item in result] == [False, False]


def violation_fields(error: pytest.ExceptionInfo[InvalidRequestError]) -> list[str]:
    return [v.field for v in error.value.field_violations]


@pytest.mark.parametrize(
    ("call", "code", "fields"),
    [
        (lambda c: c.classify([PHOTO] * 4, ["a"]), grpc.StatusCode.INVALID_ARGUMENT, ["images"]),
        (lambda c: c.classify([], ["a"]), grpc.StatusCode.INVALID_ARGUMENT, ["images"]),
        (lambda c: c.classify([PHOTO], ["a"] * 5), grpc.StatusCode.INVALID_ARGUMENT, ["labels"]),
        (lambda c: c.classify([PHOTO], []), grpc.StatusCode.INVALID_ARGUMENT, ["labels"]),
        (lambda c: c.classify([PHOTO], ["a", "x" * 21]), grpc.StatusCode.INVALID_ARGUMENT, ["labels[1]"]),
        (
            lambda c: c.classify([PHOTO], ["  ", "ok", "\x00bad"]),
            grpc.StatusCode.INVALID_ARGUMENT,
            ["labels[0]", "labels[2]"],
        ),
        (
            lambda c: c.classify([PHOTO], ["a"], templates=["{}", "b {}", "c {}"]),
            grpc.StatusCode.INVALID_ARGUMENT,
            ["prompt_templates"],
        ),
        (
            lambda c: c.classify([PHOTO], ["a"], templates=["no slot", "{} {}"]),
            grpc.StatusCode.INVALID_ARGUMENT,
            ["prompt_templates[0]", "prompt_templates[1]"],
        ),
        (
            lambda c: c.classify([PHOTO], ["a", "b", "c", "d"], templates=["{}", "b {}"]),
            grpc.StatusCode.INVALID_ARGUMENT,
            ["prompt_templates"],
        ),
        (lambda c: c.classify([PHOTO], ["a", "b"], top_k=3), grpc.StatusCode.INVALID_ARGUMENT, ["top_k"]),
        (lambda c: c.classify([PHOTO + bytes(11)], ["a"]), grpc.StatusCode.RESOURCE_EXHAUSTED, ["images[0].data"]),
        (
            lambda c: c.classify([images.encode(Image.new("L", (513, 512)), "PNG")], ["a"]),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            ["images[0].data"],
        ),
        (lambda c: c.embed(texts=["a"] * 4), grpc.StatusCode.INVALID_ARGUMENT, ["texts"]),
        (lambda c: c.embed(texts=["x" * 21]), grpc.StatusCode.INVALID_ARGUMENT, ["texts[0]"]),
        (lambda c: c.embed(), grpc.StatusCode.INVALID_ARGUMENT, ["images"]),
        (lambda c: c.similarity([PHOTO], ["a"] * 5), grpc.StatusCode.INVALID_ARGUMENT, ["texts"]),
    ],
)
def test_limits_just_over_are_refused_naming_the_field(small: ClipClient, call, code, fields) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidRequestError) as caught:
        call(small)
    assert caught.value.code == code
    assert violation_fields(caught) == fields
    assert "Traceback" not in caught.value.details


def test_limits_exactly_at_the_edge_pass(small: ClipClient) -> None:
    edge_image = images.encode(Image.new("L", (512, 512)), "PNG")
    result = small.classify([PHOTO, PHOTO, edge_image], ["a", "b", "x" * 20, "d"], templates=["{}"], top_k=4)
    assert all(item.ok for item in result) and len(result[0].labels) == 4
    assert small.classify([PHOTO], ["a", "b", "c"], templates=["{}", "b {}"]).results[0].ok  # 6 prompts
    assert small.embed([PHOTO + b""], ["a", "b", "x" * 20]).texts.shape == (3, 16)
    padded = PHOTO + bytes(10)  # exactly max_image_bytes; trailing bytes after IEND are ignored by PNG
    assert small.embed([padded]).images.shape == (1, 16)


def test_request_over_the_byte_limit_is_resource_exhausted(small: ClipClient) -> None:
    with pytest.raises(RequestTooLargeError):
        small.embed([PHOTO] * 7)  # also over max_images, but the transport limit speaks first
    assert small.embed([PHOTO]).images.shape == (1, 16)


def test_raw_stub_gets_rich_error_details(small_gateway: GatewayThread) -> None:
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    with grpc.insecure_channel(small_gateway.target) as channel:
        stub = clip_service_pb2_grpc.ClipServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Classify(pb.ClassifyRequest(images=[pb.Image(data=PHOTO)], labels=["x" * 30]))
    status = rpc_status.from_call(caught.value)
    assert status is not None and status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    assert bad_request.field_violations[0].field == "labels[0]"


def test_request_id_is_returned_and_kept(tiny_gateway: GatewayThread) -> None:
    with grpc.insecure_channel(tiny_gateway.target) as channel:
        stub = clip_service_pb2_grpc.ClipServiceStub(channel)
        _, call = stub.GetModelInfo.with_call(pb.GetModelInfoRequest(), metadata=(("x-request-id", "abc-123"),))
        assert ("x-request-id", "abc-123") in call.initial_metadata()
        _, call = stub.GetModelInfo.with_call(pb.GetModelInfoRequest())
        generated = dict(call.initial_metadata())["x-request-id"]
        assert len(generated) == 16
