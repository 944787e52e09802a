"""A Kubernetes cluster for tests: the one KUBECONFIG names, or one started from the kit of
binaries CLIP_KUBERNETES_KIT names (scripts/test.sh points it at ../shared/kubernetes), and
kubectl against it. Without either the tests that need it are skipped, saying which to set."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import wait_for

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
NAMESPACE = "clip-serve"
KIT_VARIABLE = "CLIP_KUBERNETES_KIT"
MANAGER = "clip-serve-test"
SECRET = "clip-serve-api-keys"


@dataclass
class Cluster:
    env: dict[str, str]
    kit: Path | None = None  # the kit this cluster was started from (None: KUBECONFIG's)
    state: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        kubectl = shutil.which("kubectl") or shutil.which("kubectl", path=str(Path(sys.executable).parent))
        assert kubectl, "kubectl is needed: run scripts/setup.sh"
        result = subprocess.run(
            [kubectl, *args], env=self.env, capture_output=True, text=True, timeout=timeout, input=input
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr[-2000:]}")
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def wait(self, condition: Callable[[], Any], timeout: float, what: str) -> Any:
        """Poll `condition` until it is truthy (returned) or fail after `timeout` seconds."""
        return wait_for(condition, timeout, what, interval=0.5)

    def timed(self, stage: str, started: float) -> None:
        self.timings[stage] = time.monotonic() - started

    def apply(self, directory: Path, *flags: str) -> None:
        self.kubectl("apply", "--server-side", f"--field-manager={MANAGER}", *flags, "-k", str(directory))

    def delete(self, directory: Path) -> None:
        self.kubectl("delete", "-k", str(directory), "--wait=true", "--ignore-not-found", "--timeout=180s")

    def ensure_namespace(self) -> None:
        """The namespace as the kit's docs have users make it (deploy/kubernetes/namespace), with
        the user's API-key Secret (key `k1` for the name `ops`)."""
        self.apply(DEPLOY / "namespace")
        # The monitoring component writes prometheus-adapter's rules where the adapter runs, a
        # namespace the kit expects to exist (docs/kubernetes.md).
        if self.kubectl("get", "namespace", "monitoring", check=False).returncode != 0:
            self.kubectl("create", "namespace", "monitoring")
        if self.kubectl("-n", NAMESPACE, "get", "secret", SECRET, check=False).returncode != 0:
            self.kubectl("-n", NAMESPACE, "create", "secret", "generic", SECRET, "--from-literal=api-keys=ops: k1")

    def pods(self, component: str) -> list[dict[str, Any]]:
        listed = self.json("-n", NAMESPACE, "get", "pods", "-l", f"app.kubernetes.io/component={component}")
        return [pod for pod in listed["items"] if not pod["metadata"].get("deletionTimestamp")]


def ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))


@contextlib.contextmanager
def cluster(*fake_nodes: str) -> Iterator[Cluster]:
    """KUBECONFIG's cluster as it is, or a new one from the kit with `fake_nodes`
    (NAME:ZONE:CPUS:MEM_GI[:GPUS]), stopped and removed at the end whatever happens."""
    if os.environ.get("KUBECONFIG"):
        yield Cluster(dict(os.environ))
        return
    kit = os.environ.get(KIT_VARIABLE)
    if not kit or not (Path(kit) / "cluster.sh").is_file():
        pytest.skip(f"no Kubernetes cluster: set KUBECONFIG, or {KIT_VARIABLE} to a kit with cluster.sh")
    state = Path(tempfile.mkdtemp(prefix="k8s.", dir="/tmp"))  # short: unix sockets live there
    env = {**os.environ, "KUBECONFIG": f"{state}/kubeconfig", "KUBECACHEDIR": f"{state}/kubectl-cache"}
    made = Cluster(env, Path(kit), state)
    try:
        started = time.monotonic()
        subprocess.run([f"{kit}/cluster.sh", "up", str(state)], check=True, capture_output=True, timeout=300)
        made.timed("control plane up, CRDs installed", started)
        if fake_nodes:
            subprocess.run(
                [f"{kit}/cluster.sh", "fake-nodes", str(state), *fake_nodes],
                check=True,
                capture_output=True,
                timeout=120,
            )
            made.wait(
                lambda: len(made.json("get", "nodes")["items"]) >= len(fake_nodes), 60, "the fake nodes registering"
            )
        yield made
    finally:
        subprocess.run([f"{kit}/cluster.sh", "down", str(state)], capture_output=True, timeout=180)
        shutil.rmtree(state, ignore_errors=True)
        print(f"\nkubernetes: {', '.join(f'{stage} {seconds:.1f} s' for stage, seconds in made.timings.items())}")


@contextlib.contextmanager
def real_node(made: Cluster) -> Iterator[str]:
    """The kit's real node (kubelet + containerd), brought down at the end; yields its name."""
    if made.kit is None or made.state is None:
        pytest.skip("a real node is started only on a cluster this test starts from the kit")
    try:
        started = time.monotonic()
        subprocess.run([f"{made.kit}/node.sh", "up", str(made.state)], check=True, capture_output=True, timeout=300)
        made.timed("real node Ready", started)
        yield "real-node-1"
    finally:
        subprocess.run([f"{made.kit}/node.sh", "down", str(made.state)], capture_output=True, timeout=180)


def import_image(made: Cluster, image: str) -> None:
    assert made.kit is not None and made.state is not None
    started = time.monotonic()
    subprocess.run(
        [f"{made.kit}/node.sh", "import-image", str(made.state), image], check=True, capture_output=True, timeout=900
    )
    made.timed("image import", started)


class ServiceStandIn:
    """What kube-proxy would do for a Service, which this cluster lacks: a TCP port on the node's
    bridge address (pods reach the host there) forwarding each new connection to `target`, the
    current pod's address, which the test moves when the pod is replaced."""

    def __init__(self, host: str) -> None:
        self.target: tuple[str, int] | None = None
        self._listener = socket.create_server((host, 0))
        self._listener.settimeout(0.5)
        self.address = f"{host}:{self._listener.getsockname()[1]}"
        self._open: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="service-stand-in", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            target = self.target
            try:
                if target is None:
                    raise OSError("no endpoint")
                upstream = socket.create_connection(target, timeout=3)
            except OSError:
                client.close()  # no ready endpoint: as a Service without endpoints, refused
                continue
            upstream.settimeout(None)
            self._open |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                end.close()
                self._open.discard(end)

    def drop_connections(self) -> None:
        """End every forwarded connection, as kube-proxy's conntrack does for a pod that left."""
        for end in list(self._open):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._stopping.set()
        self._listener.close()
        self.drop_connections()
        self._thread.join(5)
