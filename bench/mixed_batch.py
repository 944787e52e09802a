"""What bad images cost a request: Classify with 16 good and 16 bad images (corrupt JPEGs) against
16 good ones alone, through the gateway, on the ViT-B/16 shapes (random weights); and how many
requests reached Triton's ensemble for it (Triton counts a failed ensemble request twice).
Writes build/bench/mixed_batch.json.

    python -m bench.mixed_batch [--calls 5] [--shape vit-b-16]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import urllib.request

from bench.machine import describe
from bench.service import ROOT, running_service
from bench.workloads import sample_png
from export import random_checkpoint


def ensemble_requests(metrics_url: str) -> float:
    """clip_classify requests Triton has seen, successful or failed."""
    total = 0.0
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        for line in response.read().decode().splitlines():
            counted = line.startswith(("nv_inference_request_success{", "nv_inference_request_failure{"))
            if counted and 'model="clip_classify"' in line:
                total += float(line.rsplit(" ", 1)[1])
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--shape", default="vit-b-16")
    args = parser.parse_args()
    from clip_client import ClientConfig, ClipClient

    good = [sample_png(seed) for seed in range(16)]
    bad = [image[: len(image) // 3] for image in good]  # truncated JPEGs
    repository = random_checkpoint.cached_export(args.shape)
    report: dict[str, object] = {"machine": describe(), "shape": args.shape, "calls": args.calls}
    with (
        running_service(repository, ROOT / "build" / "bench" / "mixed-triton.log") as service,
        ClipClient(config=ClientConfig(target=service.target, timeout=600)) as client,
    ):
        client.classify(good[:2], ["cat", "dog"])  # warm
        for name, images in (
            ("16 good", good),
            ("16 good + 16 bad", [x for pair in zip(good, bad, strict=True) for x in pair]),
        ):
            seconds, triton_calls = [], []
            for _ in range(args.calls):
                before = ensemble_requests(service.triton.metrics_url)
                started = time.perf_counter()
                result = client.classify(images, ["cat", "dog"])
                seconds.append(time.perf_counter() - started)
                triton_calls.append(ensemble_requests(service.triton.metrics_url) - before)
                assert sum(item.ok for item in result) == 16
            report[name] = {
                "median_s": round(statistics.median(seconds), 3),
                "triton_ensemble_requests_per_call": statistics.median(triton_calls),
            }
            print(name, report[name], flush=True)
    text = json.dumps(report, indent=2)
    (ROOT / "build" / "bench" / "mixed_batch.json").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
