"""docker-compose.yml validates (docker-compose from Debian; no Docker engine needed) and keeps
the promises the README makes about it."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml

from tests.support.gateway import GatewayThread
from tests.support.servers import LauncherTriton
from tests.support.triton import ROOT


def resolved(*files: str, **env: str) -> dict:  # type: ignore[type-arg]
    args = ["docker-compose", *[arg for f in files for arg in ("-f", str(ROOT / f))], "config"]
    environment = {"PATH": os.environ["PATH"], "GRAFANA_ADMIN_PASSWORD": "from-the-environment", **env}
    done = subprocess.run(args, check=True, capture_output=True, text=True, cwd=ROOT, env=environment)
    return yaml.safe_load(done.stdout)


def published_on(port: str) -> tuple[str, str]:
    """("127.0.0.1", "50051") from docker-compose config's "127.0.0.1:50051:50051/tcp"."""
    host_ip, published, _ = port.split(":")
    return host_ip, published


def test_compose_file_validates_and_keeps_triton_private() -> None:
    config = resolved("docker-compose.yml")
    services = config["services"]
    assert set(services) == {"export", "triton", "gateway", "prometheus", "grafana"}
    assert "ports" not in services["triton"] and services["triton"]["networks"].keys() == {"backend"}
    assert config["networks"]["backend"]["internal"] is True
    assert services["triton"]["shm_size"] in ("1gb", 1073741824, "1073741824")
    for name in ("triton", "gateway", "prometheus", "grafana"):
        assert "healthcheck" in services[name], name
    assert services["triton"]["depends_on"]["export"]["condition"] == "service_completed_successfully"
    assert "launcher.healthcheck" in services["triton"]["healthcheck"]["test"]
    assert services["gateway"]["depends_on"]["triton"]["condition"] == "service_healthy"
    published = {published_on(port) for port in services["gateway"]["ports"]}
    assert published == {("127.0.0.1", "50051"), ("127.0.0.1", "8080")}  # /metrics is not published
    assert "0.0.0.0:8080" in services["gateway"]["command"]


def test_gateway_metrics_listen_on_a_network_only_prometheus_shares() -> None:
    """/metrics needs no key and names every tenant: the gateway binds it to its alias on the
    internal `metrics` network (its address there, not 0.0.0.0), and only Prometheus joins it."""
    config = resolved("docker-compose.yml")
    services = config["services"]
    command = services["gateway"]["command"]
    listen = command[command.index("--metrics-listen") + 1]
    host = listen.rsplit(":", 1)[0]
    assert services["gateway"]["networks"]["metrics"]["aliases"] == [host]
    assert config["networks"]["metrics"]["internal"] is True
    members = {name for name, service in services.items() if "metrics" in service.get("networks", {})}
    assert members == {"gateway", "prometheus"}
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    gateway_job = next(job for job in prometheus["scrape_configs"] if job["job_name"] == "gateway")
    assert gateway_job["static_configs"][0]["targets"] == [listen]


def test_compose_is_safe_by_default() -> None:
    services = resolved("docker-compose.yml")["services"]
    for name in ("gateway", "prometheus", "grafana"):  # loopback unless the user opts in
        assert {published_on(port)[0] for port in services[name]["ports"]} == {"127.0.0.1"}, name
    opened = resolved("docker-compose.yml", CLIP_PUBLISH_ADDRESS="0.0.0.0")["services"]["gateway"]["ports"]
    assert {published_on(port)[0] for port in opened} == {"0.0.0.0"}
    gateway = services["gateway"]
    assert gateway["environment"]["CLIP_GATEWAY_API_KEYS_FILE"] == "/run/secrets/api_keys"
    assert [secret["source"] for secret in gateway["secrets"]] == ["api_keys"]
    assert services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "from-the-environment"


def test_compose_refuses_to_start_without_a_grafana_password() -> None:
    args = ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config"]
    done = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env={"PATH": os.environ["PATH"]})
    assert done.returncode != 0 and "GRAFANA_ADMIN_PASSWORD" in done.stderr


def test_gpu_variant_validates_and_reserves_a_gpu() -> None:
    services = resolved("docker-compose.yml", "docker-compose.gpu.yml")["services"]
    devices = services["triton"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    assert "--device" in services["export"]["command"]


def test_container_health_check_follows_the_gateway(tiny_gateway: GatewayThread, tiny_triton: LauncherTriton) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "gateway.healthcheck", tiny_gateway.target], cwd=ROOT, capture_output=True, text=True
    )
    assert ok.returncode == 0 and "SERVING" in ok.stdout
    down = subprocess.run(
        [sys.executable, "-m", "gateway.healthcheck", "127.0.0.1:1"], cwd=ROOT, capture_output=True, text=True
    )
    assert down.returncode == 1


def test_export_only_writes_the_repository_and_exits(tmp_path: object) -> None:
    from pathlib import Path

    out = Path(str(tmp_path)) / "repository"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "serve",
            "--export-only",
            "--model",
            str(ROOT / "models" / "clip-demo"),
            "--repository",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert (out / "manifest.json").is_file() and (out / "clip_image_encoder" / "1" / "model.pt").is_file()
