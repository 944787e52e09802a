"""TLS everywhere: with a certificate the gateway's gRPC port and its HTTP API both speak TLS only
(a cleartext HTTP API only when asked for), a client CA makes both demand client certificates,
and the client, its CLI and the container health check speak TLS with a CA and a client cert."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from clip_client import NO_RETRY, ClientConfig, ClipClient, UnavailableError
from clip_client.cli import main as cli
from gateway.config import GatewayConfig
from tests.support import servers
from tests.support.gateway import GatewayThread, gateway_config
from tests.support.images import photo_pngs
from tests.support.servers import LauncherTriton
from tests.support.tls import Certificates, make_certificates
from tests.support.triton import ROOT


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


def tls_config(triton: LauncherTriton, certs: Certificates, **extra: object) -> GatewayConfig:
    return gateway_config(
        triton.grpc_url,
        tls_cert_file=str(certs.server_cert),
        tls_key_file=str(certs.server_key),
        http_listen="127.0.0.1:0",
        **extra,
    )


@pytest.fixture(scope="module")
def tls_gateway(tiny_triton: LauncherTriton, certificates: Certificates) -> Iterator[GatewayThread]:
    with servers.gateway(tls_config(tiny_triton, certificates)) as gateway:
        yield gateway


def test_grpc_speaks_tls_only(tls_gateway: GatewayThread, certificates: Certificates) -> None:
    secure = ClientConfig(target=tls_gateway.target, secure=True, root_certificates=certificates.ca.read_bytes())
    with ClipClient(config=secure) as client:
        assert client.classify(photo_pngs()[:1], ["cat"]).results[0].ok
    plain = ClientConfig(target=tls_gateway.target, timeout=3, retry=NO_RETRY)
    with ClipClient(config=plain) as client, pytest.raises(UnavailableError):
        client.model_info()


def test_the_http_api_speaks_tls_too(tls_gateway: GatewayThread, certificates: Certificates) -> None:
    port = tls_gateway.http_base.rsplit(":", 1)[1]
    context = ssl.create_default_context(cafile=str(certificates.ca))
    with urllib.request.urlopen(f"https://127.0.0.1:{port}/v1/models", context=context, timeout=10) as answer:
        assert json.load(answer)["data"][0]["id"] == "tiny"
    with pytest.raises((urllib.error.URLError, ConnectionError)):  # cleartext gets nowhere
        urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5)


def test_the_cli_takes_a_ca(
    tls_gateway: GatewayThread, certificates: Certificates, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(["--target", tls_gateway.target, "--ca-file", str(certificates.ca), "info"]) == 0
    assert "embedding_dimension" in capsys.readouterr().out


def health_check(target: str, certificates: Certificates, **env: str) -> subprocess.CompletedProcess[str]:
    """The container health check, as its image runs it (the gateway's certificate in the environment)."""
    env = {
        "PATH": "/usr/bin:/bin",
        "CLIP_GATEWAY_TLS_CERT_FILE": str(certificates.server_cert),
        "CLIP_GATEWAY_HEALTHCHECK_CA_FILE": str(certificates.ca),
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "gateway.healthcheck", target], cwd=ROOT, capture_output=True, text=True, env=env
    )


def test_the_container_health_check_speaks_tls(tls_gateway: GatewayThread, certificates: Certificates) -> None:
    done = health_check(tls_gateway.target, certificates)
    assert done.returncode == 0 and "SERVING" in done.stdout, done.stderr


def test_client_certificates_are_required_with_a_client_ca(
    tiny_triton: LauncherTriton, certificates: Certificates, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tls_config(tiny_triton, certificates, tls_client_ca_file=str(certificates.ca))
    with servers.gateway(config) as gateway:
        without = ClientConfig(
            target=gateway.target,
            secure=True,
            root_certificates=certificates.ca.read_bytes(),
            timeout=3,
            retry=NO_RETRY,
        )
        with ClipClient(config=without) as client, pytest.raises(UnavailableError):
            client.model_info()
        with_cert = ClientConfig(
            target=gateway.target,
            secure=True,
            root_certificates=certificates.ca.read_bytes(),
            client_certificate_chain=certificates.client_cert.read_bytes(),
            client_private_key=certificates.client_key.read_bytes(),
        )
        with ClipClient(config=with_cert) as client:
            assert client.model_info().embedding_dimension == 16
        assert (
            cli(
                [
                    "--target",
                    gateway.target,
                    "--ca-file",
                    str(certificates.ca),
                    "--cert-file",
                    str(certificates.client_cert),
                    "--key-file",
                    str(certificates.client_key),
                    "info",
                ]
            )
            == 0
        )
        capsys.readouterr()
        port = gateway.http_base.rsplit(":", 1)[1]
        context = ssl.create_default_context(cafile=str(certificates.ca))
        with pytest.raises((urllib.error.URLError, ConnectionError, ssl.SSLError)):
            urllib.request.urlopen(f"https://127.0.0.1:{port}/v1/models", context=context, timeout=5)
        context.load_cert_chain(str(certificates.client_cert), str(certificates.client_key))
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/v1/models", context=context, timeout=10) as answer:
            assert answer.status == 200
        # the health check too: refused without a certificate of its own, SERVING with one
        assert health_check(gateway.target, certificates).returncode == 1
        with_own = health_check(
            gateway.target,
            certificates,
            CLIP_GATEWAY_HEALTHCHECK_CERT_FILE=str(certificates.client_cert),
            CLIP_GATEWAY_HEALTHCHECK_KEY_FILE=str(certificates.client_key),
        )
        assert with_own.returncode == 0 and "SERVING" in with_own.stdout, with_own.stderr


def test_a_cleartext_http_api_beside_tls_is_only_on_request(
    tiny_triton: LauncherTriton, certificates: Certificates
) -> None:
    config = tls_config(tiny_triton, certificates, http_allow_cleartext=True)
    with (
        servers.gateway(config) as gateway,
        urllib.request.urlopen(f"{gateway.http_base}/v1/health/live", timeout=5) as answer,
    ):
        assert answer.status == 200


def test_tls_settings_that_do_not_fit_are_refused(tiny_triton: LauncherTriton, certificates: Certificates) -> None:
    from gateway.server import check_tls

    with pytest.raises(ValueError, match="needs TLS"):
        check_tls(gateway_config(tiny_triton.grpc_url, tls_client_ca_file=str(certificates.ca)))
    with pytest.raises(ValueError, match="both --tls-cert-file and --tls-key-file"):
        check_tls(gateway_config(tiny_triton.grpc_url, tls_cert_file=str(certificates.server_cert)))
