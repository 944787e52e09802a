"""The performance targets (issues #24 and #25), judged from one `python -m bench` report: each as
met, not met, or not measured (saying why), with the figure it was judged on. Every figure is
from the same run as its comparison (a ratio against eager fp32, or one row against another).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any

from export.quantize import MIN_COSINE

VNNI_FEATURES = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
CLASSIFY = "gateway Classify 2 labels c="


def _rows(report: dict[str, Any], prefix: str, variants: Iterable[str] | None = None) -> list[dict[str, Any]]:
    wanted = set(variants) if variants is not None else None
    return [
        row for row in report["rows"] if row["name"].startswith(prefix) and (wanted is None or row["variant"] in wanted)
    ]


def _verdict(name: str, met: bool | None, figure: str) -> dict[str, Any]:
    return {"target": name, "met": met, "figure": figure}


def _best_classify(report: dict[str, Any], variants: Iterable[str], name: str, goal: float) -> dict[str, Any]:
    rows = _rows(report, CLASSIFY, variants)
    if not rows:
        return _verdict(name, None, "no such variant in this run")
    best = max(rows, key=lambda row: row["x_eager_fp32_b8"])
    figure = f"{best['x_eager_fp32_b8']}x ({best['variant']}, {best['name'].removeprefix('gateway ')})"
    return _verdict(name, best["x_eager_fp32_b8"] >= goal, figure)


def _text_scaling(report: dict[str, Any]) -> dict[str, Any]:
    name = "text throughput at c=4 and c=8 >= its c=1 (each variant, HTTP and gRPC)"
    worst: tuple[float, str] | None = None
    for prefix in ("http /v1/embeddings 32 new texts c=", "gateway Embed 32 new texts c="):
        by_variant: dict[str, dict[str, float]] = {}
        for row in _rows(report, prefix):
            concurrency = row["name"].removeprefix(prefix).split(" ")[0]
            by_variant.setdefault(row["variant"], {})[concurrency] = row["items_per_s"]
        for variant, rates in by_variant.items():
            for concurrency in ("4", "8"):
                if "1" in rates and concurrency in rates and rates["1"] > 0:
                    ratio = rates[concurrency] / rates["1"]
                    label = f"{ratio:.2f}x at c={concurrency} ({variant}, {prefix.split(' ')[0]})"
                    if worst is None or ratio < worst[0]:
                        worst = (ratio, label)
    if worst is None:
        return _verdict(name, None, "no text rows in this run")
    return _verdict(name, worst[0] >= 1.0, f"worst {worst[1]}")


def _cold_labels(report: dict[str, Any]) -> dict[str, Any]:
    name = "1,000 new labels cold <= 3 s"
    rows = _rows(report, "gateway Classify 1000 labels cold")
    if not rows:
        return _verdict(name, None, "no cold row in this run")
    best = min(rows, key=lambda row: row["p50_ms"])
    seconds = best["p50_ms"] / 1000
    return _verdict(name, seconds <= 3.0, f"{seconds:.1f} s ({best['variant']})")


def _label_sets(report: dict[str, Any]) -> dict[str, Any]:
    name = "1,000 labels by label set id >= 0.95x of 2 labels at c=4 (each variant)"
    two = {row["variant"]: row["items_per_s"] for row in _rows(report, f"{CLASSIFY}4")}
    ratios = [
        (row["items_per_s"] / two[row["variant"]], row["variant"])
        for row in _rows(report, "gateway Classify 1000 labels by label set id c=4")
        if two.get(row["variant"])
    ]
    if not ratios:
        return _verdict(name, None, "no label-set rows in this run")
    ratio, variant = min(ratios)
    return _verdict(name, ratio >= 0.95, f"worst {ratio:.2f}x ({variant})")


def _infinity(report: dict[str, Any]) -> dict[str, Any]:
    """Our best one-image Embed row (any variant, c=4 or 8) against infinity's best
    /embeddings_image row, both medians of the same runs."""
    name = "served best >= 1.3x infinity served (one image per call)"
    peer = report.get("infinity")
    if peer is None:
        return _verdict(name, None, "infinity is not in this report")
    if "error" in peer:
        return _verdict(name, None, f"infinity did not run: {peer['error'][:200]}")
    ours, theirs = _rows(report, "gateway Embed 1 image c="), _rows(report, "infinity /embeddings_image")
    if not ours or not theirs:
        return _verdict(name, None, "no one-image embedding rows for both in this run")
    best, peer_best = (max(rows, key=lambda row: row["items_per_s"]) for rows in (ours, theirs))
    ratio = best["items_per_s"] / peer_best["items_per_s"]
    figure = (
        f"{ratio:.2f}x: {best['items_per_s']} images/s ({best['variant']}, {best['name'].removeprefix('gateway ')}) "
        f"against infinity's {peer_best['items_per_s']} ({peer_best['name'].removeprefix('infinity ')})"
    )
    return _verdict(name, ratio >= 1.3, figure)


def _in_process_peer(report: dict[str, Any]) -> dict[str, Any]:
    """Our best served image row against the best in-process peer whose embeddings pass our
    int8 gate's worst-cosine bar, each as a ratio against eager fp32 measured in the same run."""
    name = f"served best >= 1.0x the best in-process peer with lowest cosine >= {MIN_COSINE}"
    peers = report.get("in_process_peers")
    if peers is None:
        return _verdict(name, None, "the in-process peers are not in this report")
    if "error" in peers:
        return _verdict(name, None, f"the in-process peers did not run: {peers['error'][:200]}")
    passing = {
        peer: statistics.median(found["ratios"])
        for peer, found in peers["peers"].items()
        if "error" not in found and found["ratios"] and found["lowest_cosine"] >= MIN_COSINE
    }
    ours = _rows(report, CLASSIFY) + _rows(report, "gateway Embed 1 image c=")
    if not passing or not ours:
        return _verdict(name, None, "no peer that ran and passed, or no served image rows, in this run")
    peer, peer_ratio = max(passing.items(), key=lambda item: item[1])
    best = max(ours, key=lambda row: row["x_eager_fp32_b8"])
    ratio = best["x_eager_fp32_b8"] / peer_ratio
    figure = (
        f"{ratio:.2f}x: {best['x_eager_fp32_b8']}x eager ({best['variant']}, {best['name'].removeprefix('gateway ')})"
        f" against {peer}'s {peer_ratio:.2f}x"
    )
    return _verdict(name, ratio >= 1.0, figure)


def judge(report: dict[str, Any]) -> list[dict[str, Any]]:
    vnni = bool(VNNI_FEATURES & set(report["machine"].get("features", [])))
    int8_goal = 3.0 if vnni else 1.5
    return [
        _best_classify(
            report,
            ("fp32-torchscript", "fp32-compiled", "fp32-openvino"),
            "served fp32 Classify >= 1.0x eager fp32 at its best",
            1.0,
        ),
        _best_classify(
            report,
            ("int8", "int8-openvino"),  # either runtime of the int8 image tower
            f"served int8 Classify >= {int8_goal:g}x eager fp32 ({'a VNNI' if vnni else 'an AVX2'} CPU)",
            int8_goal,
        ),
        _text_scaling(report),
        _cold_labels(report),
        _label_sets(report),
        _infinity(report),
        _in_process_peer(report),
    ]


def markdown(verdicts: list[dict[str, Any]]) -> list[str]:
    shown = {True: "met", False: "**not met**", None: "not measured"}
    lines = ["| target | verdict | figure |", "| --- | --- | --- |"]
    lines += [f"| {v['target']} | {shown[v['met']]} | {v['figure']} |" for v in verdicts]
    return lines
