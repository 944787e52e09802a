"""One short GPU check (run on a lent GPU machine): do the exported encoders run on CUDA at parity,
and how fast are ViT-B/16 image embeddings there, eager and traced, fp32/bf16/fp16.

    python -m bench.gpu_check [--seconds 3] [--out DIR]

Random ViT-B/16 weights built in process (no files, no network). The traced graphs are made the
way the exporter makes them (on the CPU, then loaded with map_location=cuda, as the Triton model
does), and also traced on the GPU, to tell whether a CPU-traced artifact is device-portable.
Prints JSON and writes it to --out.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import torch

from export import encoders
from export.random_checkpoint import clip_config

IMAGE_GFLOP = 35.1


def images_per_s(module: torch.nn.Module, batch: int, dtype: torch.dtype, seconds: float) -> float:
    pixels = torch.randn(batch, 3, 224, 224, device="cuda", dtype=dtype)
    with torch.inference_mode():
        for _ in range(3):
            module(pixels)
        torch.cuda.synchronize()
        calls, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            module(pixels)
            calls += 1
        torch.cuda.synchronize()
    return calls * batch / (time.perf_counter() - started)


def roundtrip(traced: torch.jit.ScriptModule, device: str) -> torch.jit.ScriptModule:
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    buffer.seek(0)
    return torch.jit.load(buffer, map_location=device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--out", type=Path, default=Path("build/bench"))
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False  # parity first; TF32 is a separate speed choice
    torch.backends.cudnn.allow_tf32 = False
    report: dict[str, object] = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    torch.manual_seed(0)
    from transformers import CLIPModel

    cpu_model = CLIPModel(clip_config("vit-b-16")).eval()
    traced_image_cpu, traced_text_cpu = encoders.trace(cpu_model, "fp32")
    pixels = encoders.example_pixels(4, 224)
    ids = encoders.example_ids(4, 77, cpu_model)
    gpu_model = cpu_model.to("cuda")
    eager_image = encoders.ImageEncoder(gpu_model, torch.float32).eval()
    eager_text = encoders.TextEncoder(gpu_model).eval()
    parity: dict[str, float | str] = {}
    with torch.inference_mode():
        expected_image = eager_image(pixels.cuda()).cpu()
        expected_text = eager_text(ids.cuda()).cpu()
        for name, module, inputs, expected in (
            ("image, traced on cpu", traced_image_cpu, pixels, expected_image),
            ("text, traced on cpu", traced_text_cpu, ids, expected_text),
        ):
            try:
                got = roundtrip(module, "cuda")(inputs.cuda()).cpu()
                parity[name] = float((got - expected).abs().max())
            except Exception as error:  # a CPU-only constant baked into the graph shows here
                parity[name] = f"failed: {type(error).__name__}: {str(error)[:300]}"
    traced_image_gpu, traced_text_gpu = encoders.trace(gpu_model, "fp32", "cuda")
    with torch.inference_mode():
        for name, module, inputs, expected in (
            ("image, traced on cuda", traced_image_gpu, pixels, expected_image),
            ("text, traced on cuda", traced_text_gpu, ids, expected_text),
        ):
            parity[name] = float((roundtrip(module, "cuda")(inputs.cuda()).cpu() - expected).abs().max())
    report["max_abs_diff_vs_eager_gpu_fp32"] = parity
    speeds = {}
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
        model = CLIPModel(clip_config("vit-b-16")).eval().to("cuda", dtype)
        eager = encoders.ImageEncoder(model, dtype).eval()
        with torch.inference_mode(False), torch.no_grad():
            traced = torch.jit.trace(eager, torch.randn(8, 3, 224, 224, device="cuda"), check_trace=False)
        for batch in (1, 8, 64, 256):
            candidates: tuple[tuple[str, torch.nn.Module], ...] = (("eager", eager), ("traced", traced))
            for kind, candidate in candidates:
                rate = images_per_s(candidate, batch, torch.float32, args.seconds)
                speeds[f"{kind} {precision} batch {batch}"] = {
                    "images_per_s": round(rate, 1),
                    "tflops": round(rate * IMAGE_GFLOP / 1000, 1),
                }
        del model, eager, traced
        torch.cuda.empty_cache()
    report["image_tower_speed"] = speeds
    report["clip_as_service_anchor_images_per_s"] = 260  # ViT-B/16 on a TITAN RTX, published
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
