"""The Kubernetes kit against a real API server, scheduler and controller manager.

The cluster is the one KUBECONFIG names when it is set; otherwise one this module starts from the
kit of binaries that CLIP_KUBERNETES_KIT names (scripts/test.sh points it at ../shared/kubernetes:
etcd, kube-apiserver, kube-controller-manager and kube-scheduler on loopback, the CRDs the kit
uses, and fake nodes whose bound pods turn Running). With neither, the module is skipped, saying
so: the one documented exception to the rule that tests do not skip (docs/testing.md).

Every overlay is applied as `kubectl apply --server-side --validate=strict`, applied again (nothing
may change), and deleted; then, on fake nodes in two zones with one GPU each, the scheduler, the
disruption controller and the HPA controller meet the cpu and gpu overlays for real.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.support import kubernetes
from tests.support.kubernetes import DEPLOY, NAMESPACE, SECRET, Cluster, ready

OVERLAYS = ("cpu", "gpu", "cpu-keda", "cpu-object-storage", "kserve")
# Two CPU nodes and two GPU nodes (one GPU each), a CPU and a GPU node per zone.
FAKE_NODES = ("cpu-a:zone-a:8:32", "cpu-b:zone-b:8:32", "gpu-a:zone-a:16:64:1", "gpu-b:zone-b:16:64:1")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with kubernetes.cluster(*FAKE_NODES) as made:
        yield made


def apply(cluster: Cluster, overlay: str) -> None:
    cluster.apply(DEPLOY / overlay, "--validate=strict")


def names(cluster: Cluster, overlay: str) -> set[str]:
    """kind/namespace/name of every object the overlay renders, as the API server holds them."""
    listed = cluster.json("get", "-k", str(DEPLOY / overlay))
    return {
        f"{item['kind']}/{item['metadata'].get('namespace', '')}/{item['metadata']['name']}"
        for item in listed.get("items", [listed])
    }


def pending_changes(cluster: Cluster, overlay: str) -> str:
    """What another server-side apply of the overlay would change, as `kubectl diff` prints it
    (empty: nothing). A dry run, so the controllers' own writes (HPA status, the HPA's scale of
    its Deployment) cannot race it the way comparing versions before and after an apply did."""
    result = cluster.kubectl(
        "diff", "--server-side", f"--field-manager={kubernetes.MANAGER}", "-k", str(DEPLOY / overlay), check=False
    )
    assert result.returncode in (0, 1), f"kubectl diff failed ({result.returncode}): {result.stderr[-2000:]}"
    return result.stdout


def delete(cluster: Cluster, overlay: str) -> None:
    cluster.delete(DEPLOY / overlay)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_an_overlay_applies_server_side_and_a_second_apply_changes_nothing(cluster: Cluster, overlay: str) -> None:
    cluster.ensure_namespace()
    started = time.monotonic()
    apply(cluster, overlay)
    cluster.timed(f"apply {overlay}", started)
    rendered = names(cluster, overlay)
    changes = pending_changes(cluster, overlay)
    assert not changes, f"a second apply of {overlay} would change:\n{changes[-3000:]}"
    apply(cluster, overlay)  # and it goes through: no field conflicts with the first
    assert names(cluster, overlay) == rendered
    delete(cluster, overlay)
    assert cluster.kubectl("-n", NAMESPACE, "get", "secret", SECRET, check=False).returncode == 0, (
        f"kubectl delete -k {overlay} deleted the user's API-key Secret"
    )


def zone_of(cluster: Cluster, node: str) -> str:
    return str(cluster.json("get", "node", node)["metadata"]["labels"]["topology.kubernetes.io/zone"])


@pytest.fixture(scope="module")
def cpu_kit(cluster: Cluster) -> Iterator[Cluster]:
    cluster.ensure_namespace()
    apply(cluster, "cpu")
    try:
        yield cluster
    finally:
        delete(cluster, "cpu")


def test_triton_is_spread_across_zones(cpu_kit: Cluster) -> None:
    """The HPA raises the Deployment to its minimum (2); topology spread puts them in two zones."""
    running = cpu_kit.wait(
        lambda: (found := [p for p in cpu_kit.pods("triton") if ready(p)]) and len(found) >= 2 and found,
        120,
        "two Triton pods Running",
    )
    zones = {zone_of(cpu_kit, pod["spec"]["nodeName"]) for pod in running}
    assert zones == {"zone-a", "zone-b"}
    assert all(pod["spec"]["nodeName"].startswith("cpu-") for pod in running)  # no CPU pod on a GPU node


def test_an_hpa_scaled_deployment_keeps_its_count_across_a_reapply(cpu_kit: Cluster) -> None:
    deployment = "deployment/clip-serve-triton"
    cpu_kit.kubectl("-n", NAMESPACE, "scale", deployment, "--replicas=3")
    apply(cpu_kit, "cpu")
    replicas = cpu_kit.json("-n", NAMESPACE, "get", deployment)["spec"]["replicas"]
    assert replicas == 3, f"a re-apply reset the HPA's count to {replicas}"


def test_the_pdb_allows_one_eviction_and_refuses_the_second(cpu_kit: Cluster) -> None:
    cpu_kit.wait(
        lambda: cpu_kit.json("-n", NAMESPACE, "get", "pdb", "clip-serve-triton")["status"].get("disruptionsAllowed"),
        120,
        "the Triton PDB allowing a disruption",
    )
    names = [pod["metadata"]["name"] for pod in cpu_kit.pods("triton") if ready(pod)]
    assert len(names) >= 2

    def evict(name: str) -> subprocess.CompletedProcess[str]:
        eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": NAMESPACE}}
        return cpu_kit.kubectl(
            "create",
            "--raw",
            f"/api/v1/namespaces/{NAMESPACE}/pods/{name}/eviction",
            "-f",
            "-",
            check=False,
            input=json.dumps(eviction),
        )

    first = evict(names[0])
    assert first.returncode == 0, first.stderr
    second = evict(names[1])
    assert second.returncode != 0 and "disruption budget" in second.stderr, second.stderr


def test_every_hpa_is_accepted_and_names_the_metric_it_waits_for(cpu_kit: Cluster) -> None:
    """No metrics pipeline here: each HPA reports, as a condition, the metric it cannot get yet."""

    def reported() -> dict[str, str] | None:
        found = {}
        for hpa in cpu_kit.json("-n", NAMESPACE, "get", "hpa")["items"]:
            conditions = {c["type"]: c for c in hpa.get("status", {}).get("conditions", [])}
            if "ScalingActive" not in conditions:
                return None
            found[hpa["metadata"]["name"]] = conditions["ScalingActive"]["message"]
        return found or None

    messages = cpu_kit.wait(reported, 120, "every HPA reporting ScalingActive")
    assert "clip_triton_queue_us_per_request" in messages["clip-serve-triton"]
    assert "cpu" in messages["clip-serve-gateway"]


def test_pod_security_restricted_is_enforced_and_every_pod_is_admitted(cpu_kit: Cluster) -> None:
    labels = cpu_kit.json("get", "namespace", NAMESPACE)["metadata"].get("labels", {})
    assert labels.get("pod-security.kubernetes.io/enforce") == "restricted"
    for replica_set in cpu_kit.json("-n", NAMESPACE, "get", "replicasets")["items"]:
        failures = [c for c in replica_set.get("status", {}).get("conditions", []) if c["type"] == "ReplicaFailure"]
        assert not failures, f"{replica_set['metadata']['name']}: {failures}"
    privileged = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "privileged-probe", "namespace": NAMESPACE},
        "spec": {"containers": [{"name": "c", "image": "example.com/x:1", "securityContext": {"privileged": True}}]},
    }
    refused = cpu_kit.kubectl("create", "--dry-run=server", "-f", "-", check=False, input=json.dumps(privileged))
    assert refused.returncode != 0 and "violates PodSecurity" in refused.stderr, refused.stderr


def test_gpu_pods_land_on_gpu_nodes_and_a_rollout_with_every_gpu_taken_completes(cluster: Cluster) -> None:
    cluster.ensure_namespace()
    delete(cluster, "cpu")  # the cpu overlay's objects have the same names
    apply(cluster, "gpu")
    try:
        running = cluster.wait(
            lambda: (
                (found := [p for p in cluster.pods("triton") if ready(p) and p["spec"]["nodeName"].startswith("gpu-")])
                and len(found) >= 2
                and found
            ),
            120,
            "two GPU Triton pods Running",
        )
        assert {pod["spec"]["nodeName"] for pod in running} == {"gpu-a", "gpu-b"}  # both GPUs taken
        started = time.monotonic()
        cluster.kubectl("-n", NAMESPACE, "rollout", "restart", "deployment/clip-serve-triton")
        cluster.kubectl("-n", NAMESPACE, "rollout", "status", "deployment/clip-serve-triton", "--timeout=180s")
        cluster.timed("gpu rollout with every GPU taken", started)
    finally:
        delete(cluster, "gpu")
