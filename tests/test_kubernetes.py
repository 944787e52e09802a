"""The Kubernetes kit (deploy/kubernetes), checked without a cluster: every variant renders with
kustomize; every object validates against the Kubernetes 1.30 schemas, and every custom resource
against its CRD's schema (vendored in tests/kubernetes/crd_schemas, sources and licences in its
index.json); the manifests agree with the code (arguments the programs accept, probe paths that
answer on running servers, metrics that exist, ports that match); the scaling rule passes
`promtool test rules`; and the numbers in the manifests agree with the committed measurements."""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from gateway import config as gateway_config_module
from launcher.cli import parse_args as launcher_args
from serve.cli import parse_args as serve_args
from tests.support import servers
from tests.support.images import SMALL_JPEG
from tests.support.infer import bytes_input
from tests.support.servers import SERVING, GatewayProcess, LauncherTriton

ROOT = Path(__file__).resolve().parents[1]
KIT = ROOT / "deploy" / "kubernetes"
VARIANTS = ("cpu", "gpu", "cpu-keda", "cpu-object-storage", "kserve")
NAMESPACE_KIT = "namespace"  # applied once, before any variant; in none of them
NAMESPACE = "clip-serve"
KUBERNETES_VERSION = "1.30.0"
CRD_SCHEMAS = Path(__file__).parent / "kubernetes" / "crd_schemas"
SIZING = ROOT / "bench" / "results" / "sizing_avx512bf16_2core_fp32.json"
SCALING_TARGET_US = 100_000


@functools.cache
def rendered(variant: str) -> tuple[dict[str, Any], ...]:
    # on PATH, or where scripts/setup.sh installs it when PATH has none: beside this interpreter
    kubectl = shutil.which("kubectl") or shutil.which("kubectl", path=str(Path(sys.executable).parent))
    assert kubectl, "kubectl (with its built-in kustomize) is needed to render the kit: run scripts/setup.sh"
    output = subprocess.run([kubectl, "kustomize", str(KIT / variant)], capture_output=True, text=True, check=True)
    return tuple(doc for doc in yaml.safe_load_all(output.stdout) if doc)


def objects(kind: str | None = None, variants: tuple[str, ...] = VARIANTS) -> Iterator[tuple[str, dict[str, Any]]]:
    for variant in variants:
        for doc in rendered(variant):
            if kind is None or doc["kind"] == kind:
                yield variant, doc


def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    index = json.loads((CRD_SCHEMAS / "index.json").read_text())
    return {
        (entry["apiVersion"], entry["kind"]): json.loads((CRD_SCHEMAS / entry["file"]).read_text()) for entry in index
    }


def validate_custom(doc: dict[str, Any], schema: dict[str, Any]) -> None:
    """A custom resource against its CRD's openAPIV3Schema. The schema itself is not checked: its
    patterns are Go regular expressions, some of which Python's re does not take (they apply only
    to fields the kit does not set)."""
    error = jsonschema.exceptions.best_match(jsonschema.Draft7Validator(schema).iter_errors(doc))
    if error is not None:
        raise error


def pod_specs(variants: tuple[str, ...] = VARIANTS) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(variant, name, pod spec) of every Deployment and of KServe's ServingRuntime."""
    for variant, doc in objects(variants=variants):
        if doc["kind"] == "Deployment":
            yield variant, doc["metadata"]["name"], doc["spec"]["template"]["spec"]
        elif doc["kind"] == "ServingRuntime":
            yield variant, doc["metadata"]["name"], doc["spec"]


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


# -- rendering and schemas --------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_renders(variant: str) -> None:
    kinds = {doc["kind"] for doc in rendered(variant)}
    assert {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"} <= kinds


@pytest.mark.parametrize("variant", (*VARIANTS, NAMESPACE_KIT))
def test_builtin_objects_validate_against_kubernetes_1_30(variant: str) -> None:
    custom = {kind for _, kind in crd_schemas()}
    for doc in rendered(variant):
        if doc["kind"] not in custom:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_custom_resources_validate_against_their_crds(variant: str) -> None:
    schemas = crd_schemas()
    for doc in rendered(variant):
        schema = schemas.get((doc["apiVersion"], doc["kind"]))
        if schema is not None:
            validate_custom(doc, schema)


def test_the_custom_resources_the_kit_uses_are_all_checked() -> None:
    used = {(doc["apiVersion"], doc["kind"]) for _, doc in objects() if "." in doc["apiVersion"].split("/")[0]}
    builtin_groups = ("apps", "policy", "autoscaling", "networking.k8s.io")
    used = {entry for entry in used if entry[0].split("/")[0] not in builtin_groups}
    assert used <= set(crd_schemas()), used - set(crd_schemas())
    assert {kind for _, kind in used} == {
        "PodMonitor",
        "ServiceMonitor",
        "PrometheusRule",
        "ScaledObject",
        "ServingRuntime",
        "InferenceService",
    }


def test_the_schema_checks_can_fail() -> None:
    deployment = next(doc for _, doc in objects("Deployment", ("cpu",)))
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    scaled = next(doc for _, doc in objects("ScaledObject", ("cpu-keda",)))
    broken = json.loads(json.dumps(scaled))
    broken["spec"]["triggers"] = "prometheus"
    with pytest.raises(jsonschema.ValidationError):
        validate_custom(broken, crd_schemas()[("keda.sh/v1alpha1", "ScaledObject")])


# -- the manifests agree with the code ---------------------------------------------------------


def expanded(args: list[str], env: dict[str, str]) -> list[str]:
    """Kubernetes' $(VAR) expansion in container arguments."""
    return [re.sub(r"\$\((\w+)\)", lambda match: env.get(match.group(1), match.group(0)), arg) for arg in args]


def container_env(variant: str, container: dict[str, Any]) -> dict[str, str]:
    """What envFrom ConfigMaps and env give a container (Secrets are the user's)."""
    config_maps = {doc["metadata"]["name"]: doc.get("data", {}) for _, doc in objects("ConfigMap", (variant,))}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(config_maps[source["configMapRef"]["name"]])
    env.update({item["name"]: item.get("value", "") for item in container.get("env", [])})
    return env


def check_arguments(argv: list[str], env: dict[str, str]) -> None:
    """Parse `argv` (a `python -m <program> ...` command) with that program's own parser."""
    assert argv[:2] == ["python", "-m"], argv
    program, rest = argv[2], argv[3:]
    unexpanded = [arg for arg in rest if "$(" in arg]
    assert not unexpanded, f"no value for {unexpanded}"
    if program == "launcher":
        launcher_args(rest)
    elif program == "serve":
        serve_args(rest, {})
    elif program == "gateway":
        unknown = [name for name in env if name.startswith("CLIP_GATEWAY_") and not known_gateway_setting(name)]
        assert not unknown, f"settings the gateway does not have: {unknown}"
        gateway_config_module.parse(rest, env)
    else:
        raise AssertionError(f"unknown program {program}")


def known_gateway_setting(variable: str) -> bool:
    import dataclasses

    names = {
        field.name
        for cls in (gateway_config_module.GatewayConfig, gateway_config_module.Limits)
        for field in dataclasses.fields(cls)
    }
    return variable.removeprefix(gateway_config_module.ENV_PREFIX).lower() in names


def test_every_container_argument_is_accepted_by_its_program() -> None:
    checked = 0
    for variant, _, spec in pod_specs():
        for container in containers(spec):
            env = container_env(variant, container)
            check_arguments(expanded(container["args"], env), env)
            checked += 1
    assert checked >= 10
    with pytest.raises(SystemExit):  # the check can fail
        check_arguments(["python", "-m", "launcher", "--no-such-flag"], {})


def test_ports_match_between_programs_services_and_monitors() -> None:
    for variant in VARIANTS:
        docs = rendered(variant)
        pods = {name: spec for v, name, spec in pod_specs((variant,))}
        for name, spec in pods.items():
            for container in spec["containers"]:
                ports = {port.get("name"): port["containerPort"] for port in container.get("ports", [])}
                args = container["args"]
                # KServe exposes one port per runtime container: only the gRPC one is declared there.
                flags = (
                    ("--grpc-port",)
                    if name == "clip-serve-triton" and variant == "kserve"
                    else ("--grpc-port", "--http-port", "--metrics-port")
                )
                for flag in flags:
                    if flag in args:
                        assert int(args[args.index(flag) + 1]) in ports.values(), (variant, name, flag)
                env = container_env(variant, container)
                for key in ("CLIP_GATEWAY_LISTEN", "CLIP_GATEWAY_HTTP_LISTEN", "CLIP_GATEWAY_METRICS_LISTEN"):
                    if key in env:
                        assert int(env[key].rsplit(":", 1)[1]) in ports.values(), (variant, key)
                listening = {int(args[args.index(flag) + 1]) for flag in flags if flag in args}
                for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                    action = container.get(probe, {})
                    port = (action.get("httpGet") or action.get("grpc") or {}).get("port")
                    if port is not None:
                        known = {*ports, *ports.values(), *listening}
                        assert port in known or int(args[args.index("--http-port") + 1]) == port, (
                            variant,
                            name,
                            probe,
                            port,
                        )
        container_ports = {
            (frozenset(doc["spec"]["template"]["metadata"]["labels"].items()), port.get("name"))
            for doc in docs
            if doc["kind"] == "Deployment"
            for container in doc["spec"]["template"]["spec"]["containers"]
            for port in container.get("ports", [])
        }
        for doc in docs:
            if doc["kind"] == "Service" and "serving.kserve.io/inferenceservice" not in doc["spec"]["selector"]:
                selector = doc["spec"]["selector"].items()
                for port in doc["spec"]["ports"]:
                    target = port["targetPort"]
                    assert any(labels >= selector and name == target for labels, name in container_ports), (
                        variant,
                        doc["metadata"]["name"],
                        target,
                    )
        service_ports = {port["name"] for doc in docs if doc["kind"] == "Service" for port in doc["spec"]["ports"]}
        for doc in docs:
            if doc["kind"] == "ServiceMonitor":
                assert {endpoint["port"] for endpoint in doc["spec"]["endpoints"]} <= service_ports
            if doc["kind"] == "PodMonitor":
                assert {endpoint["port"] for endpoint in doc["spec"]["podMetricsEndpoints"]} <= {
                    name for _, name in container_ports
                }


@pytest.fixture(scope="module")
def running(
    tiny_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LauncherTriton, GatewayProcess]]:
    """A Triton and a gateway as the kit runs them (launcher; gateway with its HTTP API)."""
    logs = tmp_path_factory.mktemp("kubernetes")
    with servers.triton(tiny_repository, logs) as triton:
        gateway = GatewayProcess(triton.grpc_url, logs, "--http-listen=127.0.0.1:0")
        try:
            yield triton, gateway
        finally:
            gateway.stop()


def test_every_probe_answers_on_running_servers(running: tuple[LauncherTriton, GatewayProcess]) -> None:
    triton, gateway = running
    # SERVING comes a moment before the "gateway listening" line that names the HTTP port.
    gateway.process.wait_for_log('"http_port"', timeout=30)
    http_port = int(re.search(r'"http_port": (\d+)', gateway.process.log()).group(1))  # type: ignore[union-attr]
    ports = {
        ("triton", "http"): triton.http_port,
        ("triton", 8080): triton.http_port,  # KServe's runtime: Triton's HTTP port by number
        ("gateway", "http"): http_port,
        ("gateway", 50051): gateway.port,
    }
    checked = set()
    for _, name, spec in pod_specs(("cpu", "gpu", "kserve")):
        role = "gateway" if "gateway" in name else "triton"
        for container in spec["containers"]:
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                action = container.get(probe)
                if not action:
                    continue
                if "httpGet" in action:
                    port = ports[(role, action["httpGet"]["port"])]
                    url = f"http://127.0.0.1:{port}{action['httpGet']['path']}"
                    with urllib.request.urlopen(url, timeout=10) as response:
                        assert response.status == 200, url
                    checked.add(url.split(str(port))[1])
                elif "grpc" in action:
                    assert servers.health(gateway.target, action["grpc"].get("service", "")) == SERVING
                    checked.add("grpc.health.v1")
                elif "exec" in action:
                    command = action["exec"]["command"]
                    assert command[:3] == ["python", "-m", "launcher.healthcheck"], (name, probe, command)
                    args = container["args"]
                    assert command[3] == f"http://localhost:{args[args.index('--http-port') + 1]}", (name, command)
                    url = re.sub(r":(8000|8080)$", f":{triton.http_port}", command[3])
                    done = subprocess.run([sys.executable, "-m", "launcher.healthcheck", url], capture_output=True)
                    assert done.returncode == 0, (name, probe, done.stderr)
                    checked.add("launcher.healthcheck")
    # The gateway's readiness is its own /v1/health/live (no probe follows Triton through gRPC health).
    assert checked == {"launcher.healthcheck", "/v2/health/live", "/v1/health/live"}


def scaling_queries() -> list[str]:
    """Every PromQL expression the HPA's adapter rule, the recording rule and KEDA evaluate."""
    queries = []
    for _, doc in objects("PrometheusRule", ("cpu",)):
        queries += [rule["expr"] for group in doc["spec"]["groups"] for rule in group["rules"]]
    for _, doc in objects("ConfigMap", ("cpu",)):
        if doc["metadata"]["name"] == "clip-serve-prometheus-adapter-rules":
            for rule in yaml.safe_load(doc["data"]["config.yaml"])["rules"]:
                queries += [rule["seriesQuery"], rule["metricsQuery"]]
    for _, doc in objects("ScaledObject", ("cpu-keda",)):
        queries += [trigger["metadata"]["query"] for trigger in doc["spec"]["triggers"]]
    return queries


def test_every_metric_the_scaling_queries_use_exists(running: tuple[LauncherTriton, GatewayProcess]) -> None:
    triton, _ = running
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(triton.grpc_url) as client:  # so that the encoder has series
        client.infer("clip_embed_image", [bytes_input("IMAGE", [SMALL_JPEG])])
    exposed = servers.scrape(triton.metrics_url)
    names = {name for query in scaling_queries() for name in re.findall(r"\b(nv_[a-z_]+|clip_[a-z_]+)\b", query)}
    names -= {"clip_image_encoder"}  # a label value, not a metric
    assert names == {"nv_inference_queue_duration_us", "nv_inference_request_success"}
    for name in names:
        assert any(metric == name and ("model", "clip_image_encoder") in labels for metric, labels in exposed), name


def test_the_three_scaling_definitions_share_one_expression_and_target() -> None:
    def core(query: str) -> str:
        return re.sub(r"\s+|<<\.\w+>>|sum by \([^)]*\)|sum|,?namespace=\"clip-serve\"|\{[^}]*\}", "", query)

    rule = next(q for q in scaling_queries() if "clamp_min" in q and "(namespace, pod)" in q)
    adapter = next(q for q in scaling_queries() if "<<.LabelMatchers>>" in q)
    keda = next(q for q in scaling_queries() if 'namespace="clip-serve"' in q)
    assert core(rule) == core(adapter) == core(keda)
    hpa = next(
        doc for _, doc in objects("HorizontalPodAutoscaler", ("cpu",)) if doc["metadata"]["name"] == "clip-serve-triton"
    )
    assert int(hpa["spec"]["metrics"][0]["pods"]["target"]["averageValue"]) == SCALING_TARGET_US
    scaled = next(doc for _, doc in objects("ScaledObject", ("cpu-keda",)))
    assert int(scaled["spec"]["triggers"][0]["metadata"]["threshold"]) == SCALING_TARGET_US
    alert = next(q for q in scaling_queries() if q.startswith("avg by"))
    assert alert.endswith(f"> {SCALING_TARGET_US}")


PROMTOOL_TESTS = """
rule_files: [rules.yaml]
evaluation_interval: 15s
tests:
  # Pod a: 10 requests/s that each wait 200 ms in queue (saturated); pod b: idle.
  - interval: 15s
    input_series:
      - series: 'nv_inference_queue_duration_us{model="clip_image_encoder",namespace="clip-serve",pod="a"}'
        values: '0+30000000x60'
      - series: 'nv_inference_request_success{model="clip_image_encoder",namespace="clip-serve",pod="a"}'
        values: '0+150x60'
      - series: 'nv_inference_queue_duration_us{model="clip_image_encoder",namespace="clip-serve",pod="b"}'
        values: '0x60'
      - series: 'nv_inference_request_success{model="clip_image_encoder",namespace="clip-serve",pod="b"}'
        values: '0x60'
    promql_expr_test:
      - expr: 'clip:triton_queue_us_per_request:rate1m > TARGET'
        eval_time: 5m
        exp_samples:
          - labels: 'clip:triton_queue_us_per_request:rate1m{namespace="clip-serve",pod="a"}'
            value: 200000
      - expr: 'clip:triton_queue_us_per_request:rate1m < TARGET'
        eval_time: 5m
        exp_samples:
          - labels: 'clip:triton_queue_us_per_request:rate1m{namespace="clip-serve",pod="b"}'
            value: 0
  # Rising load: idle for 4 minutes, then 10 requests/s waiting 200 ms each. The recorded value
  # crosses the target; the alert fires once it has stayed above for 10 minutes, and never for
  # an idle namespace.
  - interval: 15s
    input_series:
      - series: 'nv_inference_queue_duration_us{model="clip_image_encoder",namespace="clip-serve",pod="a"}'
        values: '0x16 0+30000000x120'
      - series: 'nv_inference_request_success{model="clip_image_encoder",namespace="clip-serve",pod="a"}'
        values: '0+150x136'
      - series: 'nv_inference_queue_duration_us{model="clip_image_encoder",namespace="idle",pod="c"}'
        values: '0x136'
      - series: 'nv_inference_request_success{model="clip_image_encoder",namespace="idle",pod="c"}'
        values: '0x136'
    promql_expr_test:
      - expr: 'clip:triton_queue_us_per_request:rate1m{pod="a"} < TARGET'
        eval_time: 3m
        exp_samples:
          - labels: 'clip:triton_queue_us_per_request:rate1m{namespace="clip-serve",pod="a"}'
            value: 0
      - expr: 'clip:triton_queue_us_per_request:rate1m{pod="a"} > TARGET'
        eval_time: 8m
        exp_samples:
          - labels: 'clip:triton_queue_us_per_request:rate1m{namespace="clip-serve",pod="a"}'
            value: 200000
    alert_rule_test:
      - eval_time: 10m
        alertname: ClipServeTritonQueueing
        exp_alerts: []
      - eval_time: 20m
        alertname: ClipServeTritonQueueing
        exp_alerts:
          - exp_labels: {severity: warning, namespace: clip-serve}
            exp_annotations: {summary: SUMMARY}
"""


def test_the_scaling_rule_passes_promtool(tmp_path: Path) -> None:
    rule = next(doc for _, doc in objects("PrometheusRule", ("cpu",)))
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    alert = next(rule for group in rule["spec"]["groups"] for rule in group["rules"] if "alert" in rule)
    tests = PROMTOOL_TESTS.replace("TARGET", str(SCALING_TARGET_US))
    (tmp_path / "tests.yaml").write_text(tests.replace("SUMMARY", json.dumps(alert["annotations"]["summary"])))
    done = subprocess.run(["promtool", "test", "rules", "tests.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


# -- numbers from measurements ------------------------------------------------------------------


def quantity_bytes(text: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    return float(text[:-2]) * units[text[-2:]] if text[-2:] in units else float(text)


def test_probes_resources_and_target_agree_with_the_measurements() -> None:
    sizing = json.loads(SIZING.read_text())
    triton = next(doc for _, doc in objects("Deployment", ("cpu",)) if doc["metadata"]["name"] == "clip-serve-triton")
    spec = triton["spec"]["template"]["spec"]
    container = next(c for c in spec["containers"] if c["name"] == "triton")
    startup = container["startupProbe"]
    # The startup budget covers the measured start with a wide margin (cold caches, slower nodes).
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 20 * sizing["triton_ready_s_median"]
    memory = container["resources"]
    assert quantity_bytes(memory["requests"]["memory"]) >= sizing["triton_rss_sum_gib"] * 2**30
    shm = next(volume for volume in spec["volumes"] if volume["name"] == "shm")["emptyDir"]
    assert shm["medium"] == "Memory" and quantity_bytes(shm["sizeLimit"]) >= 2 * sizing["dev_shm_mib"] * 2**20
    # The target lies between an unloaded replica's queue time and a saturated one's.
    idle = sizing["load"][0]["queue_ms_per_request"] * 1000
    saturated = min(row["queue_ms_per_request"] for row in sizing["load"][1:]) * 1000
    assert idle < SCALING_TARGET_US < saturated


def test_pods_run_as_non_root_with_no_privileges() -> None:
    for variant, name, spec in pod_specs():
        pod = spec.get("securityContext", {})
        for container in containers(spec):
            security = container.get("securityContext", {})
            assert pod.get("runAsNonRoot") or security.get("runAsNonRoot"), (variant, name)
            assert security["allowPrivilegeEscalation"] is False, (variant, name, container["name"])
            assert security["capabilities"]["drop"] == ["ALL"]
            assert security["readOnlyRootFilesystem"] is True


def test_the_gateway_pods_find_every_triton_through_the_headless_service() -> None:
    for variant in ("cpu", "gpu", "kserve"):
        url = next(
            doc["data"]["CLIP_GATEWAY_TRITON_URL"]
            for _, doc in objects("ConfigMap", (variant,))
            if doc["metadata"]["name"] == "clip-serve-gateway"
        )
        host = url.removeprefix("dns:///").split(":")[0]
        headless = [doc for doc in rendered(variant) if doc["kind"] == "Service" and doc["metadata"]["name"] == host]
        assert url.startswith("dns:///") and headless and headless[0]["spec"]["clusterIP"] == "None", variant


# -- defects found when the kit met a real cluster (docs/kubernetes.md lists them) ---------------


def pod_templates(variants: tuple[str, ...] = VARIANTS) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(variant, kind/name, pod-level spec) of every pod the kit defines: the Deployments' templates
    and KServe's InferenceService predictor (the ServingRuntime adds only containers and volumes)."""
    for variant, doc in objects(variants=variants):
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] == "Deployment":
            yield variant, name, doc["spec"]["template"]["spec"]
        elif doc["kind"] == "InferenceService":
            yield variant, name, doc["spec"]["predictor"]


def test_every_volume_is_mounted_and_every_mount_has_its_volume() -> None:
    """A strategic-merge `$patch: delete` on volumeMounts keyed by name (they merge on mountPath)
    left the object-storage Triton with `volumeMounts: []`: /tmp and /dev/shm were gone."""
    for variant, name, spec in pod_specs():
        volumes = {volume["name"] for volume in spec.get("volumes", [])}
        mounted = {mount["name"] for c in containers(spec) for mount in c.get("volumeMounts", [])}
        assert mounted <= volumes, (variant, name, mounted - volumes)
        if variant != "kserve":  # KServe mounts its own volumes (/mnt/models) into the runtime
            assert volumes <= mounted, (variant, name, volumes - mounted)
    triton = next(spec for v, name, spec in pod_specs(("cpu-object-storage",)) if name == "clip-serve-triton")
    container = next(c for c in triton["containers"] if c["name"] == "triton")
    paths = {mount["mountPath"] for mount in container["volumeMounts"]}
    assert paths == {"/tmp", "/dev/shm"}, paths
    assert not triton.get("initContainers")
    assert "--hang-timeout" in container["args"]  # the args the component replaces keep the base's


def autoscaled() -> dict[str, set[str]]:
    """variant -> names of the Deployments an HPA or a KEDA ScaledObject scales."""
    found: dict[str, set[str]] = {variant: set() for variant in VARIANTS}
    for variant, doc in objects():
        if (doc["kind"] == "HorizontalPodAutoscaler" and doc["spec"]["scaleTargetRef"]["kind"] == "Deployment") or (
            doc["kind"] == "ScaledObject" and doc["spec"]["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
        ):
            found[variant].add(doc["spec"]["scaleTargetRef"]["name"])
    return found


def test_no_deployment_an_autoscaler_owns_sets_replicas() -> None:
    """`replicas: 2` beside an HPA: a re-apply reset the HPA's count, and server-side apply
    conflicted with the HPA controller over .spec.replicas."""
    owned = autoscaled()
    for variant, doc in objects("Deployment"):
        name = doc["metadata"]["name"]
        assert name in owned[variant], f"{variant}: Deployment {name} has no HPA or ScaledObject"
        assert "replicas" not in doc["spec"], f"{variant}: Deployment {name} sets replicas beside its autoscaler"
    # and the floor each autoscaler keeps is the kit's two replicas
    for variant, doc in objects():
        if doc["kind"] == "HorizontalPodAutoscaler":
            assert doc["spec"]["minReplicas"] >= 2, (variant, doc["metadata"]["name"])
        elif doc["kind"] == "ScaledObject":
            assert doc["spec"]["minReplicaCount"] >= 2, (variant, doc["metadata"]["name"])


def test_every_pdb_lets_unhealthy_pods_be_evicted() -> None:
    """With the default policy a crash-looping pod, counted against a spent budget, blocked drains."""
    pdbs = list(objects("PodDisruptionBudget"))
    assert len(pdbs) >= 9
    for variant, doc in pdbs:
        assert doc["spec"].get("unhealthyPodEvictionPolicy") == "AlwaysAllow", (variant, doc["metadata"]["name"])


def test_no_pod_gets_a_service_account_token() -> None:
    """Nothing in the pods calls the Kubernetes API; a mounted token is only something to steal."""
    checked = 0
    for variant, name, spec in pod_templates():
        assert spec.get("automountServiceAccountToken") is False, (variant, name)
        checked += 1
    assert checked == 10  # 2 Deployments in each of the 4 plain variants; KServe's gateway + predictor


def test_the_namespace_is_applied_apart_and_enforces_pod_security_restricted() -> None:
    """The Namespace in the overlays meant `kubectl delete -k <overlay>` deleted it, and with it the
    user's API-key Secret; and it enforced no Pod Security profile."""
    for variant in VARIANTS:
        assert not [doc for doc in rendered(variant) if doc["kind"] == "Namespace"], variant
    (namespace,) = rendered(NAMESPACE_KIT)
    assert namespace["kind"] == "Namespace" and namespace["metadata"]["name"] == NAMESPACE
    labels = namespace["metadata"]["labels"]
    for mode in ("enforce", "warn", "audit"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted", mode
    assert labels["pod-security.kubernetes.io/enforce-version"] == "latest"
    # every object of the kit still lands in it (the monitoring ConfigMaps aside: see components/monitoring)
    for variant, doc in objects():
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") in (NAMESPACE, "monitoring"), (variant, doc["metadata"]["name"])


def test_every_pod_meets_pod_security_restricted() -> None:
    """What the `restricted` profile checks at admission, seen from the rendered pods (KServe's
    ServingRuntime has no pod securityContext: its container carries the seccomp profile)."""
    pods = {(variant, name.split("/")[1]): spec for variant, name, spec in pod_templates()}
    for variant, name, spec in pod_specs():
        pod = spec.get("securityContext", {})
        if (variant, name) in pods:
            pod = {**pods[(variant, name)].get("securityContext", {}), **pod}
        for container in containers(spec):
            security = container.get("securityContext", {})
            seccomp = security.get("seccompProfile") or pod.get("seccompProfile")
            assert seccomp == {"type": "RuntimeDefault"}, (variant, name, container["name"])
            assert security.get("runAsNonRoot", pod.get("runAsNonRoot")) is True, (variant, name)
            assert security.get("runAsUser", pod.get("runAsUser", 1)) != 0, (variant, name)
            assert security["allowPrivilegeEscalation"] is False and security["capabilities"]["drop"] == ["ALL"]
            assert not security.get("privileged")
        for volume in spec.get("volumes", []):
            assert set(volume) - {"name"} <= {"emptyDir", "secret", "configMap", "projected"}, (variant, volume)
    runtime = next(doc for _, doc in objects("ServingRuntime", ("kserve",)))
    security = runtime["spec"]["containers"][0]["securityContext"]
    assert security["runAsGroup"] == security["runAsUser"] == 10001 and security["readOnlyRootFilesystem"] is True
    predictor = next(spec for _, name, spec in pod_templates(("kserve",)) if name.startswith("InferenceService"))
    assert predictor["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert predictor["securityContext"]["runAsNonRoot"] is True


def test_the_gpu_rollout_needs_no_spare_gpu() -> None:
    """maxSurge 1 with every GPU taken: the surge pod stayed Pending and the rollout never ended."""
    triton = next(doc for _, doc in objects("Deployment", ("gpu",)) if doc["metadata"]["name"] == "clip-serve-triton")
    assert triton["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    pdb = next(
        doc for _, doc in objects("PodDisruptionBudget", ("gpu",)) if doc["metadata"]["name"] == "clip-serve-triton"
    )
    assert pdb["spec"]["maxUnavailable"] == 1


def test_kserve_predictor_takes_calls_only_from_the_gateway() -> None:
    docs = rendered("kserve")
    predictor_labels = {"serving.kserve.io/inferenceservice": "clip-serve", "component": "predictor"}
    policies = [
        doc
        for doc in docs
        if doc["kind"] == "NetworkPolicy"
        and doc["spec"]["podSelector"]["matchLabels"].items() <= predictor_labels.items()
        and "component" in doc["spec"]["podSelector"]["matchLabels"]
    ]
    assert len(policies) == 1, "no NetworkPolicy selects the predictor's pods"
    (policy,) = policies
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    gateway = next(
        doc for doc in docs if doc["kind"] == "Deployment" and doc["metadata"]["name"] == "clip-serve-gateway"
    )
    gateway_labels = gateway["spec"]["template"]["metadata"]["labels"].items()
    runtime = next(doc for doc in docs if doc["kind"] == "ServingRuntime")
    args = runtime["spec"]["containers"][0]["args"]
    grpc_port, metrics_port = (int(args[args.index(flag) + 1]) for flag in ("--grpc-port", "--metrics-port"))
    allowed: dict[int, list[dict[str, Any]]] = {}
    for rule in policy["spec"]["ingress"]:
        for peer in rule["from"]:
            for port in rule["ports"]:
                allowed.setdefault(port["port"], []).append(peer)
    assert set(allowed) == {grpc_port, metrics_port}
    assert all(peer["podSelector"]["matchLabels"].items() <= gateway_labels for peer in allowed[grpc_port])
    assert all("namespaceSelector" in peer for peer in allowed[metrics_port])  # Prometheus only


@pytest.mark.parametrize("variant", VARIANTS)
def test_gateway_metrics_take_scrapes_only_from_prometheus(variant: str) -> None:
    """/metrics needs no key and names every tenant: in every variant one NetworkPolicy selects the
    gateway's pods, lets API calls (grpc, http) in from anywhere and the metrics port from
    Prometheus's pods only."""
    docs = rendered(variant)
    gateway = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "clip-serve-gateway")
    labels = gateway["spec"]["template"]["metadata"]["labels"].items()
    policies = [
        d for d in docs if d["kind"] == "NetworkPolicy" and d["spec"]["podSelector"]["matchLabels"].items() <= labels
    ]
    assert len(policies) == 1, "no one NetworkPolicy selects the gateway's pods"
    allowed: dict[str, list[dict[str, Any]] | None] = {}
    for rule in policies[0]["spec"]["ingress"]:
        for port in rule["ports"]:
            allowed[port["port"]] = rule.get("from")  # None: from anywhere
    declared = {port["name"] for port in gateway["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert set(allowed) == declared == {"grpc", "http", "metrics"}
    assert allowed["grpc"] is None and allowed["http"] is None
    scrapers = allowed["metrics"]
    assert scrapers and all(
        peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"} for peer in scrapers
    )


def test_kserve_headless_service_lists_predictor_pods_only() -> None:
    headless = next(
        doc for _, doc in objects("Service", ("kserve",)) if doc["metadata"]["name"] == "clip-serve-predictor-headless"
    )
    assert headless["spec"]["selector"] == {
        "serving.kserve.io/inferenceservice": "clip-serve",
        "component": "predictor",
    }


def test_kserve_mode_and_autoscaling_are_spelled_out() -> None:
    """`RawDeployment` is KServe's deprecated name (the vendored v0.20 CRDs' controller says Standard);
    the hpa class with no metric quietly scaled on CPU 80 %."""
    service = next(doc for _, doc in objects("InferenceService", ("kserve",)))
    annotations = service["metadata"]["annotations"]
    assert annotations["serving.kserve.io/deploymentMode"] == "Standard"
    assert annotations["serving.kserve.io/autoscalerClass"] == "hpa"
    metrics = service["spec"]["predictor"]["autoScaling"]["metrics"]
    # the only kind of metric KServe's hpa class turns into an HPA metric
    assert [metric["type"] for metric in metrics] == ["Resource"] and metrics[0]["resource"]["name"] == "cpu"


def test_keda_paces_as_the_hpa_it_replaces_and_its_query_names_its_namespace() -> None:
    hpa = next(
        doc for _, doc in objects("HorizontalPodAutoscaler", ("cpu",)) if doc["metadata"]["name"] == "clip-serve-triton"
    )
    scaled = next(doc for _, doc in objects("ScaledObject", ("cpu-keda",)))
    assert scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == hpa["spec"]["behavior"]
    assert "cooldownPeriod" not in scaled["spec"]  # scale-to-zero only; minReplicaCount is 2
    assert scaled["spec"]["minReplicaCount"] == hpa["spec"]["minReplicas"]
    assert scaled["spec"]["maxReplicaCount"] == hpa["spec"]["maxReplicas"]
    # kustomize's namespace transformer does not rewrite the query: it must name the object's namespace
    for _, doc in objects("ScaledObject"):
        for trigger in doc["spec"]["triggers"]:
            named = set(re.findall(r'namespace="([^"]*)"', trigger["metadata"]["query"]))
            assert named == {doc["metadata"]["namespace"]}, named


def test_gateway_readiness_is_its_own_not_tritons() -> None:
    """Readiness by the gRPC health status (which follows Triton) took every gateway out of its
    Service in a Triton outage: clients got connection refused, not UNAVAILABLE with a retry delay."""
    for variant, name, spec in pod_specs():
        if name != "clip-serve-gateway":
            continue
        container = spec["containers"][0]
        readiness = container["readinessProbe"]
        assert "grpc" not in readiness and "exec" not in readiness, (variant, readiness)
        assert readiness["httpGet"] == {"path": "/v1/health/live", "port": "http"}, variant


def image_reference(image: str) -> tuple[str, str, str]:
    """(registry, repository, tag) of a fully written image reference; AssertionError otherwise."""
    registry, _, rest = image.partition("/")
    assert rest and ("." in registry or ":" in registry or registry == "localhost"), f"{image}: no registry host"
    repository, _, tag = rest.rpartition(":") if ":" in rest else (rest, "", "")
    assert tag and tag != "latest", f"{image}: no pinned tag"
    return registry, repository, tag


def test_every_image_is_fully_qualified_pinned_and_pulled_if_not_present() -> None:
    """A short name resolves to docker.io, and CRI-O's short-name mode refuses it."""
    checked = 0
    for variant, name, spec in pod_specs():
        for container in containers(spec):
            image_reference(container["image"])
            assert container.get("imagePullPolicy") == "IfNotPresent", (variant, name, container["name"])
            checked += 1
    assert checked >= 10
    with pytest.raises(AssertionError):  # the check can fail
        image_reference("clip-serve:0.1.0")
    with pytest.raises(AssertionError):
        image_reference("registry.example.com/clip-serve")


def test_gateway_memory_holds_its_concurrency_and_ephemeral_storage_its_volumes() -> None:
    """512Mi held 2 of the 64 concurrent 64 MiB requests the gateway admitted; no pod asked for the
    disk its emptyDirs may fill."""
    copies, process = 3, 128 * 2**20  # copies of a request held at once; the process itself (75 MB measured)
    for variant, name, spec in pod_specs():
        if name != "clip-serve-gateway":
            continue
        container = spec["containers"][0]
        env = container_env(variant, container)
        config = gateway_config_module.parse([], env)
        needed = config.max_concurrent_rpcs * config.limits.max_request_bytes * copies + process
        assert quantity_bytes(container["resources"]["limits"]["memory"]) >= needed, (variant, needed / 2**30)
    for variant, name, spec in pod_specs():
        disk = sum(
            quantity_bytes(volume["emptyDir"]["sizeLimit"])
            for volume in spec.get("volumes", [])
            if "emptyDir" in volume and volume["emptyDir"].get("medium") != "Memory"
        )
        app = [c["resources"] for c in spec["containers"]]
        requested = sum(quantity_bytes(r["requests"]["ephemeral-storage"]) for r in app)
        limited = sum(quantity_bytes(r["limits"]["ephemeral-storage"]) for r in app)
        assert requested >= disk and limited >= requested, (variant, name, requested, disk)
        for init in spec.get("initContainers", []):
            assert quantity_bytes(init["resources"]["requests"]["ephemeral-storage"]) >= disk, (variant, name)
