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
import contextlib
import datetime
import io
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from bench.measure import Memory, Result, closed_loop, tree_memory
from launcher.server import TritonServer
from tests.support import triton

IMAGE_GFLOP = 35.1
ROOT = Path(__file__).resolve().parents[1]


def matmul_peak_gflops(dtype: torch.dtype, size: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def sample_png(seed: int) -> bytes:
    rgb = (np.random.default_rng(seed).random((480, 640, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


def eager(model: Any, precision: str, batch: int, seconds: float) -> Result:
    """In-process transformers get_image_features, eager, at one batch size."""
    pixels = torch.randn(batch, 3, 224, 224, dtype=PRECISIONS[precision])

    def call() -> None:
        with torch.inference_mode():
            model.get_image_features(pixel_values=pixels)

    return closed_loop(f"in-process eager {precision} batch {batch}", call, batch, 1, seconds)


def load_reference(checkpoint: Path, precision: str) -> Any:
    from transformers import CLIPModel

    return CLIPModel.from_pretrained(str(checkpoint), dtype=PRECISIONS[precision]).eval()


def in_process(checkpoint: Path, seconds: float) -> list[tuple[Result, str]]:
    rows = []
    for precision in PRECISIONS:
        model = load_reference(checkpoint, precision)
        rows += [(eager(model, precision, batch, seconds), precision) for batch in (1, 8)]
        del model
    return rows


def in_process_baseline(checkpoint: Path, seconds: float) -> Result:
    """In-process eager fp32 get_image_features at batch 8: what every ratio is against."""
    return eager(load_reference(checkpoint, "fp32"), "fp32", 8, seconds)


def start_gateway(triton_url: str) -> tuple[subprocess.Popen[bytes], str]:
    """The gateway as its own process, as deployed, so its memory is measured on its own."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from launcher.server import free_port

    target = f"127.0.0.1:{free_port()}"
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "--listen", target, "--triton-url", triton_url, "--log-level", "WARNING"],
        cwd=ROOT,
    )
    deadline = time.monotonic() + 60
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                if (
                    stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    return process, target
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the gateway did not become SERVING within 60 s")


@dataclass(frozen=True)
class RunningService:
    triton: TritonServer
    gateway: subprocess.Popen[bytes]
    target: str

    @property
    def triton_url(self) -> str:
        return self.triton.grpc_url

    def memory(self) -> Memory:
        """Triton with its stubs, and the gateway."""
        assert self.triton.process is not None
        return tree_memory([self.triton.process.pid, self.gateway.pid])


@contextlib.contextmanager
def running_service(repository: Path, log_file: Path) -> Iterator[RunningService]:
    """Triton on `repository` and a gateway process in front of it, stopped on the way out."""
    server = triton.start_triton(repository, log_file)
    try:
        gateway, target = start_gateway(server.grpc_url)
        try:
            yield RunningService(server, gateway, target)
        finally:
            gateway.terminate()
            gateway.wait(30)
    finally:
        server.stop()


def served(repository: Path, precision: str, seconds: float, log_dir: Path) -> tuple[list[tuple[Result, str]], Memory]:
    import tritonclient.grpc as grpcclient

    from clip_client import ClientConfig, ClipClient
    from tests.support.infer import bytes_input

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
    checkpoint = triton.checkpoint("vit-b-16")
    rows = in_process(checkpoint, args.seconds)
    memory = {}
    for precision in args.precisions.split(","):
        repository = triton.exported(
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
