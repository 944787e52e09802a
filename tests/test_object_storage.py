"""A model repository in object storage, read by Triton itself (`--model-repository s3://...`):
what the Kubernetes kit's object-storage component runs. The S3 server is moto's, on loopback."""

from __future__ import annotations

import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from clip_client import ClipClient
from launcher.server import free_port
from tests.support import servers
from tests.support.gateway import gateway_config
from tests.support.images import photo_pngs
from tests.support.processes import ManagedProcess, wait_for

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    work = tmp_path_factory.mktemp("s3")
    server = ManagedProcess(
        "moto", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], work / "moto.log"
    )
    endpoint = f"127.0.0.1:{port}"

    def answering() -> bool:
        try:
            with urllib.request.urlopen(f"http://{endpoint}/", timeout=2):
                return True
        except OSError:
            return False

    try:
        wait_for(answering, 60, "the S3 server", explain=server.log_tail)
        yield endpoint
    finally:
        server.stop()


def upload(repository: Path, endpoint: str, bucket: str, prefix: str) -> None:
    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://{endpoint}",
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
    )
    s3.create_bucket(Bucket=bucket)
    for path in sorted(repository.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            s3.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(repository)}")


def test_triton_serves_a_repository_from_s3(tiny_repository: Path, s3_endpoint: str, tmp_path: Path) -> None:
    upload(tiny_repository, s3_endpoint, "models", "clip-serve/tiny")
    location = f"s3://{s3_endpoint}/models/clip-serve/tiny"
    with (
        servers.triton(location, tmp_path, env=CREDENTIALS) as triton,
        servers.gateway(gateway_config(triton.grpc_url)) as gateway,
        ClipClient(gateway.target) as client,
    ):
        assert f"serving {location}" in triton.process.log()
        result = client.classify(photo_pngs()[:2], ["cat", "rocket"])
        assert all(item.ok for item in result)
        assert client.model_info().embedding_dimension == 16
