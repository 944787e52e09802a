"""Where a served call's time goes, from Triton's own per-model statistics.

Triton counts, per model, the requests it finished and the nanoseconds they spent queued, copying
inputs in, inferring and copying outputs out. Two snapshots around a measured row give, per model
of the ensemble, how many requests each call made and what each stage cost per request. Whatever
a call's client saw beyond the public model's own request time was spent outside Triton: in the
client, on gRPC, and in the gateway.
"""

from __future__ import annotations

import time
from typing import Any

from clip_contract import models

STAGES = ("queue", "compute_input", "compute_infer", "compute_output")
Snapshot = dict[str, dict[str, int]]  # model -> {"requests", "request_ns", "cache_hits", "<stage>_ns"}


def snapshot(client: Any) -> Snapshot:
    """Every model's cumulative counters now (`client`: a tritonclient.grpc InferenceServerClient)."""
    answer = client.get_inference_statistics(as_json=True)
    counters: Snapshot = {}
    for model in answer.get("model_stats", []):
        stats = model.get("inference_stats", {})
        row = {
            "requests": int(stats.get("success", {}).get("count", 0)),
            "request_ns": int(stats.get("success", {}).get("ns", 0)),
            "cache_hits": int(stats.get("cache_hit", {}).get("count", 0)),
        }
        row.update({f"{stage}_ns": int(stats.get(stage, {}).get("ns", 0)) for stage in STAGES})
        counters[model["name"]] = row
    return counters


def settled_snapshot(client: Any, before: Snapshot, public_requests: int, timeout: float = 10.0) -> Snapshot:
    """A snapshot once the public models have finished `public_requests` more requests than at
    `before`: Triton counts a request after sending its response, so a snapshot taken as the last
    call returns can miss it (one of three calls was missing, once)."""
    deadline = time.monotonic() + timeout
    while True:
        now = snapshot(client)
        done = sum(
            now[name]["requests"] - before.get(name, {}).get("requests", 0)
            for name in models.PUBLIC_MODEL_NAMES
            if name in now
        )
        if done >= public_requests:
            return now
        if time.monotonic() > deadline:
            raise RuntimeError(f"Triton counted {done} of {public_requests} requests within {timeout} s")
        time.sleep(0.01)


def breakdown(before: Snapshot, after: Snapshot, calls: int, client_mean_ms: float) -> dict[str, Any]:
    """Per model that served the row's calls: requests per call and ms per request by stage; and the
    ms per call outside Triton (the client's mean latency less the public models' request time)."""
    per_model: dict[str, dict[str, float]] = {}
    public_ms_per_call = 0.0
    for name, now in after.items():
        was = before.get(name, {})
        requests = now["requests"] - was.get("requests", 0)
        if requests <= 0:
            continue
        # A response-cache hit is a finished request with no queue or compute: the stage figures
        # are means over all requests, so the share of hits is given beside them.
        hits = now["cache_hits"] - was.get("cache_hits", 0)
        row = {"requests_per_call": round(requests / calls, 2), "cache_hit_share": round(hits / requests, 2)}
        for key in ("request", *STAGES):
            row[f"{key}_ms"] = round((now[f"{key}_ns"] - was.get(f"{key}_ns", 0)) / requests / 1e6, 2)
        per_model[name] = row
        if name in models.PUBLIC_MODEL_NAMES:
            public_ms_per_call += row["request_ms"] * requests / calls
    return {
        "models": per_model,
        "triton_ms_per_call": round(public_ms_per_call, 2),
        "outside_triton_ms_per_call": round(client_mean_ms - public_ms_per_call, 2),
    }


def markdown_rows(row_name: str, variant: str, stages: dict[str, Any]) -> list[str]:
    """Table rows: one per model, then the time outside Triton."""
    lines = []
    for model, row in stages["models"].items():
        cells = " | ".join(str(row[f"{stage}_ms"]) for stage in STAGES)
        lines.append(
            f"| {row_name} | {variant} | {model} | {row['requests_per_call']} | {row['cache_hit_share']} | "
            f"{row['request_ms']} | {cells} |"
        )
    outside = stages["outside_triton_ms_per_call"]
    lines.append(f"| {row_name} | {variant} | outside Triton (client, gRPC, gateway) | 1 | | {outside} | | | | |")
    return lines


MARKDOWN_HEADER = [
    "| row | variant | model | requests per call | cache hits | ms per request | queue | compute input | infer "
    "| compute output |",
    "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
]
