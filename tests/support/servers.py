"""The test harness's servers: Triton through the launcher, gateways (in a thread or as their own
process), Prometheus. Each is a context manager: it is ready (or fails with the reason) when the
`with` body starts, and it is stopped, with a check that none of its processes is left, however
the body ends.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.config import GatewayConfig
from launcher.server import free_port
from launcher.supervisor import child_pids
from tests.support.gateway import GatewayThread
from tests.support.processes import ManagedProcess, wait_for

ROOT = Path(__file__).resolve().parents[2]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text endpoint, keyed by its name exactly as exposed (no
    suffix added, unlike prometheus_client's parser) and its label set."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            labels = frozenset(_LABEL.findall(match.group(2) or ""))
            samples[(match.group(1), labels)] = float(match.group(3))
    return samples


def metric(url: str, name: str, **labels: str) -> float:
    """One sample's value (0 when the series does not exist yet)."""
    return scrape(url).get((name, frozenset(labels.items())), 0.0)


def health(target: str, service: str = "", timeout: float = 5.0, credentials: Any = None) -> int | None:
    """The grpc.health.v1 status, or None when the server does not answer."""
    channel = grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    with channel:
        try:
            request = health_pb2.HealthCheckRequest(service=service)
            return int(health_pb2_grpc.HealthStub(channel).Check(request, timeout=timeout).status)
        except grpc.RpcError:
            return None


def wait_health(target: str, status: int = SERVING, timeout: float = 120.0) -> None:
    wait_for(lambda: health(target, timeout=2) == status, timeout, f"{target} reporting health {status}")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


class LauncherTriton:
    """`python -m launcher` as a user runs it: Triton on free ports, supervised."""

    def __init__(
        self,
        repository: Path | str,
        log_dir: Path,
        grpc_port: int | None = None,
        extra_args: Sequence[str] = (),
        address: str = "127.0.0.1",
        ports: tuple[int, int] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """`address`: where Triton listens (several Tritons may share ports on different loopback
        addresses); `ports`: its HTTP and metrics ports (default: free ones); `env`: more
        environment (object-storage credentials, say)."""
        self.repository = repository
        self.address = address
        self.grpc_port = grpc_port or free_port()
        self.http_port, self.metrics_port = ports or (free_port(), free_port())
        self.triton_log = log_dir / f"triton-{address}.log"
        self.process = ManagedProcess(
            "triton",
            [
                sys.executable,
                "-m",
                "launcher",
                f"--model-repository={repository}",
                f"--address={address}",
                f"--grpc-port={self.grpc_port}",
                f"--http-port={self.http_port}",
                f"--metrics-port={self.metrics_port}",
                f"--log-file={self.triton_log}",
                "--response-cache-mb=64",
                *extra_args,
            ],
            log_dir / f"launcher-{address}.log",
            cwd=ROOT,
            env=env,
        )

    @property
    def grpc_url(self) -> str:
        return f"{self.address}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.address}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.address}:{self.metrics_port}/metrics"

    def wait_ready(self, timeout: float = 300.0) -> None:
        """Every model READY: the launcher says so only then."""
        self.process.wait_for_log("Triton ready", timeout)

    def triton_pid(self) -> int:
        (pid,) = wait_for(lambda: child_pids(self.process.pid), 60, "a tritonserver under the launcher")
        return pid

    def stub_pids(self) -> dict[int, str]:
        """pid -> model name of each Python-backend stub of the current Triton."""
        stubs = {}
        for pid in child_pids(self.triton_pid()):
            with contextlib.suppress(OSError):
                command = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                stubs[pid] = command.split(str(self.repository), 1)[-1].strip("/").split("/", 1)[0]
        return stubs

    def stub_pid(self, model: str) -> int:
        return next(pid for pid, name in self.stub_pids().items() if name == model)

    def metric(self, name: str, **labels: str) -> float:
        return metric(self.metrics_url, name, **labels)

    def wait_idle(self, timeout: float = 60.0, quiet: float = 1.0) -> None:
        """Wait until Triton finishes what earlier calls left running (a call that ran out of
        time at the gateway goes on inside Triton): nothing pending, and no request counter
        moving for `quiet` seconds. Tests that count requests start from here. (A request that
        is executing is not pending and moves no request counter until it ends; the text
        encoder's label-cache misses move every 64 new prompts, so a long text request counts as
        activity too; and so does CPU time: Triton and its stubs using more than a tenth of a core,
        which a request still computing does whatever the counters say.)"""

        def activity() -> tuple[float, float]:
            samples = scrape(self.metrics_url)
            ended = sum(
                v
                for (name, _), v in samples.items()
                if name.startswith("nv_inference_request_") or name == "clip_label_cache_misses_total"
            )
            pending = sum(v for (name, _), v in samples.items() if name == "nv_inference_pending_request_count")
            return ended, pending

        def cpu_seconds() -> float:
            pids = [self.triton_pid(), *child_pids(self.triton_pid())]
            return sum(process_cpu_seconds(pid) for pid in pids)

        last: list[tuple[float, float]] = [activity()]
        since = [time.monotonic()]
        cpu = [cpu_seconds(), time.monotonic()]

        def settled() -> bool:
            now, used, at = activity(), cpu_seconds(), time.monotonic()
            busy = (used - cpu[0]) / max(at - cpu[1], 1e-3) > 0.1
            cpu[:] = [used, at]
            if now != last[0] or now[1] > 0 or busy:
                last[0], since[0] = now, time.monotonic()
                return False
            return time.monotonic() - since[0] >= quiet

        wait_for(settled, timeout, "Triton finishing the requests left running", interval=0.25)

    def stop(self) -> int:
        return self.process.stop()


@contextlib.contextmanager
def triton(repository: Path | str, log_dir: Path, **options: Any) -> Iterator[LauncherTriton]:
    server = LauncherTriton(repository, log_dir, **options)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def gateway(config: GatewayConfig, ready: bool = True) -> Iterator[GatewayThread]:
    """A gateway in this process (its metrics in this process's registry), ready when `ready`."""
    thread = GatewayThread(config)
    try:
        if ready:
            thread.wait_ready()
        yield thread
    finally:
        thread.stop()


def with_hosts_file(argv: list[str], hosts: Path) -> list[str]:
    """`argv` run with `hosts` in place of /etc/hosts, in a mount namespace of its own (root only):
    how tests give a process a DNS name with several addresses, as Kubernetes DNS does for a
    headless Service, without touching the machine's own /etc/hosts."""
    script = 'mount --bind "$0" /etc/hosts && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(hosts), *argv]


class GatewayProcess:
    """`python -m gateway` in its own process, as deployed; SERVING when constructed."""

    def __init__(
        self,
        triton_url: str,
        log_dir: Path,
        *flags: str,
        wait: bool = True,
        address: str = "127.0.0.1",
        port: int | None = None,
        hosts: Path | None = None,
    ) -> None:
        self.port = port or free_port()
        self.metrics_port = free_port()
        self.target = f"{address}:{self.port}"
        argv = [
            sys.executable,
            "-m",
            "gateway",
            f"--listen={self.target}",
            f"--triton-url={triton_url}",
            f"--metrics-listen=127.0.0.1:{self.metrics_port}",
            "--health-interval=0.2",
            *flags,
        ]
        self.process = ManagedProcess(
            "gateway",
            with_hosts_file(argv, hosts) if hosts else argv,
            log_dir / f"gateway-{address}-{self.port}.log",
            cwd=ROOT,
        )
        if wait:
            try:
                wait_for(
                    lambda: health(self.target, timeout=2) == SERVING or not self.process.running(),
                    120,
                    "the gateway reporting SERVING",
                    explain=self.process.log_tail,
                )
                assert self.process.running(), self.process.log_tail()
            except BaseException:
                self.process.stop()
                raise

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def metric(self, name: str, **labels: str) -> float:
        return metric(self.metrics_url, name, **labels)

    def stop(self) -> int:
        return self.process.stop()


@contextlib.contextmanager
def gateway_process(triton_url: str, log_dir: Path, *flags: str) -> Iterator[GatewayProcess]:
    process = GatewayProcess(triton_url, log_dir, *flags)
    try:
        yield process
    finally:
        process.stop()


@contextlib.contextmanager
def prometheus(targets: dict[str, list[str]], folder: Path, scrape_interval: str = "1s") -> Iterator[str]:
    """A real Prometheus with the shipped deploy/prometheus.yml, each job pointed at `targets`
    (job name -> host:port list); yields its base URL once /-/ready answers."""
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = config["global"]["evaluation_interval"] = scrape_interval
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": targets[job["job_name"]]}]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = ManagedProcess(
        "prometheus",
        [
            "prometheus",
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        folder / "prometheus.log",
    )
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert process.running(), f"prometheus exited: {process.log_tail()}"
        try:
            with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    try:
        wait_for(ready, 60, "Prometheus answering /-/ready", interval=0.2, explain=process.log_tail)
        yield base
    finally:
        process.stop()
