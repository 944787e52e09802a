"""Bulk embedding through the service: the EmbedStream (ClipClient.embed_many) against the best
unary Embed loop a user would write, in one run, on the exact ViT-B/16 shapes (random weights).

    python -m bench.bulk [--images 2000] [--precision int8] [--probe-seconds 15]

1. Probes of --probe-seconds each: unary Embed calls of 1 and of --batch-size images at
   concurrency 2, 4 and 8; embed_many streams of --batch-size images per request with windows
   (requests in flight) 1, 2, 4 and 8. The best of each is its path's setting.
2. The same --images images through the best unary setting and through one embed_many stream at
   its best window, each timed end to end.
3. The gateway's RSS sampled every 0.5 s during both: start, peak and end of each run (flat
   memory: end - start and peak - start small against the images sent).
The images are --pool distinct 640x480 JPEGs, cycled (no model caches an image: the response
cache is the text encoder's only). The target (issue #25): stream >= 1.0x the best unary.
Writes build/bench/bulk_<vendor>_<class>_<cores>core.{json,md} (commit them to bench/results/).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.machine import describe, report_header, result_name, write_report
from bench.measure import closed_loop, rss_bytes
from bench.service import ROOT, running_service
from bench.workloads import sample_png
from export import random_checkpoint

MIB = 2**20


class RssSampler:
    """The RSS of one process every `interval` seconds, on a thread, while in a `with` block."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        self.pid, self.interval = pid, interval
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(rss_bytes([self.pid]))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(rss_bytes([self.pid]))

    def summary(self) -> dict[str, float]:
        start, peak, end = self.samples[0], max(self.samples), self.samples[-1]
        return {
            "rss_start_mib": round(start / MIB, 1),
            "rss_peak_mib": round(peak / MIB, 1),
            "rss_end_mib": round(end / MIB, 1),
            "rss_growth_mib": round((end - start) / MIB, 1),
        }


def cycled(pool: list[bytes], count: int) -> Iterator[bytes]:
    return (pool[index % len(pool)] for index in range(count))


def unary_run(client: Any, pool: list[bytes], count: int, per_call: int, concurrency: int) -> tuple[float, int]:
    """`count` images as Embed calls of `per_call` images, `concurrency` at once: (seconds, errors)."""
    calls = [
        [pool[(start + i) % len(pool)] for i in range(min(per_call, count - start))]
        for start in range(0, count, per_call)
    ]
    errors = 0

    def one(images: list[bytes]) -> int:
        return len(client.embed(images=images).image_errors)

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool_threads:
        for failed in pool_threads.map(one, calls):
            errors += failed
    return time.perf_counter() - started, errors


def stream_run(client: Any, pool: list[bytes], count: int, batch_size: int, window: int) -> tuple[float, int]:
    """`count` images through one embed_many: (seconds, errors); each image is yielded once."""
    seen, errors = 0, 0
    started = time.perf_counter()
    for _index, result in client.embed_many(cycled(pool, count), batch_size=batch_size, window=window, ordered=False):
        seen += 1
        errors += not result.ok
    assert seen == count, (seen, count)
    return time.perf_counter() - started, errors


def stream_probe(client: Any, pool: list[bytes], batch_size: int, window: int, seconds: float) -> float:
    """Images/s of one embed_many stream over an endless input, measured for `seconds` after its
    first window of results (the stream is cancelled when the loop leaves it)."""
    endless = (pool[index % len(pool)] for index in itertools.count())
    results = client.embed_many(endless, batch_size=batch_size, window=window, ordered=False)
    warm = batch_size * window
    counted, started = 0, 0.0
    for seen, _ in enumerate(results, start=1):
        if seen == warm:
            started = time.perf_counter()
        elif seen > warm:
            counted += 1
            if time.perf_counter() - started >= seconds:
                break
    results.close()
    return counted / (time.perf_counter() - started)


def _probe_row(probe: dict[str, Any]) -> str:
    if "concurrency" in probe:
        return f"| unary, {probe['per_call']} image(s) per call, c={probe['concurrency']} | {probe['images_per_s']} |"
    return f"| stream, {probe['per_call']} per request, window {probe['stream_window']} | {probe['images_per_s']} |"


def markdown(report: dict[str, Any]) -> str:
    machine = report["machine"]
    lines = [
        f"# Bulk embedding, {machine['model']} ({report['machine_class']}, {machine['cores']} cores), "
        f"{report['precision']}, commit {report['commit']}, {report['date']}",
        "",
        f"`{report['command']}`",
        "",
        "| probe | images/s |",
        "| --- | --- |",
    ]
    lines += [_probe_row(probe) for probe in report["probes"]]
    lines += [
        "",
        "| path | images | seconds | images/s | errors | gateway RSS start / peak / end MiB |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name in ("unary", "stream"):
        run = report[name]
        lines.append(
            f"| {run['label']} | {run['images']} | {run['seconds']} | {run['images_per_s']} | {run['errors']} | "
            f"{run['rss_start_mib']} / {run['rss_peak_mib']} / {run['rss_end_mib']} |"
        )
    target = report["target"]
    lines += [
        "",
        f"stream / best unary: **{target['ratio']}x** (target >= 1.0x: {'met' if target['met'] else 'not met'})",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--precision", default="int8")
    parser.add_argument("--pool", type=int, default=64, help="distinct images, cycled")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--probe-seconds", type=float, default=15.0)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    from clip_client import ClientConfig, ClipClient

    repository = random_checkpoint.cached_export("vit-b-16", args.precision)
    pool = [sample_png(seed) for seed in range(args.pool)]
    machine = describe()
    report: dict[str, Any] = {
        **report_header(machine),
        "command": "python -m bench.bulk "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
        "precision": args.precision,
    }
    with (
        running_service(repository, args.out / "bulk-triton.log") as service,
        ClipClient(config=ClientConfig(target=service.target, timeout=600)) as client,
    ):
        probes: list[dict[str, Any]] = []
        for per_call in (1, args.batch_size):
            for concurrency in (2, 4, 8):
                counter = iter(range(10**9))

                def call(per_call: int = per_call, counter: Iterator[int] = counter) -> object:
                    first = next(counter) * per_call
                    return client.embed(images=[pool[(first + i) % len(pool)] for i in range(per_call)])

                result = closed_loop(
                    f"unary {per_call} c={concurrency}", call, per_call, concurrency, args.probe_seconds
                )
                probes.append(
                    {"per_call": per_call, "concurrency": concurrency, "images_per_s": round(result.items_per_s, 2)}
                )
                print(probes[-1], flush=True)
        for window in (1, 2, 4, 8):
            rate = stream_probe(client, pool, args.batch_size, window, args.probe_seconds)
            probes.append({"stream_window": window, "per_call": args.batch_size, "images_per_s": round(rate, 2)})
            print(probes[-1], flush=True)
        best = max((p for p in probes if "concurrency" in p), key=lambda probe: probe["images_per_s"])
        best_window = max((p for p in probes if "stream_window" in p), key=lambda probe: probe["images_per_s"])
        window = best_window["stream_window"]
        runs: dict[str, tuple[str, Callable[[], tuple[float, int]]]] = {
            "unary": (
                f"unary Embed, {best['per_call']} image(s) per call, c={best['concurrency']}",
                lambda: unary_run(client, pool, args.images, best["per_call"], best["concurrency"]),
            ),
            "stream": (
                f"EmbedStream (embed_many), {args.batch_size} per request, window {window}",
                lambda: stream_run(client, pool, args.images, args.batch_size, window),
            ),
        }
        for name, (label, run) in runs.items():
            with RssSampler(service.gateway.pid) as memory:
                seconds, errors = run()
            report[name] = {
                "label": label,
                "images": args.images,
                "seconds": round(seconds, 1),
                "images_per_s": round(args.images / seconds, 2),
                "errors": errors,
                **memory.summary(),
            }
            print(report[name], flush=True)
    report["probes"] = probes
    ratio = report["stream"]["images_per_s"] / report["unary"]["images_per_s"]
    report["target"] = {"ratio": round(ratio, 3), "met": ratio >= 1.0}
    write_report(args.out, [result_name("bulk", machine)], report, markdown(report))


if __name__ == "__main__":
    main()
