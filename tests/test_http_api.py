"""The OpenAI-compatible HTTP API against the real gateway and Triton: the official `openai`
package as the client, and plain HTTP (urllib) for what that package cannot send."""

from __future__ import annotations

import base64
import contextlib
import json
import select
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import openai
import pytest

from clip_client import ClientConfig, ClipClient
from tests.conftest import URL_API_KEY
from tests.support.gateway import GatewayThread
from tests.support.processes import wait_for
from tests.support.reference import Reference
from tests.support.web import Canary, ImageWebServer
from tests.test_model_parity import EMBED_TOLERANCE

TEXTS = ["a photo of a cat", "a drawing of a dog", "ünïcödé 🐈"]
LABELS = ["cat", "dog", "car"]


@pytest.fixture(scope="module")
def base_url(url_gateway: GatewayThread) -> str:
    assert url_gateway.gateway.http is not None
    return f"http://127.0.0.1:{url_gateway.gateway.http.port}"


@pytest.fixture(scope="module")
def oai(base_url: str) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=URL_API_KEY, max_retries=0, timeout=60)
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc_client(url_gateway: GatewayThread) -> Iterator[ClipClient]:
    with ClipClient(config=ClientConfig(target=url_gateway.target, api_key=URL_API_KEY)) as client:
        yield client


@pytest.fixture(scope="module")
def model_id(oai: openai.OpenAI) -> str:
    return oai.models.list().data[0].id


def http(
    base_url: str,
    method: str,
    path: str,
    body: Any = None,
    *,
    key: str | None = URL_API_KEY,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> tuple[int, dict[str, str], Any]:
    """(status, headers, parsed JSON) of one plain HTTP request."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(base_url + path, data=data, method=method)
    if data is not None and raw is None:
        request.add_header("Content-Type", "application/json")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def test_models_list_and_retrieve(oai: openai.OpenAI, grpc_client: ClipClient) -> None:
    models = oai.models.list().data
    assert [m.id for m in models] == [grpc_client.model_info().model_id]
    assert oai.models.retrieve(models[0].id).id == models[0].id == "tiny"  # a local folder's name, not its path
    assert oai.embeddings.create(model="tiny", input="x").model == "tiny"
    with pytest.raises(openai.NotFoundError):
        oai.models.retrieve("gpt-4o")


def test_text_embeddings_with_the_openai_package_match_the_reference(
    oai: openai.OpenAI, model_id: str, tiny_reference: Reference
) -> None:
    # The openai package asks for base64 unless told otherwise and decodes it itself.
    response = oai.embeddings.create(model=model_id, input=TEXTS)
    vectors = np.array([item.embedding for item in response.data], dtype=np.float32)
    assert [item.index for item in response.data] == [0, 1, 2]
    assert np.abs(vectors - tiny_reference.text_embeds(TEXTS)).max() <= EMBED_TOLERANCE
    as_floats = oai.embeddings.create(model=model_id, input=TEXTS, encoding_format="float")
    assert np.array([item.embedding for item in as_floats.data]) == pytest.approx(vectors, abs=1e-7)
    assert response.model == model_id and response.object == "list"


def test_usage_counts_clip_tokens(oai: openai.OpenAI, model_id: str) -> None:
    # "a photo of a cat" -> [49406, 320, 1125, 539, 320, 2368, 49407]
    response = oai.embeddings.create(model=model_id, input="a photo of a cat")
    assert response.usage.prompt_tokens == 7 and response.usage.total_tokens == 7
    long = oai.embeddings.create(model=model_id, input="word " * 200)
    assert long.usage.prompt_tokens == 77  # truncated to the context length


def test_image_embeddings_by_data_uri_and_by_url(
    oai: openai.OpenAI, model_id: str, grpc_client: ClipClient, image_web: ImageWebServer, photo_png: bytes
) -> None:
    expected = grpc_client.embed(images=[photo_png]).images[0]
    # NV-CLIP convention: data URIs are images, other strings texts, in one list.
    mixed = oai.embeddings.create(model=model_id, input=["a photo of a cat", data_uri(photo_png)])
    assert np.abs(np.array(mixed.data[1].embedding) - expected).max() <= 1e-6
    assert (
        np.abs(np.array(mixed.data[0].embedding) - grpc_client.embed(texts=["a photo of a cat"]).texts[0]).max() <= 1e-6
    )
    assert mixed.usage.prompt_tokens == 7  # images are not billed as tokens
    # infinity convention: modality "image", URLs or data URIs.
    by_url = oai.embeddings.create(
        model=model_id, input=[image_web.url("/photo.png")], extra_body={"modality": "image"}
    )
    assert np.abs(np.array(by_url.data[0].embedding) - expected).max() <= 1e-6


def post_multipart(base_url: str, parts: list[tuple[bytes, bytes]]) -> tuple[int, dict[str, str], Any]:
    """POST /v1/classifications as multipart/form-data; parts are (Content-Disposition tail, value)."""
    boundary = uuid.uuid4().hex.encode()
    body = b"".join(
        b"--" + boundary + b"\r\nContent-Disposition: form-data; " + head + b"\r\n\r\n" + value + b"\r\n"
        for head, value in parts
    )
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary.decode()}"}
    return http(base_url, "POST", "/v1/classifications", raw=body + b"--" + boundary + b"--\r\n", headers=headers)


def test_bad_multipart_requests_name_the_field(base_url: str, photo_png: bytes) -> None:
    image = (b'name="image"; filename="cat.png"\r\nContent-Type: image/png', photo_png)
    status, _, answer = post_multipart(base_url, [(b'name="labels"', b"cat")])
    assert status == 400 and answer["error"]["param"] == "image"
    status, _, answer = post_multipart(base_url, [image, (b'name="labels"', b"cat"), (b'name="top_k"', b"many")])
    assert status == 400 and answer["error"]["param"] == "top_k"
    status, _, answer = post_multipart(base_url, [image, (b'name="labels"; filename="x"', b"cat")])
    assert status == 400 and answer["error"]["param"].startswith("labels")
    status, _, answer = post_multipart(
        base_url, [(b'name="image"; filename="x.png"', b"not a picture"), (b'name="labels"', b"cat")]
    )
    assert status == 400 and answer["error"]["param"] == "image[0]"


def test_classification_json_and_multipart_agree_with_grpc(
    base_url: str, grpc_client: ClipClient, image_web: ImageWebServer, photo_png: bytes
) -> None:
    expected = grpc_client.classify([photo_png], LABELS)[0].labels
    by_uri = http(base_url, "POST", "/v1/classifications", {"image": data_uri(photo_png), "labels": LABELS})
    by_url = http(base_url, "POST", "/v1/classifications", {"image": [image_web.url("/photo.png")], "labels": LABELS})
    parts = [(b'name="image"; filename="cat.png"\r\nContent-Type: image/png', photo_png)]
    by_upload = post_multipart(base_url, parts + [(b'name="labels"', label.encode()) for label in LABELS])
    for status, _, answer in (by_uri, by_url, by_upload):
        assert status == 200, answer
        ranked = answer["data"][0]["labels"]
        assert [item["label"] for item in ranked] == [s.label for s in expected]
        assert [item["score"] for item in ranked] == pytest.approx([s.score for s in expected], abs=1e-4)
        assert sum(item["probability"] for item in ranked) == pytest.approx(1.0, abs=1e-5)


def test_classification_top_k_and_templates(base_url: str, photo_png: bytes) -> None:
    status, _, answer = http(
        base_url,
        "POST",
        "/v1/classifications",
        {"image": data_uri(photo_png), "labels": LABELS, "templates": ["a drawing of a {}."], "top_k": 2},
    )
    assert status == 200 and len(answer["data"][0]["labels"]) == 2


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        ({"input": ""}, "input[0]", "empty"),
        ({"input": []}, "input", "input is empty"),
        ({"input": [[1, 2, 3]]}, "input", "token arrays"),
        ({"input": "x", "dimensions": 64}, "dimensions", "it does not shorten them"),
        ({"input": "x", "encoding_format": "uint4"}, "encoding_format", ""),
        ({"input": ["ok", "data:image/png;base64,%%%"]}, "input[1]", "does not decode"),
        ({"input": ["data:image/png;base64,aGVsbG8="]}, "input[0]", ""),  # base64 of "hello": not an image
        ({"input": ["data:text/plain;base64,aGVsbG8="], "modality": "image"}, "input[0]", "not an image"),
        ({"input": ["http://127.0.0.1/cat.png"], "modality": "image"}, "input[0]", "loopback"),
        ({"input": ["file:///etc/passwd"], "modality": "image"}, "input[0]", "scheme file:"),
        ({"input": "x", "surprise": 1}, "surprise", ""),
        ({"input": ["ok", "half a pair \ud800"]}, "input[1]", "not valid Unicode"),  # JSON may escape one
    ],
)
def test_bad_embeddings_requests_get_openai_errors(
    base_url: str, model_id: str, body: dict[str, Any], param: str, fragment: str, canary: Canary
) -> None:
    status, _, answer = http(base_url, "POST", "/v1/embeddings", {"model": model_id, **body})
    assert status == 400, answer
    assert answer["error"]["type"] == "invalid_request_error"
    assert answer["error"]["param"] == param
    assert fragment in answer["error"]["message"]
    assert canary.connections == []


def test_errors_through_the_openai_package(oai: openai.OpenAI, model_id: str, base_url: str) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        oai.embeddings.create(model="text-embedding-3-small", input="x")
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        oai.embeddings.create(model=model_id, input="x\x00y")
    wrong_key = openai.OpenAI(base_url=f"{base_url}/v1", api_key="not-the-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong_key.embeddings.create(model=model_id, input="x")


def test_http_errors_have_openai_shape_and_status(base_url: str, photo_png: bytes) -> None:
    assert http(base_url, "GET", "/v1/models", key=None)[0] == 401
    assert http(base_url, "GET", "/v1/nope")[0] == 404
    status, _, answer = http(
        base_url, "POST", "/v1/embeddings", raw=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert status == 400 and "not valid JSON" in answer["error"]["message"]
    status, _, answer = http(base_url, "POST", "/v1/classifications", {"image": data_uri(photo_png), "labels": []})
    assert status == 400 and answer["error"]["param"] == "labels"
    status, _, answer = http(  # half a surrogate pair: JSON can escape one, no UTF-8 text can hold it
        base_url, "POST", "/v1/classifications", {"image": data_uri(photo_png), "labels": ["cat", "\udc00"]}
    )
    assert status == 400 and answer["error"]["param"] == "labels[1]", answer
    assert "not valid Unicode" in answer["error"]["message"]
    status, _, answer = http(
        base_url, "POST", "/v1/classifications", {"image": data_uri(photo_png), "labels": ["a"], "top_k": 5}
    )
    assert status == 400 and answer["error"]["param"] == "top_k"
    status, _, answer = http(
        base_url, "POST", "/v1/classifications", {"image": ["http://10.0.0.1/a.png"], "labels": ["a"]}
    )
    assert status == 400 and answer["error"]["param"] == "image[0]" and "private" in answer["error"]["message"]
    for path in ("/v1/classifications", "/v1/embeddings"):
        status, _, answer = http(base_url, "POST", path, raw=b"x", headers={"Content-Type": "text/plain"})
        assert status == 415 and answer["error"]["code"] == "unsupported_media_type", path
    for _status, _, answer in [
        http(base_url, "GET", "/v1/models", key=None),
        http(base_url, "GET", "/v1/nope"),
    ]:
        assert set(answer) == {"error"} and {"message", "type", "param", "code"} <= set(answer["error"])


def raw_exchange(base_url: str, head: str, body_chunks: Iterator[bytes]) -> bytes:
    """Send a request head, then body chunks until the server answers or stops reading; the
    answer's bytes."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        conn.sendall(head.encode())
        for chunk in body_chunks:
            if select.select([conn], [], [], 0)[0]:
                break  # the server has answered
            try:
                conn.sendall(chunk)
            except OSError:  # it closed the connection, or stopped reading (timeout)
                break
        answer = b""
        with contextlib.suppress(OSError):
            while not answer.rstrip().endswith(b"}"):
                more = conn.recv(65536)
                if not more:
                    break
                answer += more
        return answer


def test_a_declared_oversized_body_is_refused_before_it_is_read(base_url: str, url_gateway: GatewayThread) -> None:
    limit = url_gateway.gateway.config.limits.max_request_bytes
    head = (
        f"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {URL_API_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {limit + 1}\r\n\r\n"
    )
    answer = raw_exchange(base_url, head, iter([b"x" * 1024] * 4))  # 4 KiB of the promised 64 MiB
    assert answer.startswith(b"HTTP/1.1 413") and b"request_too_large" in answer


def test_a_chunked_body_is_cut_off_at_the_limit(base_url: str, url_gateway: GatewayThread) -> None:
    limit = url_gateway.gateway.config.limits.max_request_bytes
    head = (
        f"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {URL_API_KEY}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    piece = b"x" * (1 << 20)
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    answer = raw_exchange(base_url, head, iter([chunk] * (limit // len(piece) + 8)))
    assert answer.startswith(b"HTTP/1.1 413") and b"request_too_large" in answer


HOSTILE_ENTRIES = 6_000_000  # 18 MB of `[],` or `"",`: millions of values in a body under the size cap


@pytest.mark.parametrize(
    ("path", "field", "entry"),
    [("/v1/embeddings", "input", b"[]"), ("/v1/classifications", "labels", b'""')],
    ids=["embeddings input of empty lists", "classification labels of empty strings"],
)
def test_a_body_of_millions_of_values_is_refused_while_health_answers(
    base_url: str, path: str, field: str, entry: bytes
) -> None:
    """Counted as they are parsed, off the event loop: refused after the first few thousand, and
    health answers all the while. Before: a 20 MB `[[],[],...]` froze the loop for 81 s."""
    prefix = b'{"model": "m", "image": "data:image/png;base64,AA==", ' if "class" in path else b'{"model": "m", '
    body = prefix + f'"{field}": ['.encode() + b",".join([entry] * HOSTILE_ENTRIES) + b"]}"
    answered: list[tuple[int, Any]] = []
    health_seconds: list[float] = []

    def post() -> None:
        status, _, error = http(base_url, "POST", path, raw=body, headers={"Content-Type": "application/json"})
        answered.append((status, error))

    sender = threading.Thread(target=post)
    started = time.monotonic()
    sender.start()
    while sender.is_alive() and time.monotonic() - started < 60:
        asked = time.monotonic()
        assert http(base_url, "GET", "/v1/health/live", key=None)[0] == 200
        health_seconds.append(time.monotonic() - asked)
    sender.join(60)
    took = time.monotonic() - started
    print(
        f"{len(body) / 1e6:.0f} MB of {HOSTILE_ENTRIES:,} values to {path}: refused in {took:.2f}s, "
        f"health answered {len(health_seconds)} times meanwhile, slowest {max(health_seconds, default=0):.3f}s"
    )
    assert answered, f"{path} did not answer a body of {HOSTILE_ENTRIES:,} values within 60 s"
    status, error = answered[0]
    assert status == 400 and error["error"]["code"] == "too_many_values", (status, error)
    assert max(health_seconds, default=0) < 5


def test_health_is_open_and_follows_readiness(base_url: str) -> None:
    assert http(base_url, "GET", "/v1/health/ready", key=None)[:3:2] == (200, {"status": "ready"})
    assert http(base_url, "GET", "/v1/health/live", key=None)[0] == 200


def test_request_ids_are_returned(base_url: str) -> None:
    _, headers, _ = http(base_url, "GET", "/v1/models", headers={"X-Request-Id": "abc-123"})
    assert headers.get("x-request-id") == "abc-123"


def test_the_openapi_document_describes_every_route(base_url: str) -> None:
    status, _, document = http(base_url, "GET", "/openapi.json", key=None)
    assert status == 200 and document["openapi"].startswith("3.")
    assert {"/v1/embeddings", "/v1/classifications", "/v1/models", "/v1/models/{model_id}"} <= set(document["paths"])
    classify = document["paths"]["/v1/classifications"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(classify)
    embeddings = document["components"]["schemas"]["EmbeddingsRequest"]["properties"]
    assert {"model", "input", "encoding_format", "dimensions", "user", "modality"} <= set(embeddings)
    assert "400" in document["paths"]["/v1/embeddings"]["post"]["responses"]


def undescribed_fields(document: dict[str, Any]) -> list[str]:
    """Every property of every schema that has no description (a $ref alone counts as none)."""
    return [
        f"{name}.{field}"
        for name, schema in document["components"]["schemas"].items()
        for field, spec in schema.get("properties", {}).items()
        if not spec.get("description")
    ]


def test_the_openapi_document_describes_every_field_and_only_real_answers(base_url: str) -> None:
    _, _, document = http(base_url, "GET", "/openapi.json", key=None)
    assert undescribed_fields(document) == []
    statuses = {
        status for path in document["paths"].values() for op in path.values() for status in op.get("responses", {})
    }
    assert "422" not in statuses  # validation errors are 400s in OpenAI's shape
    assert statuses <= {"200", "400", "401", "404", "413", "415", "429", "503", "504"}
    assert http(base_url, "GET", "/docs")[0] == 404  # no viewer that needs a CDN
    bad = {"components": {"schemas": {"X": {"properties": {"a": {"type": "string"}, "b": {"description": "b"}}}}}}
    assert undescribed_fields(bad) == ["X.a"]  # the check can fail


def test_http_requests_are_counted(base_url: str) -> None:
    from prometheus_client import REGISTRY

    def count() -> float:
        return (
            REGISTRY.get_sample_value("clip_gateway_http_requests_total", {"route": "/v1/models", "status": "200"})
            or 0.0
        )

    before = count()
    http(base_url, "GET", "/v1/models")
    # The guard counts a request once its response is sent: the caller may read it a moment before.
    wait_for(lambda: count() >= before + 1, 10, "the /v1/models request being counted")
    assert count() == before + 1


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/classifications", {"labels": ["a"], "top_k": 2**40}, "top_k"),
        ("/v1/classifications", {"labels": ["a"], "top_k": -1}, "top_k"),
        ("/v1/embeddings", {"input": "a", "dimensions": 2**40}, "dimensions"),
        ("/v1/embeddings", {"input": "a", "dimensions": 0}, "dimensions"),
    ],
)
def test_every_number_has_an_upper_bound(base_url: str, photo_png: bytes, path: str, body: dict, param: str) -> None:  # type: ignore[type-arg]
    body = {"image": data_uri(photo_png), **body} if path == "/v1/classifications" else {"model": "tiny", **body}
    status, _headers, answer = http(base_url, "POST", path, body)
    assert status == 400, answer  # not a 500, nor a plain-text error
    assert answer["error"]["param"] == param
