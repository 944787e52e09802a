"""Several Tritons and several gateways, as the Kubernetes kit runs them, with real processes on
loopback: two Tritons (each through the launcher) share one DNS name, as the pods of a headless
Service do; two gateways reach them through `dns:///` and balance per request; clients reach the
gateways the same way. SIGKILL one Triton under load, with calls in flight on it: no call fails
(those in flight are retried on the other server, and some are), and when it is back it gets
traffic again.

DNS here: each process that must resolve the shared names runs with a hosts file of its own in a
mount namespace of its own (tests.support.servers.with_hosts_file), the machine's /etc/hosts
untouched.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from clip_client import NO_RETRY, ClientConfig, ClipClient, ClipError
from launcher.server import free_port
from tests.support.images import SMALL_JPEG
from tests.support.processes import wait_for
from tests.support.servers import ROOT, GatewayProcess, LauncherTriton, with_hosts_file

ADDRESSES = ("127.0.0.2", "127.0.0.3")
LOAD_THREADS = 4
# The load's per-call deadline. Calls sent to the frozen Triton wait until it is killed (a second or
# two on a loaded machine) and are then retried: the deadline leaves them ample time for both.
CALL_TIMEOUT = 30.0


@dataclass
class Cluster:
    tritons: list[LauncherTriton]
    gateways: list[GatewayProcess]
    hosts: Path
    gateway_port: int

    @property
    def gateway_list(self) -> str:
        """Both gateways as one gRPC target, balanced by the client (ipv4: needs no DNS)."""
        return "ipv4:" + ",".join(gateway.target for gateway in self.gateways)

    def classifications(self, triton: LauncherTriton) -> float:
        return triton.metric("nv_inference_request_success", model="clip_classify", version="1")

    def gateway_calls(self, gateway: GatewayProcess) -> float:
        return gateway.metric("clip_gateway_requests_total", method="Classify", code="OK")

    def retries(self) -> float:
        return sum(
            gateway.metric("clip_gateway_triton_retries_total", model="clip_classify") for gateway in self.gateways
        )


@pytest.fixture(scope="module")
def cluster(tiny_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    logs = tmp_path_factory.mktemp("scale-out")
    grpc_port, http_port, metrics_port, gateway_port = (free_port() for _ in range(4))
    hosts = logs / "hosts"
    hosts.write_text(
        "127.0.0.1 localhost\n"
        + "".join(f"{address} clip-triton-headless clip-gateway-headless\n" for address in ADDRESSES)
    )
    tritons = [  # no hang restarts: the test freezes a Triton itself, then kills it
        LauncherTriton(
            tiny_repository, logs, grpc_port, ("--hang-timeout=0",), address=address, ports=(http_port, metrics_port)
        )
        for address in ADDRESSES
    ]
    gateways: list[GatewayProcess] = []
    try:
        for triton in tritons:
            triton.wait_ready()
        for address in ADDRESSES:
            gateways.append(
                GatewayProcess(
                    f"dns:///clip-triton-headless:{grpc_port}", logs, address=address, port=gateway_port, hosts=hosts
                )
            )
        yield Cluster(tritons, gateways, hosts, gateway_port)
    finally:
        started: list[GatewayProcess | LauncherTriton] = [*gateways, *tritons]
        for process in started:
            process.stop()


def test_calls_are_balanced_over_both_tritons_and_both_gateways(cluster: Cluster) -> None:
    before = [cluster.classifications(triton) for triton in cluster.tritons]
    gateways_before = [cluster.gateway_calls(gateway) for gateway in cluster.gateways]
    with ClipClient(config=ClientConfig(target=cluster.gateway_list, retry=NO_RETRY)) as client:
        for index in range(40):
            assert client.classify(SMALL_JPEG, ["cat", f"dog {index}"])[0].ok
    per_triton = [cluster.classifications(t) - b for t, b in zip(cluster.tritons, before, strict=True)]
    per_gateway = [cluster.gateway_calls(g) - b for g, b in zip(cluster.gateways, gateways_before, strict=True)]
    print(f"40 calls: per Triton {per_triton}, per gateway {per_gateway}")
    assert sum(per_triton) == 40 and min(per_triton) >= 10  # round_robin: about half each
    assert sum(per_gateway) == 40 and min(per_gateway) >= 10


def test_a_client_balances_over_a_dns_name_with_several_gateways(cluster: Cluster) -> None:
    """The Python client with `dns:///` (what a headless Service gives), in a process of its own
    that resolves clip-gateway-headless to both gateways."""
    before = [cluster.gateway_calls(gateway) for gateway in cluster.gateways]
    script = (
        "import sys\n"
        "from clip_client import ClipClient\n"
        "with ClipClient(sys.argv[1]) as client:\n"
        "    for index in range(20):\n"
        "        assert client.classify(sys.argv[2], ['cat', f'dns {index}'])[0].ok\n"
    )
    sample = ROOT / "models" / "samples" / "red_circle.png"
    target = f"dns:///clip-gateway-headless:{cluster.gateway_port}"
    argv = with_hosts_file([sys.executable, "-c", script, target, str(sample)], cluster.hosts)
    subprocess.run(argv, check=True, timeout=120, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    per_gateway = [cluster.gateway_calls(g) - b for g, b in zip(cluster.gateways, before, strict=True)]
    assert sum(per_gateway) == 20 and min(per_gateway) >= 5, per_gateway


def process_state(pid: int) -> str:
    """The state letter of /proc/<pid>/stat ("T": stopped), "" once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def test_sigkill_of_one_triton_under_load_fails_no_call(cluster: Cluster) -> None:
    """Calls are in flight on the victim when it is killed, by construction: it is frozen
    (SIGSTOP) first, so the calls the gateways send it stay there. Each gateway balances round_robin
    over both Tritons, strictly alternating: once three calls started after the freeze have been
    answered (by the survivor, the only one answering), one gateway answered two, so it sent one
    to the frozen victim between them. That call fails UNAVAILABLE at the kill and must be retried
    on the survivor: at least one retry, and still no call failed."""
    outcomes: Counter[str] = Counter()
    unexpected: list[BaseException] = []
    stop = threading.Event()
    frozen = threading.Event()
    lock = threading.Lock()
    in_flight = [0]
    answered_after_freeze = [0]  # answered calls that started after the victim was frozen

    def call(client: ClipClient) -> bool:
        """One call, counted; False when something other than a ClipError went wrong."""
        after_freeze = frozen.is_set()
        with lock:
            in_flight[0] += 1
        try:
            client.classify(SMALL_JPEG, ["cat", "dog"])
            with lock:
                outcomes["OK"] += 1
                answered_after_freeze[0] += after_freeze
        except ClipError as error:
            with lock:
                outcomes[error.code.name] += 1
        except BaseException as error:
            unexpected.append(error)
            return False
        finally:
            with lock:
                in_flight[0] -= 1
        return True

    config = ClientConfig(target=cluster.gateway_list, timeout=CALL_TIMEOUT, retry=NO_RETRY)

    def load(worker: int) -> None:
        with ClipClient(config=config) as client:
            while not stop.is_set() and call(client):
                pass

    victim, survivor = cluster.tritons
    retries_before = cluster.retries()
    threads = [threading.Thread(target=load, args=(worker,)) for worker in range(LOAD_THREADS)]
    extra: list[threading.Thread] = []
    for thread in threads:
        thread.start()
    old_pid = 0
    try:
        with ClipClient(config=config) as spare_client:
            try:
                wait_for(lambda: outcomes["OK"] >= 20, 60, "calls flowing before the kill")
                old_pid = victim.triton_pid()
                os.kill(old_pid, signal.SIGSTOP)
                wait_for(lambda: process_state(old_pid) == "T", 30, "the victim Triton frozen")
                frozen.set()

                def a_call_is_stuck_on_the_victim() -> bool:
                    """Three calls started after the freeze answered. Load threads whose call went
                    to the victim wait on it, so more calls are started beside them, a bounded
                    number at a time (with every other call answered, the three always come)."""
                    if answered_after_freeze[0] >= 3:
                        return True
                    if sum(thread.is_alive() for thread in extra) < 2 * LOAD_THREADS:
                        extra.append(threading.Thread(target=call, args=(spare_client,)))
                        extra[-1].start()
                    return False

                wait_for(a_call_is_stuck_on_the_victim, 60, "calls answered beside those waiting on the frozen Triton")
                in_flight_at_kill = in_flight[0]
                os.kill(old_pid, signal.SIGKILL)
                killed = time.monotonic()
                calls_at_kill = sum(outcomes.values())
                wait_for(lambda: victim.triton_pid() != old_pid, 60, "the launcher restarting the killed Triton")
                wait_for(lambda: "Triton is back" in victim.process.log(), 120, "the restarted Triton ready")
                back = time.monotonic() - killed
                wait_for(lambda: cluster.classifications(victim) > 0, 60, "the restarted Triton getting calls again")
                traffic_again = time.monotonic() - killed
                calls_after = sum(outcomes.values()) - calls_at_kill
            finally:
                if old_pid and process_state(old_pid) == "T":  # failed while it was frozen: let it go on
                    os.kill(old_pid, signal.SIGCONT)
                stop.set()
                for thread in extra:
                    thread.join(CALL_TIMEOUT + 20)
    finally:
        stop.set()
        for thread in threads:
            thread.join(CALL_TIMEOUT + 20)
    retried = cluster.retries() - retries_before
    print(
        f"SIGKILL of one of two Tritons under {LOAD_THREADS} clients (+{len(extra)} calls while it was frozen): "
        f"outcomes {dict(outcomes)}, {in_flight_at_kill} calls in flight at the kill, {calls_after} calls after it, "
        f"{retried:.0f} retried on the other Triton, back and ready after {back:.1f}s, receiving calls again "
        f"after {traffic_again:.1f}s, survivor served {cluster.classifications(survivor):.0f} in all"
    )
    assert not unexpected, unexpected
    assert in_flight_at_kill > 0
    assert retried > 0, f"no call was retried on the other Triton: outcomes {dict(outcomes)}"
    assert set(outcomes) == {"OK"}, outcomes  # no call failed: those in flight were retried elsewhere
    assert calls_after > 0
