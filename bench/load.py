"""Load test on loopback: N concurrent clients for a bounded time and count, zero failures
expected, and the gateway's memory growth per 10,000 requests reported.

    python -m bench.load [--seconds 180] [--concurrency 32] [--model models/clip-demo]

Starts its own Triton (the given checkpoint, exported) and gateway process; stops by itself.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.measure import rss_bytes
from clip_client import NO_RETRY, ClientConfig, ClipClient, ClipError

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class LoadReport:
    requests: int
    failures: dict[str, int]
    seconds: float
    rss_start: int  # after the warm-up third of the run: connections, pools and caches settled
    rss_end: int
    requests_after_warmup: int
    unexpected: dict[str, str]  # exception type -> its first message, for failures that are no ClipError

    @property
    def growth_per_10k(self) -> float:
        return (self.rss_end - self.rss_start) / max(1, self.requests_after_warmup) * 10_000

    def summary(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "failures": self.failures,
            "seconds": round(self.seconds, 1),
            "requests_per_s": round(self.requests / self.seconds, 1),
            "gateway_rss_mb": [round(self.rss_start / 2**20, 1), round(self.rss_end / 2**20, 1)],
            "gateway_rss_growth_mb_per_10k_requests": round(self.growth_per_10k / 2**20, 2),
            "unexpected": self.unexpected,
        }


def pictures() -> list[bytes]:
    from demo.shapes import dataset

    encoded = []
    for image, _ in dataset(77, 1):
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=85)
        encoded.append(buffer.getvalue())
    return encoded


def run_load(target: str, gateway_pid: int, concurrency: int, seconds: float, max_requests: int) -> LoadReport:
    """Mixed Classify/Embed/Similarity traffic; every call must succeed."""
    images = pictures()
    labels = ["red circle", "blue square", "green triangle", "yellow star", "cat", "dog"]
    counts: Counter[str] = Counter()
    examples: dict[str, str] = {}  # the first of each unexpected exception, for the report
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client_loop(seed: int) -> None:
        rng = random.Random(seed)
        with ClipClient(config=ClientConfig(target=target, timeout=60, retry=NO_RETRY)) as client:
            while time.monotonic() < stop_at:
                with lock:
                    if counts["sent"] >= max_requests:
                        return
                    counts["sent"] += 1
                try:
                    kind = rng.random()
                    if kind < 0.7:
                        client.classify(rng.sample(images, rng.randint(1, 4)), labels, top_k=3)
                    elif kind < 0.9:
                        client.embed(rng.sample(images, 2), [rng.choice(labels)])
                    else:
                        client.similarity(rng.choice(images), labels)
                    outcome = "OK"
                except ClipError as error:
                    outcome = error.code.name
                except Exception as error:  # a broken client or harness is a failure too, never lost
                    outcome = type(error).__name__
                    with lock:
                        examples.setdefault(outcome, repr(error)[:300])
                with lock:
                    counts[outcome] += 1

    warm = ClipClient(config=ClientConfig(target=target, timeout=60))
    warm.classify(images[:2], labels)
    warm.close()
    started = time.monotonic()
    threads = [threading.Thread(target=client_loop, args=(seed,)) for seed in range(concurrency)]
    for thread in threads:
        thread.start()
    time.sleep(seconds / 3)
    with lock:
        done_at_warmup = sum(count for code, count in counts.items() if code != "sent")
    rss_start = rss_bytes([gateway_pid])
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    failures = {code: count for code, count in counts.items() if code not in ("OK", "sent")}
    done = counts["OK"] + sum(failures.values())
    return LoadReport(done, failures, elapsed, rss_start, rss_bytes([gateway_pid]), done - done_at_warmup, examples)


def main() -> None:
    import subprocess
    import sys

    from bench.service import start_gateway, start_triton
    from export.pipeline import export

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-requests", type=int, default=1_000_000)
    parser.add_argument("--model", default=str(ROOT / "models" / "clip-demo"))
    args = parser.parse_args()
    repository = ROOT / "build" / "load-repository"
    export(args.model, repository)
    triton = start_triton(repository, ROOT / "build" / "load-triton.log")
    gateway: subprocess.Popen[bytes] | None = None
    try:
        gateway, target = start_gateway(triton.grpc_url)
        report = run_load(target, gateway.pid, args.concurrency, args.seconds, args.max_requests)
        print(json.dumps(report.summary(), indent=2))
    finally:
        if gateway is not None:
            gateway.terminate()
            gateway.wait(30)
        triton.stop()
    sys.exit(0 if not report.failures else 1)


if __name__ == "__main__":
    main()
