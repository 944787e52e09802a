"""The kit on a real node: the project's image in containerd, the cpu overlay with a test patch
(the bundled demo model, the imported image, one replica each, small requests), pods started by a
real kubelet, Ready by their own probes, and a Classify from the host answered correctly; then the
Triton pod deleted and replaced while the gateway answers UNAVAILABLE with a retry delay.

The cluster has no kube-proxy and no cluster DNS (../shared/kubernetes/README.md): the test patch
points the gateway at a stand-in for Triton's Service on the host (tests.support.kubernetes.
ServiceStandIn) that forwards to the Triton pod's IP, and the test moves it to the replacement pod,
as the Service's endpoints would move. Skipped, saying why, where there is no kit or no podman.
"""

from __future__ import annotations

import os
import shutil
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clip_client import NO_RETRY, ClientConfig, ClipClient, UnavailableError
from tests.support import containers, kubernetes
from tests.support.kubernetes import DEPLOY, NAMESPACE, Cluster, ServiceStandIn, ready

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "localhost/clip-serve:test"  # the container test's tag: podman reuses its layers
SAMPLE = ROOT / "models" / "samples" / "red_circle.png"
LABELS = ["red circle", "blue square", "green triangle", "yellow star"]
BRIDGE = "198.51.100.1"  # the real node's bridge address on the host (the kit's KUBE_POD_SUBNET)
API_KEY = "k1"  # Cluster.ensure_namespace's Secret


def small_node_overlay(folder: Path, triton_url: str) -> Path:
    """The cpu overlay as a user would patch it for one small node."""
    folder.mkdir(parents=True, exist_ok=True)
    cpu = os.path.relpath(DEPLOY / "cpu", folder)  # kustomize takes relative paths only
    (folder / "kustomization.yaml").write_text(
        textwrap.dedent(
            f"""\
            apiVersion: kustomize.config.k8s.io/v1beta1
            kind: Kustomization
            resources: [{cpu}]
            images:
              - {{name: registry.example.com/clip-serve, newName: localhost/clip-serve, newTag: test}}
              - {{name: clip-serve, newName: localhost/clip-serve, newTag: test}}
            patches:
              - target: {{kind: HorizontalPodAutoscaler}}
                patch: |
                  $patch: delete
                  apiVersion: autoscaling/v2
                  kind: HorizontalPodAutoscaler
                  metadata: {{name: any}}
              - target: {{kind: Deployment}}
                patch: |
                  - {{op: add, path: /spec/replicas, value: 1}}
                  - {{op: add, path: /spec/template/spec/nodeSelector, value: {{kubernetes.io/hostname: real-node-1}}}}
              - target: {{kind: Deployment, name: clip-serve-triton}}
                patch: |
                  - op: replace
                    path: /spec/template/spec/containers/0/resources
                    value: {{requests: {{cpu: 100m, memory: 256Mi}}, limits: {{memory: 6Gi}}}}
                  - op: replace
                    path: /spec/template/spec/initContainers/0/resources
                    value: {{requests: {{cpu: 100m, memory: 256Mi}}, limits: {{memory: 6Gi}}}}
                  - op: add
                    path: /spec/template/spec/containers/0/imagePullPolicy
                    value: Never
                  - op: add
                    path: /spec/template/spec/initContainers/0/imagePullPolicy
                    value: Never
              - target: {{kind: Deployment, name: clip-serve-gateway}}
                patch: |
                  - op: replace
                    path: /spec/template/spec/containers/0/resources
                    value: {{requests: {{cpu: 100m, memory: 128Mi}}, limits: {{memory: 2Gi}}}}
                  - op: add
                    path: /spec/template/spec/containers/0/imagePullPolicy
                    value: Never
              - target: {{kind: ConfigMap, name: clip-serve-model}}
                patch: |
                  - {{op: replace, path: /data/CLIP_MODEL, value: /app/models/clip-demo}}
                  - {{op: replace, path: /data/CLIP_PRECISION, value: fp32}}
                  - {{op: add, path: /data/CLIP_SERVE_COMPILE, value: none}}
              - target: {{kind: ConfigMap, name: clip-serve-gateway}}
                patch: |
                  - {{op: replace, path: /data/CLIP_GATEWAY_TRITON_URL, value: "{triton_url}"}}
            """
        )
    )
    return folder


@pytest.fixture(scope="module")
def node_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if shutil.which("podman") is None:
        pytest.skip("podman is needed to build the image for the real node")
    with kubernetes.cluster() as made, kubernetes.real_node(made):
        work = tmp_path_factory.mktemp("kubernetes-node")
        started = time.monotonic()
        containers.build_base(work)
        containers.build(IMAGE, ROOT / "Dockerfile", ROOT, work / "build.log", "TORCH_INDEX_URL=", "REVISION=test")
        made.timed("image build", started)
        kubernetes.import_image(made, IMAGE)
        yield made


def pod_ip(cluster: Cluster, component: str) -> str:
    (pod,) = [pod for pod in cluster.pods(component) if ready(pod)]
    return str(pod["status"]["podIP"])


def classify(target: str) -> str:
    config = ClientConfig(target=target, api_key=API_KEY, retry=NO_RETRY, timeout=30)
    with ClipClient(config=config) as client:
        return client.classify(SAMPLE, LABELS)[0].top.label


def test_the_kit_serves_on_a_real_node_and_survives_losing_its_triton(node_cluster: Cluster, tmp_path: Path) -> None:
    cluster = node_cluster
    service = ServiceStandIn(BRIDGE)
    overlay = small_node_overlay(tmp_path / "overlay", service.address)
    try:
        cluster.ensure_namespace()
        started = time.monotonic()
        cluster.apply(overlay)
        cluster.wait(lambda: any(ready(p) for p in cluster.pods("triton")), 600, "Triton Ready (export, then start)")
        cluster.timed("export and Triton Ready", started)
        service.target = (pod_ip(cluster, "triton"), 8001)
        cluster.wait(lambda: any(ready(p) for p in cluster.pods("gateway")), 300, "the gateway Ready")
        cluster.timed("pods Ready", started)
        gateway = f"{pod_ip(cluster, 'gateway')}:50051"
        started = time.monotonic()
        assert cluster.wait(lambda: classify_or_none(gateway), 120, "a Classify answered") == "red circle"
        cluster.timed("first Classify", started)

        old = [p["metadata"]["name"] for p in cluster.pods("triton")]
        started = time.monotonic()
        cluster.kubectl("-n", NAMESPACE, "delete", "pod", *old, "--wait=false")
        unavailable = cluster.wait(lambda: unavailable_or_none(gateway), 120, "the gateway answering UNAVAILABLE")
        assert unavailable.retry_after is not None and unavailable.retry_after > 0  # with a retry delay
        assert any(ready(p) for p in cluster.pods("gateway"))  # it stays in its Service, answering
        cluster.timed("UNAVAILABLE after the delete", started)
        replacement = cluster.wait(
            lambda: [p for p in cluster.pods("triton") if ready(p) and p["metadata"]["name"] not in old],
            600,
            "a replacement Triton Ready",
        )
        cluster.timed("replacement Triton Ready", started)
        service.target = (str(replacement[0]["status"]["podIP"]), 8001)  # the Service's endpoints move
        service.drop_connections()
        assert cluster.wait(lambda: classify_or_none(gateway), 120, "Classify answered again") == "red circle"
        cluster.timed("serving again after the delete", started)
    finally:
        cluster.delete(overlay)
        service.close()


def classify_or_none(gateway: str) -> str | None:
    try:
        return classify(gateway)
    except UnavailableError:
        return None


def unavailable_or_none(gateway: str) -> UnavailableError | None:
    try:
        classify(gateway)
    except UnavailableError as error:
        return error
    return None
