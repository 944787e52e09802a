"""Health follows Triton's model readiness; reflection lets a generic client call the service."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from clip_client import NO_RETRY, ClientConfig, ClipClient, UnavailableError
from launcher.server import free_port
from tests.support import servers
from tests.support.gateway import GatewayThread, gateway_config
from tests.support.images import photo_pngs
from tests.support.servers import NOT_SERVING, ROOT, SERVING, health


def test_serving_only_once_tritons_models_are_ready(tiny_repository: Path, tmp_path: Path) -> None:
    port = free_port()
    with servers.gateway(gateway_config(f"127.0.0.1:{port}"), ready=False) as gateway:
        assert health(gateway.target) == NOT_SERVING
        assert health(gateway.target, "clip.v1.ClipService") == NOT_SERVING
        with (
            ClipClient(config=ClientConfig(target=gateway.target, retry=NO_RETRY)) as client,
            pytest.raises(UnavailableError, match="not ready"),
        ):
            client.classify(photo_pngs()[:1], ["cat"])
        with servers.triton(tiny_repository, tmp_path, grpc_port=port):
            gateway.wait_ready(True)
            assert health(gateway.target) == SERVING
            assert health(gateway.target, "clip.v1.ClipService") == SERVING
            with ClipClient(gateway.target) as client:
                assert client.classify(photo_pngs()[:1], ["cat"]).results[0].ok
        gateway.wait_ready(False)
        assert health(gateway.target) == NOT_SERVING


def healthcheck(target: str) -> subprocess.CompletedProcess[str]:
    """`python -m gateway.healthcheck TARGET`, as the container's HEALTHCHECK runs it."""
    command = [sys.executable, "-m", "gateway.healthcheck", target]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_container_health_check_fails_while_the_gateway_is_not_serving(tiny_gateway: GatewayThread) -> None:
    """A gateway that answers NOT_SERVING (its Triton is not there) fails the container's health
    check (exit 1, saying NOT_SERVING), though it answers; a SERVING one passes it (exit 0)."""
    with servers.gateway(gateway_config(f"127.0.0.1:{free_port()}"), ready=False) as unready:
        assert health(unready.target) == NOT_SERVING
        down = healthcheck(unready.target)
    assert down.returncode == 1, (down.stdout, down.stderr)
    assert f"{unready.target}: NOT_SERVING" in down.stdout
    up = healthcheck(tiny_gateway.target)
    assert up.returncode == 0, (up.stdout, up.stderr)
    assert f"{tiny_gateway.target}: SERVING" in up.stdout


def test_generic_reflection_client_lists_and_calls_classify(tiny_gateway: GatewayThread) -> None:
    """No clip_client stubs here: everything is learned from the server's reflection service."""
    with grpc.insecure_channel(tiny_gateway.target) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = database.get_services()
        assert "clip.v1.ClipService" in services and "grpc.health.v1.Health" in services
        pool = descriptor_pool.DescriptorPool(database)
        service = pool.FindServiceByName("clip.v1.ClipService")
        method = service.methods_by_name["Classify"]
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        request = request_class(labels=["cat", "rocket"])
        request.images.add(data=photo_pngs()[0])
        classify = channel.unary_unary(
            f"/{service.full_name}/{method.name}",
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        response = classify(request, timeout=30)
    assert len(response.results) == 1 and response.results[0].status.code == 0
    assert sorted(score.label for score in response.results[0].labels) == ["cat", "rocket"]
