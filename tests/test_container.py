"""The container image and docker-compose.yml, built and started for real with podman: the image
is built from the repository's Dockerfile, the stack is brought up by docker-compose through
podman's Docker-compatible API, called from the host like a user would, and torn down leaving no
container, pod, volume, network or process behind.

What does not run here, and what runs instead (see tests/support/containers.py):
- no registry: the base image is Debian bookworm from Debian's packages (mmdebstrap), passed as
  BASE_IMAGE (the Dockerfile's default is python:3.11-slim-bookworm); Prometheus is Debian's
  package in an image of our own (PROMETHEUS_IMAGE); Grafana has no Debian package, so the
  grafana service is not started;
- no systemd: podman's health checks are run by the test every 2 s (HealthTicker).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from clip_client import NO_RETRY, AuthenticationError, ClientConfig, ClipClient
from launcher.server import free_port
from tests.support import containers
from tests.support.containers import HealthTicker, podman
from tests.support.processes import wait_for
from tests.support.servers import SERVING, health

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "localhost/clip-serve:test"
PROMETHEUS_IMAGE = "localhost/clip-serve-prometheus:test"
SERVICES = ("export", "triton", "gateway", "prometheus")
SAMPLE = ROOT / "models" / "samples" / "red_circle.png"
LABELS = ["red circle", "blue square", "green triangle", "yellow star"]
API_KEY = "container-test-key"


@dataclass
class Stack:
    project: str
    env: dict[str, str]
    ports: dict[str, int]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.ports['CLIP_GRPC_PORT']}"

    def container(self, service: str) -> str:
        return f"{self.project}_{service}_1"


def compose(stack: Stack, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker-compose", "--project-name", stack.project, *args],
        cwd=ROOT,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("containers")
    ports = {name: free_port() for name in ("CLIP_GRPC_PORT", "CLIP_HTTP_PORT", "PROMETHEUS_PORT")}
    keys = work / "api-keys"
    keys.write_text(f"{API_KEY}\n")
    stack = Stack(
        project=f"clipservetest{os.getpid()}",
        env={
            **os.environ,
            **{name: str(port) for name, port in ports.items()},
            "CLIP_IMAGE": IMAGE,
            "PROMETHEUS_IMAGE": PROMETHEUS_IMAGE,
            "GRAFANA_ADMIN_PASSWORD": "not-started-here",
            "CLIP_API_KEYS_FILE": str(keys),
        },
        ports=ports,
    )
    stack.timings["base image build s"] = containers.build_base(work)
    stack.timings["image build s"] = containers.build(
        IMAGE, ROOT / "Dockerfile", ROOT, work / "build.log", "TORCH_INDEX_URL=", "REVISION=test"
    )
    prometheus_dir = ROOT / "tests" / "container"
    containers.build(PROMETHEUS_IMAGE, prometheus_dir / "prometheus.Dockerfile", prometheus_dir, work / "prom.log")
    with containers.api_service(work) as docker_host:
        stack.env["DOCKER_HOST"] = docker_host
        ticker = HealthTicker(stack.project)
        try:
            started = time.monotonic()
            compose(stack, "up", "--detach", "--no-build", *SERVICES)  # waits for export, then Triton healthy
            wait_for(lambda: health(stack.grpc_target, timeout=2) == SERVING, 300, "the gateway SERVING on the host")
            stack.timings["up to healthy s"] = time.monotonic() - started
            yield stack
        finally:
            ticker.stop()
            down = compose(stack, "down", "--volumes", "--remove-orphans", "--timeout", "30", timeout=300)
            left = containers.leftovers(stack.project)
            print(f"\ncontainer stack: {stack.timings}, image {containers.image_size(IMAGE) / 1e9:.2f} GB")
    assert left == {"containers": [], "pods": [], "volumes": [], "networks": []}, (left, down.stderr)


def test_the_client_classifies_through_the_stack(stack: Stack) -> None:
    # The stack's first call (fresh page cache, first compiled-kernel run in the container) gets a
    # deadline a loaded 2-core machine meets; the client's default 30 s was not measured to fail.
    config = ClientConfig(target=stack.grpc_target, api_key=API_KEY, timeout=180)
    with ClipClient(config=config) as client:
        result = client.classify(SAMPLE, LABELS)
        info = client.model_info()
    assert result[0].top.label == "red circle" and result[0].top.probability > 0.9
    assert info.variant == "demo"  # no network in the export container: the bundled model
    # the image's compiler builds the compiled encoders (without it, the export says TorchScript),
    # at the precision auto takes on this machine (bf16 where native and measured faster, else fp32)
    assert info.precision in ("fp32", "bf16"), info
    assert info.execution.startswith(f"AOTInductor-compiled {info.precision} encoders on CPU"), info.execution


def test_the_api_keys_secret_reaches_the_gateway(stack: Stack) -> None:
    with (
        ClipClient(config=ClientConfig(target=stack.grpc_target, retry=NO_RETRY)) as client,
        pytest.raises(AuthenticationError),
    ):
        client.model_info()


def test_http_classification_from_the_host(stack: Stack) -> None:
    body = {"image": "data:image/png;base64," + base64.b64encode(SAMPLE.read_bytes()).decode(), "labels": LABELS}
    request = urllib.request.Request(
        f"http://127.0.0.1:{stack.ports['CLIP_HTTP_PORT']}/v1/classifications",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.load(response)
    assert answer["data"][0]["labels"][0]["label"] == "red circle"


def test_prometheus_scrapes_the_gateway_and_triton(stack: Stack) -> None:
    url = f"http://127.0.0.1:{stack.ports['PROMETHEUS_PORT']}/api/v1/targets"

    def targets_up() -> dict[str, str]:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                active = json.load(response)["data"]["activeTargets"]
        except OSError:
            return {}
        found = {target["labels"]["job"]: target["health"] for target in active}
        return found if found == {"gateway": "up", "triton": "up"} else {}

    wait_for(targets_up, 120, "Prometheus scraping both the gateway and Triton", interval=1)


def test_triton_is_private(stack: Stack) -> None:
    triton = json.loads(podman("inspect", stack.container("triton")).stdout)[0]
    assert not any(triton["NetworkSettings"]["Ports"].values()), triton["NetworkSettings"]["Ports"]
    networks = set(triton["NetworkSettings"]["Networks"])
    assert networks == {f"{stack.project}_backend"}
    backend = json.loads(podman("network", "inspect", f"{stack.project}_backend").stdout)[0]
    assert backend["internal"] is True
    # From a container on the frontend network (where the host's published ports lead), Triton's
    # address is unreachable, and so is the gateway's /metrics on the gateway's own frontend address
    # (it listens on the metrics network alone), while the gateway's API is reachable: the
    # isolation is real. (Prometheus, on the metrics network, scrapes it: the test above.)
    triton_ip = next(iter(triton["NetworkSettings"]["Networks"].values()))["IPAddress"]
    gateway = json.loads(podman("inspect", stack.container("gateway")).stdout)[0]
    gateway_ip = gateway["NetworkSettings"]["Networks"][f"{stack.project}_frontend"]["IPAddress"]
    assert not any(port.startswith("9464") for port in gateway["NetworkSettings"]["Ports"])
    probe = (
        "import socket\n"
        "def reach(host, port):\n"
        "    try:\n"
        "        socket.create_connection((host, port), timeout=3).close(); return 'reached'\n"
        "    except OSError as error:\n"
        "        return type(error).__name__\n"
        f"print(reach({triton_ip!r}, 8001), reach('gateway', 50051), reach({gateway_ip!r}, 9464))\n"
    )
    answer = podman(
        "run", "--rm", *containers.LIMITS, "--network", f"{stack.project}_frontend", IMAGE, "python", "-c", probe
    )
    triton_answer, gateway_answer, metrics_answer = answer.stdout.split()
    assert triton_answer != "reached" and gateway_answer == "reached", answer.stdout
    assert metrics_answer == "ConnectionRefusedError", answer.stdout


def test_the_image_runs_as_a_user_with_labels_and_a_health_check(stack: Stack) -> None:
    image = json.loads(podman("image", "inspect", IMAGE).stdout)[0]
    config = image["Config"]
    assert config["User"] == "clip"
    assert config["Labels"]["org.opencontainers.image.title"] == "clip-serve"
    assert config["Labels"]["org.opencontainers.image.revision"] == "test"
    assert "gateway.healthcheck" in " ".join(image["Healthcheck"]["Test"])  # podman keeps it beside Config
    running = podman("exec", stack.container("gateway"), "id", "-u").stdout.strip()
    assert running == "10001"
    # No tests, benchmarks or docs in the final image; the one compiler is the exporter's (EXPORT_COMPILER).
    found = podman("run", "--rm", *containers.LIMITS, IMAGE, "ls", "/app")
    assert set(found.stdout.split()) == {
        "configuration",
        "export",
        "gateway",
        "launcher",
        "model_repository",
        "models",
        "serve",
    }
    compilers = podman("run", "--rm", *containers.LIMITS, IMAGE, "sh", "-c", "command -v g++ clang++ || true")
    assert compilers.stdout.split() == ["/usr/bin/g++"]
