"""Write the Grafana dashboards (deploy/grafana/dashboards/*.json) from the panel lists below.

    python deploy/grafana/build_dashboards.py [--out DIR]

Generated so that every panel has the same shape and every query is in one readable place;
tests/test_observability.py builds them into a temporary folder and compares with what is
committed, and runs each query against a real Prometheus fed by a real Triton and gateway.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

OUT = Path(__file__).with_name("dashboards")
# The Kubernetes kit ships the same files as ConfigMaps; kustomize reads files below its own folder only.
KUBERNETES_COPY = Path(__file__).parents[1] / "kubernetes" / "components" / "monitoring" / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
WINDOW = "1m"

TRITON = [
    (
        "Inference rate per model (req/s)",
        "reqps",
        [("{{model}}", f"sum by (model) (rate(nv_inference_request_success[{WINDOW}]))")],
    ),
    (
        "Inference failures per model (req/s)",
        "reqps",
        [("{{model}}", f"sum by (model) (rate(nv_inference_request_failure[{WINDOW}]))")],
    ),
    (
        # Where a request's time goes, model by model of the ensemble (bench.stages prints the same).
        "Time per request by stage (ms)",
        "ms",
        [
            (
                f"{stage} {{{{model}}}}",
                f"sum by (model) (rate(nv_inference_{metric}_duration_us[{WINDOW}])) / 1000"
                f" / sum by (model) (rate(nv_inference_request_success[{WINDOW}]))",
            )
            for stage, metric in (
                ("queue", "queue"),
                ("compute input", "compute_input"),
                ("infer", "compute_infer"),
                ("compute output", "compute_output"),
            )
        ],
    ),
    (
        "Average batch size per execution",
        "none",
        [
            (
                "{{model}}",
                f"sum by (model) (rate(nv_inference_count[{WINDOW}]))"
                f" / sum by (model) (rate(nv_inference_exec_count[{WINDOW}]))",
            )
        ],
    ),
    (
        "Request latency per model (ms)",
        "ms",
        [
            (
                "{{model}}",
                f"sum by (model) (rate(nv_inference_request_duration_us[{WINDOW}])) / 1000"
                f" / sum by (model) (rate(nv_inference_request_success[{WINDOW}]))",
            )
        ],
    ),
    (
        "Response cache hits and misses (per s)",
        "ops",
        [
            ("hits {{model}}", f"sum by (model) (rate(nv_cache_num_hits_per_model[{WINDOW}]))"),
            ("misses {{model}}", f"sum by (model) (rate(nv_cache_num_misses_per_model[{WINDOW}]))"),
        ],
    ),
    (
        "Per-label text cache: hits, misses (per s) and entries",
        "short",
        [
            ("hits", f"sum(rate(clip_label_cache_hits_total[{WINDOW}]))"),
            ("misses", f"sum(rate(clip_label_cache_misses_total[{WINDOW}]))"),
            ("entries", "sum(clip_label_cache_entries)"),
        ],
    ),
    (
        "Per-label text cache memory",
        "bytes",
        [("{{model_instance}}", "sum by (model_instance) (clip_label_cache_bytes)")],
    ),
    ("Pending requests per model", "short", [("{{model}}", "sum by (model) (nv_inference_pending_request_count)")]),
]

GATEWAY = [
    (
        "Requests per second by method and code",
        "reqps",
        [("{{method}} {{code}}", f"sum by (method, code) (rate(clip_gateway_requests_total[{WINDOW}]))")],
    ),
    (
        "Latency p50 / p95 / p99 (s)",
        "s",
        [
            (
                f"p{q} {{{{method}}}}",
                f"histogram_quantile(0.{q}, sum by (le, method) (rate(clip_gateway_request_seconds_bucket[{WINDOW}])))",
            )
            for q in ("50", "95", "99")
        ],
    ),
    ("In-flight requests", "short", [("{{method}}", "sum by (method) (clip_gateway_in_flight_requests)")]),
    (
        "Errors per second (non-OK codes)",
        "reqps",
        [("{{method}} {{code}}", f'sum by (method, code) (rate(clip_gateway_requests_total{{code!="OK"}}[{WINDOW}]))')],
    ),
    (
        "Images with their own error (per s)",
        "ops",
        [("{{method}}", f"sum by (method) (rate(clip_gateway_image_errors_total[{WINDOW}]))")],
    ),
    (
        "Images and labels per request (mean)",
        "short",
        [
            (
                "images {{method}}",
                f"sum by (method) (rate(clip_gateway_images_per_request_sum[{WINDOW}]))"
                f" / sum by (method) (rate(clip_gateway_images_per_request_count[{WINDOW}]))",
            ),
            (
                "labels {{method}}",
                f"sum by (method) (rate(clip_gateway_labels_per_request_sum[{WINDOW}]))"
                f" / sum by (method) (rate(clip_gateway_labels_per_request_count[{WINDOW}]))",
            ),
        ],
    ),
    (
        "Label cache hit ratio",
        "percentunit",
        [
            (
                "hit ratio",
                f"sum(rate(clip_label_cache_hits_total[{WINDOW}])) / (sum(rate(clip_label_cache_hits_total"
                f"[{WINDOW}])) + sum(rate(clip_label_cache_misses_total[{WINDOW}])))",
            )
        ],
    ),
    (
        # The gap between a method's mean and its Triton call's mean is the gateway's own time.
        "Mean time per call: the RPC and its Triton call (ms)",
        "ms",
        [
            (
                "rpc {{method}}",
                f"1000 * sum by (method) (rate(clip_gateway_request_seconds_sum[{WINDOW}]))"
                f" / sum by (method) (rate(clip_gateway_request_seconds_count[{WINDOW}]))",
            ),
            (
                "triton {{model}}",
                f"1000 * sum by (model) (rate(clip_gateway_triton_seconds_sum[{WINDOW}]))"
                f" / sum by (model) (rate(clip_gateway_triton_seconds_count[{WINDOW}]))",
            ),
        ],
    ),
    (
        "Triton call latency p95 (s) and errors (per s)",
        "s",
        [
            (
                "p95 {{model}}",
                f"histogram_quantile(0.95, sum by (le, model) (rate(clip_gateway_triton_seconds_bucket[{WINDOW}])))",
            ),
            ("errors {{model}} {{code}}", f"sum by (model, code) (rate(clip_gateway_triton_errors_total[{WINDOW}]))"),
        ],
    ),
    (
        "HTTP API requests per second by route and status",
        "reqps",
        [("{{route}} {{status}}", f"sum by (route, status) (rate(clip_gateway_http_requests_total[{WINDOW}]))")],
    ),
    (
        "Image URL fetches per second by outcome",
        "ops",
        [("{{outcome}}", f"sum by (outcome) (rate(clip_gateway_image_fetches_total[{WINDOW}]))")],
    ),
    ("Serving (1) / not serving (0)", "none", [("serving", "max(clip_gateway_serving)")]),
]


def panel(index: int, title: str, unit: str, targets: list[tuple[str, str]]) -> dict[str, object]:
    return {
        "id": index + 1,
        "type": "timeseries",
        "title": title,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
            for i, (legend, expr) in enumerate(targets)
        ],
    }


def dashboard(uid: str, title: str, panels: list[tuple[str, str, list[tuple[str, str]]]]) -> dict[str, object]:
    return {
        "uid": uid,
        "title": title,
        "tags": ["clip-serve"],
        "timezone": "browser",
        "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "schemaVersion": 39,
        "panels": [panel(i, *spec) for i, spec in enumerate(panels)],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help=f"one folder to write into (default: {OUT} and {KUBERNETES_COPY})")
    out = parser.parse_args(argv).out
    for folder in [out] if out else [OUT, KUBERNETES_COPY]:
        folder.mkdir(parents=True, exist_ok=True)
        for name, board in (
            ("triton", dashboard("clip-serve-triton", "clip-serve: Triton", TRITON)),
            ("gateway", dashboard("clip-serve-gateway", "clip-serve: gateway", GATEWAY)),
        ):
            (folder / f"{name}.json").write_text(json.dumps(board, indent=2) + "\n")


if __name__ == "__main__":
    main()
