"""Every PromQL expression of the shipped dashboards returns data from a real Prometheus scraping
a real Triton and a real gateway under traffic; the shipped configs validate."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from clip_client import NO_RETRY, ClientConfig, ClipClient, ClipError, ImageUrl
from launcher.server import TritonServer, free_port
from tests.support.gateway import GatewayThread, gateway_config
from tests.support.triton import ROOT
from tests.test_model_parity import photo_bytes

DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
requires_prometheus = pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian package prometheus")


def expressions() -> list[tuple[str, str, str]]:
    found = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            found.extend((path.stem, panel["title"], target["expr"]) for target in panel["targets"])
    return found


def http_json(url: str) -> dict:  # type: ignore[type-arg]
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def observed(tiny_triton: TritonServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Prometheus scraping the test Triton and a gateway every second; yields its base URL."""
    gateway = GatewayThread(gateway_config(tiny_triton.grpc_url, http_listen="127.0.0.1:0", image_urls=True))
    gateway.wait_ready()
    assert gateway.gateway.metrics_endpoint is not None and gateway.gateway.http is not None
    folder = tmp_path_factory.mktemp("prometheus")
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = config["global"]["evaluation_interval"] = "1s"
    targets = {
        "triton": tiny_triton.metrics_url.split("//")[1].split("/")[0],
        "gateway": f"127.0.0.1:{gateway.gateway.metrics_endpoint.port}",
    }
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{base}/-/ready", timeout=2)
                break
            except OSError:
                time.sleep(0.2)
        send_traffic(gateway.target, f"http://127.0.0.1:{gateway.gateway.http.port}")
        yield base
    finally:
        process.terminate()
        process.wait(30)
        gateway.stop()


def send_traffic(target: str, http_base: str, seconds: float = 6.0) -> None:
    """Good calls, repeated and new label sets, a corrupt image, a bad request, a refused image URL
    and HTTP API calls, for a while."""
    image = photo_bytes()[0]
    with ClipClient(config=ClientConfig(target=target, retry=NO_RETRY)) as client:
        deadline, round_number = time.monotonic() + seconds, 0
        while time.monotonic() < deadline:
            client.classify([image, image[:100]], ["cat", "dog"])
            client.classify(image, ["cat", "dog", f"new label {round_number}"])
            client.embed([image], ["a cat"])
            client.similarity(image, ["a cat"])
            with pytest.raises(ClipError):
                client.classify(image, [" "])
            client.classify(ImageUrl("http://10.0.0.1/cat.png"), ["cat"])  # refused: a private address
            http_json(f"{http_base}/v1/models")
            round_number += 1
            time.sleep(0.2)


@requires_prometheus
@pytest.mark.parametrize(("dashboard", "title", "expr"), expressions())
def test_every_dashboard_query_returns_data(observed: str, dashboard: str, title: str, expr: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        answer = http_json(f"{observed}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        assert answer["status"] == "success", answer
        if answer["data"]["result"]:
            return
        assert time.monotonic() < deadline, f"{dashboard} / {title}: no data for {expr}"
        time.sleep(1)


def test_dashboards_cover_what_operators_need() -> None:
    queries = " ".join(expr for _, _, expr in expressions())
    for metric in (
        "nv_inference_request_success",
        "nv_inference_request_failure",
        "nv_inference_queue_duration_us",
        "nv_inference_exec_count",
        "nv_cache_num_hits_per_model",
        "clip_gateway_requests_total",
        "clip_gateway_request_seconds_bucket",
        "clip_gateway_in_flight_requests",
        "clip_label_cache_hits_total",
    ):
        assert metric in queries


@pytest.mark.skipif(shutil.which("promtool") is None, reason="Debian package prometheus")
def test_shipped_prometheus_config_passes_promtool() -> None:
    subprocess.run(
        ["promtool", "check", "config", str(ROOT / "deploy" / "prometheus.yml")], check=True, capture_output=True
    )


def test_dashboards_are_generated_from_their_source(tmp_path: Path) -> None:
    before = {path.name: path.read_text() for path in DASHBOARDS}
    subprocess.run([sys.executable, str(ROOT / "deploy" / "grafana" / "build_dashboards.py")], check=True)
    assert {path.name: path.read_text() for path in DASHBOARDS} == before
