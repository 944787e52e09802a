"""Every PromQL expression of the shipped dashboards gives finite, non-trivial values from a real
Prometheus scraping a real Triton and a real gateway under traffic; the shipped configs validate;
the committed dashboards are exactly what their generator writes."""

from __future__ import annotations

import base64
import json
import math
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from clip_client import NO_RETRY, ClientConfig, ClipClient, ClipError, DeadlineExceededError, ImageUrl
from tests.support import servers
from tests.support.gateway import gateway_config
from tests.support.images import photo_pngs
from tests.support.infer import bytes_input
from tests.support.processes import wait_for
from tests.support.servers import LauncherTriton
from tests.support.triton import ROOT

DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
# Traffic runs until every panel has shown a point above zero (the event), at least this long...
MIN_TRAFFIC_SECONDS = 8.0
# ...and at most this long (a loaded 2-core machine may finish one round of a worker in 8 s); a
# panel still without one then fails its own test below, naming itself.
MAX_TRAFFIC_SECONDS = 240.0
POLL_SECONDS = 2.0
LOAD_THREADS = 3  # enough concurrency that in-flight and pending gauges are seen above zero


def expressions() -> list[tuple[str, str, str]]:
    found: list[tuple[str, str, str]] = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            found.extend((path.stem, panel["title"], target["expr"]) for target in panel["targets"])
    return found


def http_json(url: str) -> dict:  # type: ignore[type-arg]
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def series_problem(result: list[dict]) -> str | None:  # type: ignore[type-arg]
    """Why a range-query answer is no evidence the panel works (None when it is): no series, no
    series ending in a finite value, or never a value above zero. (A label with no traffic in the
    window, such as a method nobody called, is NaN in a ratio or quantile: Prometheus' normal
    answer over zero requests, drawn as a gap; so NaN is refused only when every series is NaN.)"""
    if not result:
        return "no series"
    latest = [float(series["values"][-1][1]) for series in result]
    if not any(math.isfinite(value) for value in latest):
        return f"no series ends in a finite value: {latest}"
    points = [float(value) for series in result for _, value in series["values"]]
    if not any(math.isfinite(value) and value > 0 for value in points):
        return f"never above zero ({len(points)} points)"
    return None


SAMPLE_URI = "data:image/png;base64," + base64.b64encode(photo_pngs()[0]).decode()


def http_status(url: str, body: dict) -> int:  # type: ignore[type-arg]
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


class Traffic:
    """Until stopped, from several threads: good calls with repeated and new label sets, a corrupt
    image, a bad request, a call past its deadline, a refused image URL, HTTP API calls, and a
    request Triton itself refuses. `stop` returns every unexpected exception."""

    def __init__(self, target: str, triton_url: str, http_base: str) -> None:
        self.target, self.triton_url, self.http_base = target, triton_url, http_base
        self.image = photo_pngs()[0]
        self.failures: list[BaseException] = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.loop, args=(worker,)) for worker in range(LOAD_THREADS)]
        self.threads.append(threading.Thread(target=self.long_calls))

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> list[BaseException]:
        """Stops the traffic; returns once every thread has finished its round."""
        self.stopping.set()
        for thread in self.threads:
            thread.join(300)
        assert not any(thread.is_alive() for thread in self.threads), "traffic still running 300 s after its stop"
        return self.failures

    def loop(self, worker: int) -> None:
        image, http_base = self.image, self.http_base
        round_number = 0
        try:
            with (
                ClipClient(config=ClientConfig(target=self.target, retry=NO_RETRY)) as client,
                grpcclient.InferenceServerClient(self.triton_url) as triton,
            ):
                while not self.stopping.is_set():
                    # Every round, both kinds of cache event: the same label set twice (the text
                    # encoder's response cache hits the second, in every round), then that set
                    # with a label never seen (a response-cache miss, per-label hits for the
                    # repeated labels and a per-label miss for the new one).
                    client.classify(image, ["cat", "dog"])
                    client.classify([image, image[:100]], ["cat", "dog"])  # and a corrupt image
                    client.classify(image, ["cat", "dog", f"new label {worker} {round_number}"])
                    client.embed([image], ["a cat"])
                    client.similarity(image, ["a cat"])
                    with pytest.raises(ClipError):
                        client.classify(image, [" "])
                    with pytest.raises(DeadlineExceededError):  # reaches Triton, which gives up on it
                        client.classify(
                            [image] * 16, [f"slow {worker} {round_number} {i}" for i in range(200)], timeout=0.05
                        )
                    client.classify(ImageUrl("http://10.0.0.1/cat.png"), ["cat"])  # refused: a private address
                    http_json(f"{http_base}/v1/models")
                    # 4,000 new texts: about 1.5 s on a 2-core EPYC, so past the 0.5 s deadline on
                    # any machine class (500 texts once finished inside it on an idle, faster one).
                    heavy = {
                        "image": [SAMPLE_URI] * 16,
                        "labels": [f"http slow {worker} {round_number} {i}" for i in range(1000)],
                        "templates": [f"picture {j} of a {{}}" for j in range(4)],
                    }
                    assert http_status(f"{http_base}/v1/classifications", heavy) == 504
                    empty = grpcclient.InferInput("IMAGE", [0], "BYTES")
                    empty.set_data_from_numpy(np.array([], dtype=np.object_))
                    with pytest.raises(InferenceServerException):  # a failure Triton counts itself
                        triton.infer("clip_embed_image", [empty])
                    triton.infer("clip_embed_image", [bytes_input("IMAGE", [image])])
                    round_number += 1
        except BaseException as error:
            self.failures.append(error)

    def long_calls(self) -> None:
        """Calls of about 1.5 s each (1,000 new labels x 4 templates), back to back: one is in flight at
        every scrape, so the in-flight panel cannot miss them between two scrapes (it did once, when
        every other call of the traffic fell between them)."""
        templates = [f"picture {j} of a {{}}" for j in range(4)]
        try:
            with ClipClient(config=ClientConfig(target=self.target, retry=NO_RETRY, timeout=120)) as client:
                round_number = 0
                while not self.stopping.is_set():
                    labels = [f"long {round_number} {i}" for i in range(1000)]
                    client.classify(self.image, labels, templates=templates)
                    round_number += 1
        except BaseException as error:
            self.failures.append(error)


def query_problem(base: str, expr: str, started: float, ended: float) -> str | None:
    """series_problem of `expr` over [started, ended], at one-second steps."""
    query = urllib.parse.urlencode({"query": expr, "start": started, "end": ended, "step": "1"})
    answer = http_json(f"{base}/api/v1/query_range?{query}")
    assert answer["status"] == "success", answer
    return series_problem(answer["data"]["result"])


def panels_without_evidence(base: str, started: float) -> list[str]:
    """The dashboard expressions whose answer since `started` is no evidence yet."""
    ended = time.time()
    return [expr for _, _, expr in expressions() if query_problem(base, expr, started, ended) is not None]


def last_scrapes(base: str) -> dict[str, float]:
    """Each active target's last scrape (scrape URL -> Unix time; 0 before its first)."""
    scrapes: dict[str, float] = {}
    for target in http_json(f"{base}/api/v1/targets?state=active")["data"]["activeTargets"]:
        # RFC 3339 with nanoseconds (Python takes microseconds); 0001-01-01 before the first scrape
        stamp = re.sub(r"(\.\d{6})\d*", r"\1", target["lastScrape"]).replace("Z", "+00:00")
        moment = datetime.fromisoformat(stamp)
        scrapes[target["scrapeUrl"]] = moment.timestamp() if moment.year > 1 else 0.0
    return scrapes


def wait_for_scrapes_after(base: str, moment: float) -> None:
    """Until every target has been scraped twice since `moment` (the event, read from Prometheus'
    own record of its scrapes): the first scrape holds everything up to `moment`; the second one
    being reported shows the first one's samples are stored (a target's scrapes run in turn)."""

    def scraped_after(earlier: dict[str, float]) -> bool:
        scrapes = last_scrapes(base)
        return bool(scrapes) and all(scrapes.get(url, 0.0) > when for url, when in earlier.items())

    wait_for(lambda: scraped_after(dict.fromkeys(last_scrapes(base), moment)), 60, "a scrape after the traffic")
    first = last_scrapes(base)
    wait_for(lambda: scraped_after(first), 60, "a second scrape after the traffic")


@pytest.fixture(scope="module")
def observed(
    tiny_triton: LauncherTriton, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, float, float]]:
    """A Prometheus scraping the test Triton and a gateway every second, after traffic that ran
    until every dashboard expression had shown a point above zero (or MAX_TRAFFIC_SECONDS passed);
    yields its base URL and the traffic's start time and a time after its last scrape."""
    # A short default deadline (the HTTP API's only one): a heavy HTTP call runs past it inside
    # Triton's client, which the Triton-error panels must show. gRPC calls carry their own deadlines.
    config = gateway_config(tiny_triton.grpc_url, http_listen="127.0.0.1:0", image_urls=True, default_timeout=0.5)
    with servers.gateway(config) as gateway:
        targets = {
            "triton": [tiny_triton.metrics_url.split("//")[1].split("/")[0]],
            "gateway": [gateway.metrics_url.split("//")[1].split("/")[0]],
        }
        with servers.prometheus(targets, tmp_path_factory.mktemp("prometheus")) as base:
            traffic = Traffic(gateway.target, tiny_triton.grpc_url, gateway.http_base)
            started = time.time()
            clock = time.monotonic()
            traffic.start()
            try:
                while not traffic.failures and time.monotonic() - clock < MAX_TRAFFIC_SECONDS:
                    time.sleep(POLL_SECONDS)
                    if time.monotonic() - clock >= MIN_TRAFFIC_SECONDS and not panels_without_evidence(base, started):
                        break
            finally:
                failures = traffic.stop()
            assert not failures, failures
            wait_for_scrapes_after(base, time.time())
            yield base, started, time.time()


@pytest.mark.parametrize(("dashboard", "title", "expr"), expressions())
def test_every_dashboard_query_gives_finite_nontrivial_values(
    observed: tuple[str, float, float], dashboard: str, title: str, expr: str
) -> None:
    base, started, ended = observed
    problem = query_problem(base, expr, started, ended)
    assert problem is None, f"{dashboard} / {title}: {problem} for {expr}"


def test_the_value_check_rejects_empty_zero_and_nan_answers() -> None:
    """The check above can fail: each of these answers is refused, a real one is accepted."""
    assert series_problem([]) == "no series"
    assert "never above zero" in str(series_problem([{"values": [[1, "0"], [2, "0"]]}]))
    assert "no series ends in a finite value" in str(series_problem([{"values": [[1, "3"], [2, "NaN"]]}]))
    assert series_problem([{"values": [[1, "0"], [2, "2.5"]]}]) is None
    assert series_problem([{"values": [[1, "NaN"]]}, {"values": [[1, "0.2"]]}]) is None  # an idle label


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


def test_shipped_prometheus_config_passes_promtool() -> None:
    subprocess.run(
        ["promtool", "check", "config", str(ROOT / "deploy" / "prometheus.yml")], check=True, capture_output=True
    )


def test_committed_dashboards_are_what_the_generator_writes(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "grafana" / "build_dashboards.py"), "--out", str(tmp_path)], check=True
    )
    generated = {path.name: path.read_text() for path in sorted(tmp_path.glob("*.json"))}
    assert generated == {path.name: path.read_text() for path in DASHBOARDS}
    kubernetes_copy = ROOT / "deploy" / "kubernetes" / "components" / "monitoring" / "dashboards"
    assert generated == {path.name: path.read_text() for path in sorted(kubernetes_copy.glob("*.json"))}
