"""The numbers a deployment is sized from, measured on this machine with the exact ViT-B/16 shapes
(random weights): what the Kubernetes kit's probes, resources and autoscaling target come from.

    python -m bench.sizing [--precision fp32] [--starts 3] [--seconds 15]

- export time of the repository (what an init container running the exporter takes);
- Triton start to every model READY, `--starts` times (what the startupProbe must cover);
- memory of Triton with its stubs (PSS and the RSS sum), and /dev/shm in use, after load;
- per-replica throughput of gateway Classify (2 labels) at concurrency 1, 2, 4, 8, with the image
  encoder's queue time and compute time per request at each (what the autoscaler's target is
  chosen from: the queue time at which one replica is saturated).
Writes build/bench/sizing_<machine class>_<cores>core_<precision>.json (commit it to bench/results/).
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import time
import urllib.request
from pathlib import Path

from bench.machine import describe, machine_class
from bench.measure import closed_loop, tree_memory
from bench.service import ROOT, running_service, start_triton
from bench.workloads import sample_png
from export import random_checkpoint

MODEL = "clip_image_encoder"


def triton_counters(metrics_url: str) -> dict[str, float]:
    """The image encoder's cumulative request, queue and compute counters."""
    wanted = {
        "nv_inference_request_success": "requests",
        "nv_inference_queue_duration_us": "queue_us",
        "nv_inference_compute_infer_duration_us": "compute_us",
        "nv_inference_exec_count": "executions",
    }
    found = dict.fromkeys(wanted.values(), 0.0)
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        for line in response.read().decode().splitlines():
            name, _, rest = line.partition("{")
            if name in wanted and f'model="{MODEL}"' in rest:
                found[wanted[name]] += float(line.rsplit(" ", 1)[1])
    return found


def shm_bytes() -> int:
    """Bytes in /dev/shm (Triton's Python-backend regions live there)."""
    return sum(path.stat().st_size for path in Path("/dev/shm").iterdir() if path.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    random_checkpoint.cached("vit-b-16")
    started = time.monotonic()
    repository = random_checkpoint.cached_export("vit-b-16", args.precision)
    export_s = time.monotonic() - started
    starts = []
    for attempt in range(args.starts):
        started = time.monotonic()
        server = start_triton(repository, args.out / f"sizing-start-{attempt}.log")
        starts.append(time.monotonic() - started)
        server.stop()
    images = [sample_png(i) for i in range(16)]
    counter = iter(range(10**9))
    load = []
    from clip_client import ClientConfig, ClipClient

    with running_service(repository, args.out / "sizing-triton.log") as service:
        metrics_url = service.triton.metrics_url
        with ClipClient(config=ClientConfig(target=service.target, timeout=600)) as client:
            for concurrency in (1, 2, 4, 8):
                before = triton_counters(metrics_url)
                result = closed_loop(
                    f"Classify c={concurrency}",
                    lambda: client.classify(images[next(counter) % 16], ["cat", "dog"]),
                    1,
                    concurrency,
                    args.seconds,
                )
                after = triton_counters(metrics_url)
                delta = {key: after[key] - before[key] for key in after}
                requests = max(1.0, delta["requests"])
                load.append(
                    {
                        "concurrency": concurrency,
                        "images_per_s": round(result.items_per_s, 2),
                        "p50_ms": round(result.p50_ms, 1),
                        "queue_ms_per_request": round(delta["queue_us"] / requests / 1000, 1),
                        "compute_ms_per_request": round(delta["compute_us"] / requests / 1000, 1),
                        "batch": round(delta["requests"] / max(1.0, delta["executions"]), 2),
                    }
                )
                print(load[-1], flush=True)
        assert service.triton.process is not None
        triton_memory = tree_memory([service.triton.process.pid])
        shm = shm_bytes()
    report = {
        "date": datetime.date.today().isoformat(),
        "machine": describe(),
        "precision": args.precision,
        "export_s": round(export_s, 1),
        "triton_ready_s": [round(value, 1) for value in starts],
        "triton_ready_s_median": round(statistics.median(starts), 1),
        "triton_pss_gib": round(triton_memory.pss / 2**30, 2),
        "triton_rss_sum_gib": round(triton_memory.rss / 2**30, 2),
        "dev_shm_mib": round(shm / 2**20, 1),
        "load": load,
    }
    name = f"sizing_{machine_class(report['machine'])}_{report['machine']['cores']}core_{args.precision}.json"
    (args.out / name).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
