"""Benchmarks on the exact ViT-B/16 shapes (random weights), every figure a ratio against in-process
eager transformers fp32 at batch 8 measured in the same run, repeated to show the spread.

    python -m bench [--runs 3] [--seconds 8]
        [--variants fp32-torchscript,fp32-compiled,bf16-compiled,int8,int8-openvino]

Each variant is an export (precision x artifact); per run it is served afresh (Triton + gateway)
and measured: Triton's clip_embed_image at c=4; the gateway's Classify with 2 labels at c=1/4/8;
1,000 labels cold (the first call, every label new), warm (c=4) and by label set id (c=4); 32 new texts per call at
c=1/4/8 through HTTP /v1/embeddings and gRPC Embed. Every served row comes with its stage
breakdown from Triton's statistics (bench.stages) and the time outside Triton. Cold
start per variant: the export's time per step and the time from launching Triton to all models
ready. Memory: PSS of Triton, its stubs and the gateway. A precision this CPU does not run
natively (bf16 without avx512_bf16/amx_bf16) is not run, and said so, rather than shown as a
nonsense share of a peak. Each run also measures the peers against the same baseline, each from
its own venv under build/bench/: infinity served on the same checkpoint (bench.infinity_peer) and
the in-process ONNX Runtime and OpenVINO towers (bench.peers); one that fails is shown with its
error. The targets of issues #24 and #25 are judged from the run's rows
(bench.targets) and printed as met / not met / not measured. Writes build/bench/latest.{json,md} and the same as
bench_<vendor>_<class>_<cores>core.*, the name its copy takes in bench/results/ (one per machine class).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from numpy.typing import NDArray

from bench import infinity_peer, peers, stages, targets
from bench.machine import describe, report_header, result_name, write_report
from bench.measure import Result, closed_loop
from bench.service import ROOT, HttpCaller, bytes_input, running_service
from bench.workloads import (
    IMAGE_GFLOP,
    eager,
    load_reference,
    matmul_peak_gflops,
    reference_image_embedding,
    sample_png,
)
from clip_contract import precisions
from export import random_checkpoint
from export.pipeline import ExportRefused

VARIANTS: dict[str, dict[str, Any]] = {
    "fp32-torchscript": {"precision": "fp32", "compile": "none"},
    "fp32-compiled": {"precision": "fp32", "compile": "aoti", "image_runtime": "torch"},
    "bf16-torchscript": {"precision": "bf16", "compile": "none", "allow_slow_precision": True},
    "bf16-compiled": {"precision": "bf16", "compile": "aoti", "allow_slow_precision": True, "image_runtime": "torch"},
    "int8": {"precision": "int8", "compile": "aoti", "image_runtime": "torch"},
    # the same exports with the image tower on OpenVINO (export/openvino_export.py), whatever it measured
    "fp32-openvino": {"precision": "fp32", "compile": "aoti", "image_runtime": "openvino"},
    "bf16-openvino": {
        "precision": "bf16",
        "compile": "aoti",
        "allow_slow_precision": True,
        "image_runtime": "openvino",
    },
    "int8-openvino": {"precision": "int8", "compile": "aoti", "image_runtime": "openvino"},
}
DEFAULT_VARIANTS = "fp32-torchscript,fp32-compiled,bf16-compiled,int8,int8-openvino"
BASELINE = "in-process eager fp32 batch 8"


@dataclass
class Row:
    name: str
    variant: str
    precision: str
    runs: list[Result] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    stages: list[dict[str, Any]] = field(default_factory=list)  # per served run: bench.stages.breakdown

    def summary(self, peaks: dict[str, float | None]) -> dict[str, Any]:
        rates = [result.items_per_s for result in self.runs]
        median_index = sorted(range(len(self.runs)), key=lambda i: self.runs[i].items_per_s)[len(self.runs) // 2]
        median_run = self.runs[median_index]
        row: dict[str, Any] = {
            "name": self.name,
            "variant": self.variant,
            "items_per_s": round(statistics.median(rates), 2),
            "items_per_s_range": [round(min(rates), 2), round(max(rates), 2)],
            "p50_ms": round(median_run.p50_ms, 1),
            "p99_ms": round(median_run.p99_ms, 1),
            "x_eager_fp32_b8": round(statistics.median(self.ratios), 2),
            "x_range": [round(min(self.ratios), 2), round(max(self.ratios), 2)],
        }
        if self.stages:  # the median run's: its figures add up to that run's latency
            row["stages"] = self.stages[median_index]
        peak = peaks.get(self.precision)
        if peak and "texts" not in self.name and "labels cold" not in self.name:
            row["gflops"] = round(row["items_per_s"] * IMAGE_GFLOP, 1)
            row["peak_share"] = f"{100 * row['gflops'] / peak:.0f}%"
        return row


def natively_runs(variant: str, features: list[str]) -> bool:
    spec = precisions.lookup(str(VARIANTS[variant]["precision"]))
    return not spec.reduced or any(name in features for name in spec.native_cpu_features)


def export_variant(variant: str) -> tuple[Path, dict[str, Any]]:
    settings = dict(VARIANTS[variant])
    precision = settings.pop("precision")
    started = time.monotonic()
    repository = random_checkpoint.cached_export("vit-b-16", precision, **settings)
    manifest = json.loads((repository / "manifest.json").read_text())
    manifest["export_wall_s"] = round(time.monotonic() - started, 1)
    return repository, manifest


def measure_served(
    repository: Path,
    seconds: float,
    log: Path,
    record: Callable[[str, Result, dict[str, Any]], None],
    reference_embedding: NDArray[Any],
) -> dict[str, float]:
    """One run of one export; returns its cold-start and memory figures, and the cosine of its
    embedding of the first image against the reference's. Every row is recorded with its stage
    breakdown (bench.stages) over its measured calls."""
    import tritonclient.grpc as grpcclient

    from clip_client import ClientConfig, ClipClient

    images = [sample_png(i) for i in range(16)]
    counter = iter(range(10**9))
    started = time.monotonic()
    with running_service(repository, log) as service:
        ready_s = service.triton_ready_s
        client = grpcclient.InferenceServerClient(service.triton_url)

        def measured(
            row_name: str, call: Callable[[], object], items: int, concurrency: int, row_seconds: float, warmup: int = 2
        ) -> None:
            # Settled at the warm-up calls: Triton may count the last of them only after it returned.
            start, before = stages.snapshot(client), []
            result = closed_loop(
                row_name,
                call,
                items,
                concurrency,
                row_seconds,
                warmup,
                measuring=lambda: before.append(stages.settled_snapshot(client, start, warmup)),
            )
            record(
                row_name,
                result,
                stages.breakdown(
                    before[0], stages.settled_snapshot(client, before[0], result.calls), result.calls, result.mean_ms
                ),
            )

        measured(
            "triton clip_embed_image c=4",
            lambda: client.infer("clip_embed_image", [bytes_input("IMAGE", [images[next(counter) % 16]])]),
            1,
            4,
            seconds,
        )
        with ClipClient(config=ClientConfig(target=service.target, timeout=600)) as clip:
            for concurrency in (1, 4, 8):
                measured(
                    f"gateway Classify 2 labels c={concurrency}",
                    lambda: clip.classify(images[next(counter) % 16], ["cat", "dog"]),
                    1,
                    concurrency,
                    seconds,
                )
            for concurrency in (4, 8):  # beside infinity's /embeddings_image rows: one image per call
                measured(
                    f"gateway Embed 1 image c={concurrency}",
                    lambda: clip.embed(images=[images[next(counter) % 16]]),
                    1,
                    concurrency,
                    seconds,
                )
            served = clip.embed(images=[images[0]]).images[0]
            agreement = float(served @ reference_embedding)
            labels = [f"imagenet class number {i}" for i in range(1000)]
            measured("gateway Classify 1000 labels cold", lambda: clip.classify(images[0], labels), 1, 1, 0.0, 0)
            measured(
                "gateway Classify 1000 labels warm c=4",
                lambda: clip.classify(images[next(counter) % 16], labels),
                1,
                4,
                seconds,
            )
            label_set = clip.register_label_set(labels)  # the same labels, now sent as an id
            measured(
                "gateway Classify 1000 labels by label set id c=4",
                lambda: clip.classify(images[next(counter) % 16], label_set),
                1,
                4,
                seconds,
            )
            texts = [f"a photo of thing {i}" for i in range(32)]
            text_round = iter(range(10**9))
            embeddings = HttpCaller(service.http_address, "/v1/embeddings")
            model_id = embeddings.model_id()
            for concurrency in (1, 4, 8):
                measured(
                    f"http /v1/embeddings 32 new texts c={concurrency} (texts/s)",
                    lambda: embeddings.post({"model": model_id, "input": [f"{t} {next(text_round)}" for t in texts]}),
                    32,
                    concurrency,
                    seconds,
                    1,
                )
            for concurrency in (1, 4, 8):
                measured(
                    f"gateway Embed 32 new texts c={concurrency} (texts/s)",
                    lambda: clip.embed(texts=[f"{t} {next(text_round)}" for t in texts]),
                    32,
                    concurrency,
                    seconds,
                    1,
                )
        memory = service.memory()
        client.close()
    return {
        "triton_ready_s": ready_s,
        "pss_gib": memory.pss / 2**30,
        "served_s": time.monotonic() - started,
        "cosine_vs_reference": agreement,
    }


def measure_infinity(
    checkpoint: Path,
    args: argparse.Namespace,
    run: int,
    baseline: Result,
    rows: dict[tuple[str, str], Row],
    infinity: dict[str, Any],
    reference_embedding: NDArray[Any],
) -> None:
    """One run of the served peer (bench.infinity_peer) against this run's baseline; a failure to
    start is its result (`infinity["error"]`), shown in place of its rows."""

    def record(row_name: str, result: Result) -> None:
        row = rows.setdefault((row_name, "infinity"), Row(row_name, "infinity", "fp32"))
        row.runs.append(result)
        row.ratios.append(result.items_per_s / baseline.items_per_s)

    images = [sample_png(i) for i in range(16)]
    log = args.out / f"infinity-{run}.log"
    try:
        figures = infinity_peer.run(checkpoint, images, args.seconds, log, record, reference_embedding)
    except infinity_peer.PeerUnavailable as error:
        infinity["error"] = str(error)
        return
    infinity["ready_s"].append(round(figures["ready_s"], 1))
    infinity["cosine_vs_reference"].append(round(figures["cosine_vs_reference"], 6))
    print(f"run {run + 1}/{args.runs} infinity: {figures}", flush=True)


def measure_in_process_peers(args: argparse.Namespace, run: int, in_process: dict[str, Any]) -> None:
    """One run of bench.peers in its own venv; each peer's ratio against the eager fp32 measured
    beside it, its lowest cosine, or its error. A failure of the whole is `in_process["error"]`."""
    try:
        found = peers.run_apart(args.seconds, args.out / f"peers-run-{run}")
    except peers.PeersUnavailable as error:
        in_process["error"] = str(error)
        return
    in_process["baseline_images_per_s"].append(found["baseline_images_per_s"])
    in_process["versions"] = found["versions"]
    for name, peer in found["peers"].items():
        kept = in_process["peers"].setdefault(name, {"ratios": [], "images_per_s": []})
        if "error" in peer:
            kept["error"] = peer["error"]
            continue
        kept["ratios"] += peer["ratios"]
        kept["images_per_s"].append(peer["images_per_s"])
        kept["lowest_cosine"] = min(peer["lowest_cosine"], kept.get("lowest_cosine", 1.0))
    print(f"run {run + 1}/{args.runs} in-process peers: {found['peers']}", flush=True)


def in_process_lines(in_process: dict[str, Any]) -> list[str]:
    if "error" in in_process:
        return [f"In-process peers (bench.peers): **did not run**: {in_process['error']}"]
    lines = [
        f"In-process peers of the image tower (bench.peers, batch 8, one caller, in their own venv), each "
        f"against an eager fp32 measured beside it ({in_process['baseline_images_per_s']} images/s per run):",
        "",
        "| peer | images/s (runs) | x eager fp32 (runs) | lowest cosine vs eager fp32 |",
        "| --- | --- | --- | --- |",
    ]
    for name, peer in in_process["peers"].items():
        if "error" in peer:
            lines.append(f"| {name} | did not run: {peer['error'][:200]} | | |")
        else:
            lines.append(f"| {name} | {peer['images_per_s']} | {peer['ratios']} | {peer['lowest_cosine']:.5f} |")
    versions = in_process.get("versions", {})
    return [*lines, "", "Versions: " + ", ".join(f"{key} {value}" for key, value in versions.items())]


def infinity_line(infinity: dict[str, Any]) -> str:
    if "error" in infinity:
        return f"infinity {infinity.get('version', '')}: **did not run**: {infinity['error']}"
    return (
        f"infinity {infinity['version']} (torch engine, CPU, its defaults; started by the benchmark on the same "
        f"checkpoint): ready in {infinity['ready_s']} s per run; cosine of its embedding of the first image "
        f"against the reference (CLIPModel + CLIPProcessor): {infinity['cosine_vs_reference']}"
    )


def markdown(report: dict[str, Any]) -> str:
    machine = report["machine"]
    peaks = report["peak_gflops"]
    lines = [
        f"Benchmark of {report['date']} on {machine['model']} ({machine['cores']} cores; "
        f"{', '.join(machine['features'])}; torch capability {machine.get('torch_cpu_capability')}), "
        f"commit {report['commit']}, {report['runs']} runs. Matmul peak fp32 {peaks['fp32']:.0f} GFLOP/s, "
        + (f"bf16 {peaks['bf16']:.0f}." if peaks.get("bf16") else "bf16: not native here, not run."),
        "",
        "| row | variant | items/s (median) | range | p50 ms | p99 ms | % of peak | x eager fp32 b8 | range |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in report["rows"]:
        lines.append(
            f"| {row['name']} | {row['variant']} | {row['items_per_s']} | {row['items_per_s_range'][0]}-"
            f"{row['items_per_s_range'][1]} | {row['p50_ms']} | {row['p99_ms']} | {row.get('peak_share', '')} | "
            f"{row['x_eager_fp32_b8']} | {row['x_range'][0]}-{row['x_range'][1]} |"
        )
    lines += [
        "",
        "| variant | export s (steps) | Triton ready s (runs) | PSS GiB (x fp32 weights) | cosine vs reference "
        "| image tower timed at export, images/s | execution |",
    ]
    lines += ["| --- | --- | --- | --- | --- | --- | --- |"]
    for name, variant in report["variants"].items():
        if "refused" in variant:
            continue
        lines.append(
            f"| {name} | {variant['export_wall_s']} ({variant['export_seconds']}) | {variant['triton_ready_s']} | "
            f"{variant['pss_gib']} ({variant['pss_x_weights']}) | {variant.get('cosine_vs_reference', '')} | "
            f"{variant.get('image_runtime_images_per_second') or ''} | {variant['execution']} |"
        )
    if "infinity" in report:
        lines += ["", infinity_line(report["infinity"])]
    if "in_process_peers" in report:
        lines += ["", *in_process_lines(report["in_process_peers"])]
    lines += ["", "Where the time goes (median run; ms per request of each model, from Triton's statistics):", ""]
    lines += stages.MARKDOWN_HEADER
    for row in report["rows"]:
        if "stages" in row:
            lines += stages.markdown_rows(row["name"], row["variant"], row["stages"])
    if "targets" in report:
        lines += ["", "Targets (issues #24, #25), judged from this run:", "", *targets.markdown(report["targets"])]
    lines += ["", *[f"- {note}" for note in report["notes"]]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--variants", default=DEFAULT_VARIANTS)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(os.cpu_count() or 2)
    machine = describe()
    notes: list[str] = []
    variants = []
    for name in args.variants.split(","):
        if natively_runs(name, machine["features"]):
            variants.append(name)
        else:
            notes.append(f"{name}: not run, this CPU has no native {VARIANTS[name]['precision']}")
    native_bf16 = any(name in machine["features"] for name in precisions.BF16.native_cpu_features)
    peaks: dict[str, float | None] = {
        "fp32": matmul_peak_gflops(torch.float32),
        "bf16": matmul_peak_gflops(torch.bfloat16) if native_bf16 else None,
    }
    checkpoint = random_checkpoint.cached("vit-b-16")
    exports: dict[str, tuple[Path, dict[str, Any]]] = {}
    refused: dict[str, str] = {}
    for name in variants:
        try:
            exports[name] = export_variant(name)
        except ExportRefused as refusal:  # e.g. int8 where no scheme beats fp32: the reason is the result
            refused[name] = str(refusal)
            notes.append(f"{name}: refused by the exporter on this machine: {refusal}")
    variants = [name for name in variants if name in exports]
    rows: dict[tuple[str, str], Row] = {}
    cold: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    reference = load_reference(checkpoint, "fp32")
    reference_embedding = reference_image_embedding(reference, checkpoint, sample_png(0))
    infinity: dict[str, Any] = {"ready_s": [], "cosine_vs_reference": []}
    try:
        infinity["version"] = infinity_peer.version(infinity_peer.ensure_venv())
    except infinity_peer.PeerUnavailable as error:  # reported in place of its rows, never left out
        infinity["error"] = str(error)
    in_process: dict[str, Any] = {"baseline_images_per_s": [], "peers": {}}
    for run in range(args.runs):
        baseline = eager(reference, "fp32", 8, args.seconds)
        rows.setdefault((BASELINE, "eager"), Row(BASELINE, "eager", "fp32")).runs.append(baseline)
        rows[(BASELINE, "eager")].ratios.append(1.0)
        for name in variants:
            precision = VARIANTS[name]["precision"]

            def record(
                row_name: str,
                result: Result,
                breakdown: dict[str, Any],
                name: str = name,
                precision: str = precision,
                base: Result = baseline,
            ) -> None:
                row = rows.setdefault((row_name, name), Row(row_name, name, precision))
                row.runs.append(result)
                row.ratios.append(result.items_per_s / base.items_per_s)
                row.stages.append(breakdown)

            log = args.out / f"triton-{name}-{run}.log"
            cold[name].append(measure_served(exports[name][0], args.seconds, log, record, reference_embedding))
            print(f"run {run + 1}/{args.runs} {name}: {cold[name][-1]}", flush=True)
        if "error" not in infinity:
            measure_infinity(checkpoint, args, run, baseline, rows, infinity, reference_embedding)
        if "error" not in in_process:
            measure_in_process_peers(args, run, in_process)
    weights = sum(p.stat().st_size for p in checkpoint.glob("*.safetensors"))
    variant_report = {}
    for name in variants:
        manifest = exports[name][1]
        pss = [run["pss_gib"] for run in cold[name]]
        variant_report[name] = {
            "execution": manifest["execution"],
            "export_wall_s": manifest["export_wall_s"],
            "export_seconds": manifest.get("export_seconds", {}),
            "int8_scheme": manifest.get("int8_scheme"),
            "int8_gate": manifest.get("int8_gate"),
            "image_runtime_images_per_second": manifest.get("image_runtime_images_per_second"),
            "triton_ready_s": [round(run["triton_ready_s"], 1) for run in cold[name]],
            "pss_gib": round(statistics.median(pss), 2),
            "pss_x_weights": round(statistics.median(pss) * 2**30 / weights, 2),
            "cosine_vs_reference": round(min(run["cosine_vs_reference"] for run in cold[name]), 6),
        }
    variant_report.update({name: {"refused": reason} for name, reason in refused.items()})
    report = {
        **report_header(machine),
        "runs": args.runs,
        "seconds_per_row": args.seconds,
        "peak_gflops": peaks,
        "rows": [row.summary(peaks) for row in rows.values()],
        "variants": variant_report,
        "infinity": infinity,
        "in_process_peers": in_process,
        "notes": [
            *notes,
            "int8 rows have no % of peak: no int8 matmul peak is measured",
            f"weights: {weights / 2**30:.2f} GiB fp32 (model.safetensors)",
        ],
    }
    report["targets"] = targets.judge(report)
    write_report(args.out, ("latest", result_name("bench", machine)), report, markdown(report))


if __name__ == "__main__":
    main()
