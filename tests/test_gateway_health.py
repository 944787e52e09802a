"""Health follows Triton's model readiness; reflection lets a generic client call the service."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from clip_client import NO_RETRY, ClientConfig, ClipClient, UnavailableError
from launcher.server import free_port
from tests.support import triton
from tests.support.gateway import GatewayThread, gateway_config
from tests.test_model_parity import photo_bytes


def health(target: str, service: str = "") -> int:
    with grpc.insecure_channel(target) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return response.status


def test_serving_only_once_tritons_models_are_ready(tiny_repository: Path, tmp_path: Path) -> None:
    port = free_port()
    gateway = GatewayThread(gateway_config(f"127.0.0.1:{port}"))
    try:
        assert health(gateway.target) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert health(gateway.target, "clip.v1.ClipService") == health_pb2.HealthCheckResponse.NOT_SERVING
        with (
            ClipClient(config=ClientConfig(target=gateway.target, retry=NO_RETRY)) as client,
            pytest.raises(UnavailableError, match="not ready"),
        ):
            client.classify(photo_bytes()[:1], ["cat"])
        server = triton.start_triton(tiny_repository, tmp_path / "triton.log", grpc_port=port)
        try:
            gateway.wait_ready(True)
            assert health(gateway.target) == health_pb2.HealthCheckResponse.SERVING
            assert health(gateway.target, "clip.v1.ClipService") == health_pb2.HealthCheckResponse.SERVING
            with ClipClient(gateway.target) as client:
                assert client.classify(photo_bytes()[:1], ["cat"]).results[0].ok
        finally:
            server.stop()
        gateway.wait_ready(False)
        assert health(gateway.target) == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        gateway.stop()


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
        request.images.add(data=photo_bytes()[0])
        classify = channel.unary_unary(
            f"/{service.full_name}/{method.name}",
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        response = classify(request, timeout=30)
    assert len(response.results) == 1 and response.results[0].status.code == 0
    assert sorted(score.label for score in response.results[0].labels) == ["cat", "rocket"]
