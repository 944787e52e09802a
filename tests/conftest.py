"""Session fixtures: random-weight checkpoints, their exports, and real Triton servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

from clip_client import ClipClient
from launcher.server import TritonServer
from tests.support import triton
from tests.support.gateway import GatewayThread, gateway_config
from tests.support.reference import Reference


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
