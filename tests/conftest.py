"""Session fixtures: random-weight checkpoints, their exports, and real Triton servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
from PIL import Image

from clip_client import ClipClient
from gateway.config import Limits
from launcher.server import TritonServer
from tests.support import images, triton
from tests.support.gateway import GatewayThread, gateway_config
from tests.support.reference import Reference
from tests.support.web import Canary, ImageWebServer


@pytest.fixture(scope="session")
def tiny_checkpoint() -> Path:
    return triton.checkpoint("tiny")


@pytest.fixture(scope="session")
def tiny_reference(tiny_checkpoint: Path) -> Reference:
    return Reference(tiny_checkpoint)


@pytest.fixture(scope="session")
def tiny_repository() -> Path:
    return triton.exported("tiny")


@pytest.fixture(scope="session")
def tiny_triton(tiny_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    server = triton.start_triton(tiny_repository, tmp_path_factory.mktemp("triton-tiny") / "triton.log")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tiny_client(tiny_triton: TritonServer) -> Iterator[grpcclient.InferenceServerClient]:
    client = grpcclient.InferenceServerClient(tiny_triton.grpc_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def vitb_checkpoint() -> Path:
    return triton.checkpoint("vit-b-16")


@pytest.fixture(scope="session")
def vitb_triton(vitb_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    repository = triton.exported("vit-b-16")
    server = triton.start_triton(repository, tmp_path_factory.mktemp("triton-vitb") / "triton.log")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tiny_gateway(tiny_triton: TritonServer) -> Iterator[GatewayThread]:
    gateway = GatewayThread(gateway_config(tiny_triton.grpc_url))
    gateway.wait_ready()
    yield gateway
    gateway.stop()


@pytest.fixture(scope="session")
def clip_client(tiny_gateway: GatewayThread) -> Iterator[ClipClient]:
    with ClipClient(tiny_gateway.target) as client:
        yield client


URL_API_KEY = "url-test-key"
URL_MAX_IMAGE_BYTES = 1_000_000


@pytest.fixture(scope="session")
def photo_png() -> bytes:
    return images.encode(Image.fromarray(images.photos()["chelsea_451x300"]), "PNG")


@pytest.fixture(scope="session")
def canary() -> Iterator[Canary]:
    listener = Canary()
    yield listener
    listener.close()


@pytest.fixture(scope="session")
def image_web(photo_png: bytes) -> Iterator[ImageWebServer]:
    server = ImageWebServer("127.0.0.2", photo_png, huge_bytes=3 * URL_MAX_IMAGE_BYTES)
    yield server
    server.close()


@pytest.fixture(scope="session")
def url_gateway(tiny_triton: TritonServer) -> Iterator[GatewayThread]:
    """A gateway that fetches image URLs, allows exactly 127.0.0.2 (the test web server; the
    canary is on 127.0.0.1), follows two redirects, has short timeouts, serves HTTP and needs a key."""
    gateway = GatewayThread(
        gateway_config(
            tiny_triton.grpc_url,
            image_urls=True,
            url_allowed_networks="127.0.0.2/32",
            url_max_redirects=2,
            url_connect_timeout=1.0,
            url_read_timeout=1.0,
            url_total_timeout=3.0,
            http_listen="127.0.0.1:0",
            api_keys=URL_API_KEY,
            limits=Limits(max_image_bytes=URL_MAX_IMAGE_BYTES),
        )
    )
    gateway.wait_ready()
    yield gateway
    gateway.stop()
