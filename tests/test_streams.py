"""EmbedStream and ClassifyStream, and the client's embed_many and classify_many over them, against
a real gateway and Triton: every request answered by its id as its unary call would be, a request
that fails as a whole answered on its own while the stream goes on, and flow control that keeps a
stream's held bytes inside its window."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from PIL import Image
from prometheus_client import REGISTRY

from clip_api import clip_service_pb2 as pb
from clip_api import clip_service_pb2_grpc
from clip_client import AsyncClipClient, ClipClient, InvalidRequestError
from gateway.config import Limits
from tests.support import servers
from tests.support.gateway import GatewayThread, gateway_config
from tests.support.images import encode
from tests.support.processes import wait_for
from tests.support.servers import LauncherTriton
from tests.test_overload import large_pngs
from tests.test_tenants import client_for, keys_file

NOT_AN_IMAGE = b"not an image at all"


def colour(i: int, side: int = 64) -> bytes:
    return encode(Image.new("RGB", (side, side), ((37 * i) % 256, (91 * i) % 256, (151 * i) % 256)), "PNG")


def embed_stream(channel: grpc.Channel) -> grpc.StreamStreamMultiCallable:
    return channel.stream_stream(
        "/clip.v1.ClipService/EmbedStream",
        request_serializer=pb.EmbedStreamRequest.SerializeToString,
        response_deserializer=pb.EmbedStreamResponse.FromString,
    )


def item(item_id: str, *images: bytes) -> pb.EmbedStreamRequest:
    return pb.EmbedStreamRequest(id=item_id, request=pb.EmbedRequest(images=[pb.Image(data=d) for d in images]))


@pytest.fixture(scope="module")
def stream_gateway(tiny_triton: LauncherTriton) -> Iterator[GatewayThread]:
    config = gateway_config(tiny_triton.grpc_url, stream_window=2, limits=Limits(max_images=4))
    with servers.gateway(config) as gateway:
        yield gateway


def test_every_request_is_answered_by_its_id_as_its_unary_call_is(stream_gateway: GatewayThread) -> None:
    requests = [item(f"r{i}", colour(i), NOT_AN_IMAGE if i % 3 == 0 else colour(i + 100)) for i in range(9)]
    with grpc.insecure_channel(stream_gateway.target) as channel:
        answers = list(embed_stream(channel)(iter(requests), timeout=120))
        stub = clip_service_pb2_grpc.ClipServiceStub(channel)
        unary = {r.id: stub.Embed(r.request, timeout=60) for r in requests}
    assert sorted(a.id for a in answers) == sorted(unary)
    for answer in answers:
        assert answer.status.code == 0
        expected = unary[answer.id]
        assert [e.status.code for e in answer.response.image_embeddings] == [
            e.status.code for e in expected.image_embeddings
        ]
        for got, want in zip(answer.response.image_embeddings, expected.image_embeddings, strict=True):
            np.testing.assert_allclose(got.vector, want.vector, atol=1e-5)
    bad = next(a for a in answers if a.id == "r0").response.image_embeddings[1]
    assert bad.status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]  # the bad image is its own status


def test_a_request_that_fails_as_a_whole_is_its_own_answer_and_the_stream_goes_on(
    stream_gateway: GatewayThread,
) -> None:
    requests = [
        item("too-many", *[colour(1)] * 5),  # past max_images 4: refused from its bytes
        pb.EmbedStreamRequest(id="nothing", request=pb.EmbedRequest()),  # no image and no text
        pb.EmbedStreamRequest(id="encoding", request=pb.EmbedRequest(texts=["a"], encoding=99)),  # type: ignore[arg-type]
        item("fine", colour(2)),
    ]
    with grpc.insecure_channel(stream_gateway.target) as channel:
        answers = {a.id: a for a in embed_stream(channel)(iter(requests), timeout=60)}
    invalid = grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert answers["too-many"].status.code == invalid
    assert "more than 4 entries" in answers["too-many"].status.message
    assert answers["nothing"].status.code == invalid and "at least one image" in answers["nothing"].status.message
    assert (
        answers["encoding"].status.code == invalid
        and "unknown embedding encoding" in answers["encoding"].status.message
    )
    assert answers["fine"].status.code == 0 and len(answers["fine"].response.image_embeddings[0].vector) > 0


@pytest.mark.parametrize(
    ("requests", "message"),
    [
        ([item("", colour(1))], "needs an id"),
        ([item("x" * 129, colour(1))], "more than 128"),
    ],
)
def test_a_request_without_a_usable_id_ends_the_stream(
    stream_gateway: GatewayThread, requests: list[pb.EmbedStreamRequest], message: str
) -> None:
    with grpc.insecure_channel(stream_gateway.target) as channel, pytest.raises(grpc.RpcError) as ended:
        list(embed_stream(channel)(iter(requests), timeout=60))
    assert ended.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (ended.value.details() or "")


def test_an_id_already_in_progress_ends_the_stream(stream_gateway: GatewayThread) -> None:
    release = threading.Event()

    def requests() -> Iterator[pb.EmbedStreamRequest]:
        yield item("same", *[colour(3)] * 4)
        yield item("same", colour(4))
        release.wait(30)

    with grpc.insecure_channel(stream_gateway.target) as channel, pytest.raises(grpc.RpcError) as ended:
        try:
            list(embed_stream(channel)(requests(), timeout=60))
        finally:
            release.set()
    # The first may be answered before the second is read; then the id is free again and both pass.
    assert ended.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "already in progress" in (ended.value.details() or "")


def test_a_stream_without_a_key_is_refused_before_any_request_is_read(
    tiny_triton: LauncherTriton, tmp_path_factory: pytest.TempPathFactory
) -> None:
    config = gateway_config(tiny_triton.grpc_url, api_keys_file=keys_file(tmp_path_factory.mktemp("keys"), "alice"))
    with servers.gateway(config) as gateway, grpc.insecure_channel(gateway.target) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            list(embed_stream(channel)(iter([item("a", colour(1))]), timeout=60))
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with client_for(gateway, "alice") as client:  # with its key, the same stream is answered
            [(index, result)] = list(client.embed_many([colour(1)]))
        assert index == 0 and result.ok


def inflight_bytes() -> float:
    return REGISTRY.get_sample_value("clip_gateway_inflight_bytes") or 0.0


def test_a_slow_reader_holds_the_server_to_its_window(stream_gateway: GatewayThread) -> None:
    """Window 2: however fast the caller writes and however slowly it reads, the gateway holds at
    most two requests' bytes; the rest wait in the caller (gRPC flow control), and all are answered."""
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    heavy = encode(Image.fromarray(noise), "PNG")  # ~197 KB that does not compress
    request_bytes = item("r00", heavy, heavy).ByteSize()
    count = 40
    highest = [0.0]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            highest[0] = max(highest[0], inflight_bytes())
            time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    answered = []
    try:
        with grpc.insecure_channel(stream_gateway.target) as channel:
            for answer in embed_stream(channel)((item(f"r{i:02}", heavy, heavy) for i in range(count)), timeout=300):
                answered.append(answer.id)
                time.sleep(0.1)  # the slow reader
    finally:
        done.set()
        watcher.join()
    assert sorted(answered) == [f"r{i:02}" for i in range(count)]
    assert 0 < highest[0] <= 2 * request_bytes, (highest[0], request_bytes)


def test_embed_many_yields_every_image_once_in_order_as_unary_embed_does(clip_client: ClipClient) -> None:
    images = [colour(i) if i % 7 else NOT_AN_IMAGE for i in range(23)]
    results = list(clip_client.embed_many(images, batch_size=3, window=2))
    assert [index for index, _ in results] == list(range(23))
    unary = clip_client.embed(images=images[:16])
    for index, result in results[:16]:
        if index % 7 == 0:
            assert result.vector is None and isinstance(result.error, InvalidRequestError)
        else:
            assert result.vector is not None
            np.testing.assert_allclose(result.vector, unary.images[index], atol=1e-5)
    unordered = list(clip_client.embed_many(iter(images), batch_size=5, ordered=False))
    assert sorted(index for index, _ in unordered) == list(range(23))


def test_classify_many_ranks_as_classify_does_and_sends_the_labels_once(clip_client: ClipClient) -> None:
    labels = ["red", "green", "blue", "a cat"]
    images = [colour(i) for i in range(10)]
    results = list(clip_client.classify_many(images, labels, top_k=2, batch_size=4))
    unary = clip_client.classify(images, labels, top_k=2)
    assert [index for index, _ in results] == list(range(10))
    for (_, got), want in zip(results, unary, strict=True):
        assert [s.label for s in got.labels] == [s.label for s in want.labels]
        np.testing.assert_allclose([s.probability for s in got.labels], [s.probability for s in want.labels], atol=1e-5)


def test_the_async_client_streams_as_the_sync_one(tiny_gateway: GatewayThread) -> None:
    import asyncio

    images = [colour(i) for i in range(11)]

    async def run() -> list[tuple[int, np.ndarray]]:
        async with AsyncClipClient(tiny_gateway.target) as client:
            out = []
            async for index, result in client.embed_many(images, batch_size=2, window=3):
                assert result.vector is not None
                out.append((index, result.vector))
            async for index, classified in client.classify_many(images[:3], ["red", "blue"]):
                assert classified.ok and index < 3
            return out

    streamed = asyncio.run(run())
    with ClipClient(tiny_gateway.target) as client:
        unary = client.embed(images=images)
    assert [index for index, _ in streamed] == list(range(11))
    for index, vector in streamed:
        np.testing.assert_allclose(vector, unary.images[index], atol=1e-5)


def embed_streams_opened() -> float:
    """EmbedStream calls the in-process gateway has seen end, whatever their code."""
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "clip_gateway_requests"
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels.get("method") == "EmbedStream"
    )


def test_a_stream_cut_by_the_connection_age_is_resent_with_nothing_lost_or_repeated(
    tiny_triton: LauncherTriton,
) -> None:
    """--max-connection-age 1 s (+0.5 s grace) cuts a long stream part way: the client opens a new
    stream and sends again what was out, so every image is yielded once, equal to unary Embed."""
    images = [colour(i) for i in range(600)]  # some seconds of work: longer than the age and its grace
    config = gateway_config(tiny_triton.grpc_url, max_connection_age=1.0, shutdown_grace=0.5)
    with servers.gateway(config) as gateway, ClipClient(gateway.target) as client:
        before = embed_streams_opened()
        started = time.monotonic()
        results = list(client.embed_many(images, batch_size=1, window=2))
        assert [index for index, _ in results] == list(range(600))
        assert all(result.ok for _, result in results)
        expected = client.embed(images=images[:8]).images
        # the cut stream and at least one more (each counted once the server has ended it)
        wait_for(
            lambda: embed_streams_opened() - before >= 2,
            15,
            "the stream resent on a new one",
            explain=lambda: f"{embed_streams_opened() - before} streams, {time.monotonic() - started:.1f} s",
        )
    vectors = [result.vector for _, result in results[:8] if result.vector is not None]
    np.testing.assert_allclose(np.stack(vectors), expected, atol=1e-5)


def test_a_stream_past_its_deadline_stops_being_decoded_in_triton(tiny_triton: LauncherTriton) -> None:
    """A stream's requests carry the stream's time left to Triton as each unary call does
    (parameters.TIME_LEFT_US): past the stream's deadline, preprocessing stops at its next check
    instead of decoding the request's 32 images for nobody. Measured as test_overload measures a
    unary call: how long Triton goes on after the deadline, against the time 4 of the images take."""
    request_images = large_pngs(32)
    config = gateway_config(tiny_triton.grpc_url, stream_window=1)
    tiny_triton.wait_idle(timeout=300)
    with servers.gateway(config) as gateway, grpc.insecure_channel(gateway.target) as channel:
        stream = embed_stream(channel)
        with pytest.raises(grpc.RpcError) as ended:
            list(stream(iter([item("big", *request_images), item("next", *request_images)]), timeout=1.0))
        assert ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        started = time.monotonic()
        tiny_triton.wait_idle(timeout=300, quiet=0.5)
        went_on = time.monotonic() - started
        started = time.monotonic()
        (answer,) = list(stream(iter([item("four", *request_images[:4])]), timeout=120))
        four = time.monotonic() - started
    assert answer.status.code == 0
    print(f"stream request of 32 x 12-Mpx PNGs, 1 s deadline: Triton went on {went_on:.1f} s; 4 take {four:.1f} s")
    assert went_on < 4 * four, f"Triton went on for {went_on:.1f} s after the deadline; 4 images take {four:.1f} s"
