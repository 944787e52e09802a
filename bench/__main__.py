"""Benchmarks on the exact ViT-B/16 shapes (random weights), every figure next to its baseline
measured in the same run on the same machine.

    python -m bench [--seconds 8] [--precisions fp32,bf16] [--out build/bench]

Rows: (1) in-process transformers get_image_features, eager, fp32/bf16, batch 1 and 8: the
baseline; (2) the Triton ensemble clip_embed_image through tritonclient at concurrency 1/4/8;
(3) the gateway's Classify through our client, 2 labels at concurrency 1/4/8, and 1,000 labels
cold then warm; (4) Embed of texts. Each row shows images/s, p50/p99 latency, achieved GFLOP/s
(35.1 GFLOP per image for the image tower) and that as a share of this machine's own measured
matmul peak at the precision. Writes latest.json and latest.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
from pathlib import Path

import torch

from bench.measure import Memory, Result, closed_loop
from bench.service import ROOT, bytes_input, running_service
from bench.workloads import IMAGE_GFLOP, in_process, matmul_peak_gflops, sample_png
from export import cache


def served(repository: Path, precision: str, seconds: float, log_dir: Path) -> tuple[list[tuple[Result, str]], Memory]:
    import tritonclient.grpc as grpcclient

    from clip_client import ClientConfig, ClipClient

    rows: list[tuple[Result, str]] = []
    images = [sample_png(i) for i in range(16)]
    counter = iter(range(10**9))
    with running_service(repository, log_dir / f"triton-{precision}.log") as service:
        client = grpcclient.InferenceServerClient(service.triton_url)
        for concurrency in (1, 4, 8):

            def embed() -> None:
                client.infer("clip_embed_image", [bytes_input("IMAGE", [images[next(counter) % 16]])])

            rows.append(
                (
                    closed_loop(f"triton clip_embed_image {precision} c={concurrency}", embed, 1, concurrency, seconds),
                    precision,
                )
            )
        with ClipClient(config=ClientConfig(target=service.target, timeout=600)) as clip:
            for concurrency in (1, 4, 8):

                def classify() -> None:
                    clip.classify(images[next(counter) % 16], ["cat", "dog"])

                rows.append(
                    (
                        closed_loop(
                            f"gateway Classify 2 labels {precision} c={concurrency}", classify, 1, concurrency, seconds
                        ),
                        precision,
                    )
                )
            labels = [f"imagenet class number {i}" for i in range(1000)]
            cold = closed_loop(
                f"gateway Classify 1000 labels cold {precision}",
                lambda: clip.classify(images[0], labels),
                1,
                1,
                0.0,
                warmup_calls=0,
            )
            rows.append((cold, precision))
            rows.append(
                (
                    closed_loop(
                        f"gateway Classify 1000 labels warm {precision} c=4",
                        lambda: clip.classify(images[next(counter) % 16], labels),
                        1,
                        4,
                        seconds,
                    ),
                    precision,
                )
            )
            texts = [f"a photo of thing {i}" for i in range(32)]
            text_round = iter(range(10**9))
            rows.append(
                (
                    closed_loop(
                        f"gateway Embed 32 texts {precision} c=1 (texts/s)",
                        lambda: clip.embed(texts=[f"{t} {next(text_round)}" for t in texts]),
                        32,
                        1,
                        seconds,
                        warmup_calls=1,
                    ),
                    "text",
                )
            )
        memory = service.memory()
    return rows, memory


def markdown(report: dict) -> str:  # type: ignore[type-arg]
    lines = [
        f"Benchmark of {report['date']} on {report['machine']} (commit {report['commit']}); "
        f"matmul peak fp32 {report['peak_gflops']['fp32']:.0f} GFLOP/s, bf16 {report['peak_gflops']['bf16']:.0f}.",
        "",
        "| row | items/s | p50 ms | p99 ms | GFLOP/s | % of peak | x eager fp32 b8 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in report["rows"]:
        lines.append(
            f"| {row['name']} | {row['items_per_s']} | {row['p50_ms']} | {row['p99_ms']} | "
            f"{row.get('gflops', '')} | {row.get('peak_share', '')} | {row['vs_baseline']} |"
        )
    lines += ["", *[f"- {key}: {value}" for key, value in report["summary"].items()]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench")
    parser.add_argument("--image-torch-threads", type=int, default=None, help="default: the exporter's")
    parser.add_argument("--image-instances", type=int, default=None, help="default: the exporter's")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(os.cpu_count() or 2)
    peaks = {"fp32": matmul_peak_gflops(torch.float32), "bf16": matmul_peak_gflops(torch.bfloat16)}
    checkpoint = cache.checkpoint("vit-b-16")
    rows = in_process(checkpoint, args.seconds)
    memory = {}
    for precision in args.precisions.split(","):
        repository = cache.exported(
            "vit-b-16", precision, image_torch_threads=args.image_torch_threads, image_instances=args.image_instances
        )
        served_rows, memory[precision] = served(repository, precision, args.seconds, args.out)
        rows += served_rows
    baseline = next(r for r, _ in rows if r.name == "in-process eager fp32 batch 8").items_per_s
    table = []
    for result, precision in rows:
        row = result.row()
        row["vs_baseline"] = round(result.items_per_s / baseline, 2)
        if precision in peaks:
            row["gflops"] = round(result.items_per_s * IMAGE_GFLOP, 1)
            row["peak_share"] = f"{100 * result.items_per_s * IMAGE_GFLOP / peaks[precision]:.0f}%"
        table.append(row)
    weights = sum(p.stat().st_size for p in checkpoint.glob("*.safetensors"))
    summary = {
        f"memory {p} (Triton + stubs + gateway)": f"PSS {m.pss / 2**30:.2f} GiB = {m.pss / weights:.2f}x, "
        f"RSS sum {m.rss / 2**30:.2f} GiB = {m.rss / weights:.2f}x "
        f"the {weights / 2**30:.2f} GiB fp32 weights"
        for p, m in memory.items()
    }
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout
    report = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "commit": commit.strip(),
        "peak_gflops": peaks,
        "rows": table,
        "summary": summary,
    }
    (args.out / "latest.json").write_text(json.dumps(report, indent=2))
    (args.out / "latest.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
