"""Exit 0 when the gateway at ADDRESS reports SERVING (grpc.health.v1), else 1. For container
health checks: `python -m gateway.healthcheck localhost:50051`.

When the gateway speaks TLS (CLIP_GATEWAY_TLS_CERT_FILE is set, as in its own container), the check
does too, trusting CLIP_GATEWAY_HEALTHCHECK_CA_FILE, or else that certificate itself (right for a
self-signed one). A gateway that requires client certificates (CLIP_GATEWAY_TLS_CLIENT_CA_FILE) is
checked with the certificate and key in CLIP_GATEWAY_HEALTHCHECK_CERT_FILE and _KEY_FILE."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main(argv: list[str]) -> int:
    target = argv[1] if len(argv) > 1 else "localhost:50051"
    certificate = os.environ.get("CLIP_GATEWAY_TLS_CERT_FILE", "")
    trusted = os.environ.get("CLIP_GATEWAY_HEALTHCHECK_CA_FILE", "") or certificate
    own_cert, own_key = (os.environ.get(f"CLIP_GATEWAY_HEALTHCHECK_{name}_FILE", "") for name in ("CERT", "KEY"))
    channel = (
        grpc.secure_channel(
            target,
            grpc.ssl_channel_credentials(
                Path(trusted).read_bytes(),
                private_key=Path(own_key).read_bytes() if own_key else None,
                certificate_chain=Path(own_cert).read_bytes() if own_cert else None,
            ),
        )
        if certificate
        else grpc.insecure_channel(target)
    )
    try:
        with channel:
            response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
    except grpc.RpcError as error:
        print(f"{target}: {error.code().name}", file=sys.stderr)
        return 1
    print(f"{target}: {health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)}")
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
