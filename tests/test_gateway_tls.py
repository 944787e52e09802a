"""Optional TLS: with a certificate and key the gateway speaks TLS only."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from clip_client import NO_RETRY, ClientConfig, ClipClient, UnavailableError
from tests.support import servers
from tests.support.gateway import gateway_config
from tests.support.images import photo_pngs
from tests.support.servers import LauncherTriton


def test_tls_gateway_serves_tls_clients_only(tiny_triton: LauncherTriton, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    with servers.gateway(
        gateway_config(tiny_triton.grpc_url, tls_cert_file=str(cert), tls_key_file=str(key))
    ) as gateway:
        secure = ClientConfig(target=gateway.target, secure=True, root_certificates=cert.read_bytes())
        with ClipClient(config=secure) as client:
            assert client.classify(photo_pngs()[:1], ["cat"]).results[0].ok
        plain = ClientConfig(target=gateway.target, timeout=3, retry=NO_RETRY)
        with ClipClient(config=plain) as client, pytest.raises(UnavailableError):
            client.model_info()
