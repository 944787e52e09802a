"""Embedding encodings (clip_contract.encodings): each one's error against float32, measured on
random unit vectors and on what a real gateway returns over gRPC and over its HTTP API."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from clip_api import clip_service_pb2 as pb
from clip_api import clip_service_pb2_grpc
from clip_client import NO_RETRY, ClientConfig, ClipClient
from clip_contract import encodings
from tests.conftest import URL_API_KEY
from tests.support.gateway import GatewayThread
from tests.test_http_api import http

DIMENSION = 512
HALF_STEP = 2.0**-11  # float16 keeps 11 significant bits: relative error at most half a step of 2^-10
SUBNORMAL_HALF_STEP = 2.0**-25  # below 2^-14 float16 is subnormal: absolute steps of 2^-24


def float16_bound(values: np.ndarray) -> np.ndarray:  # type: ignore[type-arg]
    return np.maximum(HALF_STEP * np.abs(values), SUBNORMAL_HALF_STEP)


def unit_vectors(count: int, seed: int = 0) -> np.ndarray:  # type: ignore[type-arg]
    vectors = np.random.default_rng(seed).standard_normal((count, DIMENSION)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def decoded(vectors: np.ndarray, encoding: encodings.Encoding) -> np.ndarray:  # type: ignore[type-arg]
    data, scales = encodings.encode(vectors, encoding)
    return np.stack(
        [encodings.decode(row, encoding, DIMENSION, scale) for row, scale in zip(data, scales, strict=True)]
    )


def test_float16_is_within_half_a_step_of_each_value() -> None:
    vectors = unit_vectors(200)
    error = np.abs(decoded(vectors, encodings.FLOAT16) - vectors)
    assert (error <= float16_bound(vectors)).all()
    assert len(encodings.encode(vectors[:1], encodings.FLOAT16)[0][0]) == 2 * DIMENSION


def test_int8_is_within_half_a_scale_of_each_value_and_keeps_the_cosine() -> None:
    vectors = unit_vectors(200)
    data, scales = encodings.encode(vectors, encodings.INT8)
    assert len(data[0]) == DIMENSION
    assert np.allclose(scales, np.abs(vectors).max(axis=1) / 127)
    back = decoded(vectors, encodings.INT8)
    assert (np.abs(back - vectors) <= scales[:, None] / 2 + 1e-7).all()
    cosine = (back * vectors).sum(axis=1) / np.linalg.norm(back, axis=1)
    assert cosine.min() > 0.9999, cosine.min()  # measured: min 0.99995, mean 0.99997 over these 200


def test_binary_is_the_sign_bits_and_its_hamming_distance_tracks_the_angle() -> None:
    vectors = unit_vectors(200)
    data, _ = encodings.encode(vectors, encodings.BINARY)
    assert len(data[0]) == DIMENSION // 8
    bits = np.unpackbits(np.frombuffer(b"".join(data), dtype=np.uint8).reshape(200, -1), axis=1)
    assert (bits == (vectors > 0)).all()
    assert np.allclose(np.linalg.norm(decoded(vectors, encodings.BINARY), axis=1), 1.0)
    # Random hyperplanes: the share of differing bits estimates angle / pi (within a few % at 512 bits).
    first, second = vectors[:100], vectors[100:]
    angle = np.arccos(np.clip((first * second).sum(axis=1), -1, 1)) / np.pi
    differing = (bits[:100] != bits[100:]).mean(axis=1)
    assert np.abs(differing - angle).max() < 0.08


def test_a_vector_of_the_wrong_length_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="int8 data of 3 bytes, expected 512"):
        encodings.decode(b"abc", encodings.INT8, DIMENSION)


@pytest.fixture(scope="module")
def keyed_client(url_gateway: GatewayThread) -> Iterator[ClipClient]:
    with ClipClient(config=ClientConfig(target=url_gateway.target, api_key=URL_API_KEY, retry=NO_RETRY)) as client:
        yield client


@pytest.mark.parametrize("name", ["float16", "int8", "binary"])
def test_the_gateway_sends_each_encoding_over_grpc_within_its_error(
    keyed_client: ClipClient, photo_png: bytes, name: str
) -> None:
    encoding = encodings.BY_NAME[name]
    exact = keyed_client.embed([photo_png, b"not an image"], ["a cat", "a dog"])
    found = keyed_client.embed([photo_png, b"not an image"], ["a cat", "a dog"], encoding=name)
    assert found.encoding == name and found.dimension == exact.dimension
    assert set(found.image_errors) == {1} and np.isnan(found.images[1]).all() and not found.image_codes[1].any()
    wanted = np.stack([exact.images[0], *exact.texts])
    got = np.stack([found.images[0], *found.texts])
    codes = np.stack([found.image_codes[0], *found.text_codes])
    if encoding is encodings.FLOAT16:
        assert codes.dtype == np.float16 and (np.abs(got - wanted) <= float16_bound(wanted)).all()
    elif encoding is encodings.INT8:
        scales = np.array([found.image_scales[0], *found.text_scales])
        assert codes.dtype == np.int8 and np.allclose(scales, np.abs(wanted).max(axis=1) / 127)
        assert (np.abs(got - wanted) <= scales[:, None] / 2 + 1e-7).all()
    else:
        assert codes.shape[1] == exact.dimension // 8
        assert (np.unpackbits(codes, axis=1) == (wanted > 0)).all()


def test_an_unknown_encoding_is_refused_before_any_work(url_gateway: GatewayThread, photo_png: bytes) -> None:
    with grpc.insecure_channel(url_gateway.target) as channel:
        stub = clip_service_pb2_grpc.ClipServiceStub(channel)
        request = pb.EmbedRequest(texts=["a cat"], encoding=9)  # type: ignore[arg-type]
        with pytest.raises(grpc.RpcError) as refused:
            stub.Embed(request, metadata=(("authorization", f"Bearer {URL_API_KEY}"),), timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown embedding encoding 9" in (refused.value.details() or "")


@pytest.mark.parametrize("name", ["float16", "int8", "binary"])
def test_the_http_api_sends_each_encoding_as_base64_within_its_error(url_gateway: GatewayThread, name: str) -> None:
    encoding = encodings.BY_NAME[name]
    status, _, models = http(url_gateway.http_base, "GET", "/v1/models")
    body = {"model": models["data"][0]["id"], "input": ["a cat", "a dog"]}
    status, _, exact = http(url_gateway.http_base, "POST", "/v1/embeddings", body)
    assert status == 200, exact
    status, _, found = http(url_gateway.http_base, "POST", "/v1/embeddings", {**body, "encoding_format": name})
    assert status == 200, found
    for wanted_item, item in zip(exact["data"], found["data"], strict=True):
        wanted = np.asarray(wanted_item["embedding"], dtype=np.float32)
        assert "scale" not in wanted_item and ("scale" in item) == (encoding is encodings.INT8)
        data = base64.b64decode(item["embedding"])
        got = encodings.decode(data, encoding, len(wanted), item.get("scale", 1.0))
        if encoding is encodings.FLOAT16:
            assert (np.abs(got - wanted) <= float16_bound(wanted)).all()
        elif encoding is encodings.INT8:
            assert (np.abs(got - wanted) <= item["scale"] / 2 + 1e-7).all()
        else:
            assert (np.unpackbits(np.frombuffer(data, dtype=np.uint8)) == (wanted > 0)).all()
