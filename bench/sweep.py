"""Choose image-encoder instances and torch threads by measurement, not by guess.

    python -m bench.sweep [--seconds 20] [--configs 1x2,2x1,1x1,2x2] [--precision fp32] [--image-runtime torch]

For each "instances x threads" configuration: export ViT-B/16 (random weights) with it, start
Triton and the gateway, and measure the gateway's Classify (2 labels, concurrency 4, through our
client) and the memory of Triton + stubs + gateway after it. The baseline, in-process eager fp32
get_image_features at batch 8, is measured in the same run before and after the sweep; ratios
use their mean. Writes latest-sweep.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import torch

from bench.measure import Memory, Result, closed_loop
from bench.service import ROOT, running_service
from bench.workloads import in_process_baseline, sample_png
from export import random_checkpoint
from export.repository import IMAGE_RUNTIMES


def served_classify(repository: Path, seconds: float, log_file: Path, concurrency: int) -> tuple[Result, Memory]:
    """Classify throughput, and the RSS of Triton + stubs + gateway right after it."""
    from clip_client import ClientConfig, ClipClient

    images = [sample_png(i) for i in range(16)]
    counter = iter(range(10**9))
    with (
        running_service(repository, log_file) as service,
        ClipClient(config=ClientConfig(target=service.target, timeout=600)) as clip,
    ):
        result = closed_loop(
            f"gateway Classify 2 labels c={concurrency}",
            lambda: clip.classify(images[next(counter) % 16], ["cat", "dog"]),
            1,
            concurrency,
            seconds,
        )
        return result, service.memory()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--configs", default="1x2,2x1,1x1,2x2", help="instances x threads, comma separated")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--image-runtime", default="torch", choices=IMAGE_RUNTIMES)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    checkpoint = random_checkpoint.cached("vit-b-16")
    torch.set_num_threads(os.cpu_count() or 2)
    before = in_process_baseline(checkpoint, args.seconds)
    rows = []
    for config in args.configs.split(","):
        instances, threads = (int(part) for part in config.split("x"))
        started = time.monotonic()
        repository = random_checkpoint.cached_export(
            "vit-b-16",
            args.precision,
            image_instances=instances,
            image_torch_threads=threads,
            image_runtime=args.image_runtime,
        )
        result, memory = served_classify(
            repository, args.seconds, args.out / f"triton-sweep-{config}.log", args.concurrency
        )
        rows.append(
            {
                "config": config,
                "instances": instances,
                "threads": threads,
                **result.row(),
                "pss_gib": round(memory.pss / 2**30, 2),
                "rss_gib": round(memory.rss / 2**30, 2),
            }
        )
        print(f"{config}: {result.items_per_s:.2f} img/s ({time.monotonic() - started:.0f} s)", flush=True)
    after = in_process_baseline(checkpoint, args.seconds)
    baseline = (before.items_per_s + after.items_per_s) / 2
    for row in rows:
        row["vs_baseline"] = round(float(row["items_per_s"]) / baseline, 2)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout
    report = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "commit": commit.strip(),
        "precision": args.precision,
        "image_runtime": args.image_runtime,
        "baseline_before": before.row(),
        "baseline_after": after.row(),
        "rows": rows,
    }
    lines = [
        f"Sweep of {report['date']} on {report['machine']} (commit {report['commit']}), {args.precision}, "
        f"image tower on {args.image_runtime}: "
        f"gateway Classify, 2 labels, concurrency {args.concurrency}, {args.seconds:g} s per configuration. "
        f"Baseline in-process eager fp32 batch 8: {before.items_per_s:.2f} img/s before, "
        f"{after.items_per_s:.2f} after.",
        "",
        "| image-encoder instances x torch threads | img/s | p50 ms | p99 ms | x eager fp32 b8 "
        "| PSS GiB | RSS sum GiB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {r['instances']} x {r['threads']} | {r['items_per_s']} | {r['p50_ms']} | {r['p99_ms']} "
        f"| {r['vs_baseline']} | {r['pss_gib']} | {r['rss_gib']} |"
        for r in rows
    ]
    (args.out / "latest-sweep.json").write_text(json.dumps(report, indent=2))
    (args.out / "latest-sweep.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
