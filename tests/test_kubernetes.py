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
    assert {"Namespace", "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"} <= kinds


@pytest.mark.parametrize("variant", VARIANTS)
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
    assert checked == {"launcher.healthcheck", "/v2/health/live", "/v1/health/live", "grpc.health.v1"}


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
