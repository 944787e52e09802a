"""The image tower as users would run it without this service, in process, beside eager PyTorch
fp32 in the same run: ONNX Runtime fp32 and dynamic int8, OpenVINO fp32 and int8 (NNCF
post-training quantization). ViT-B/16 shapes, random weights, batch 8, one caller.

    pip install -r bench/requirements-peers.txt
    python -m bench.peers [--seconds 8] [--runs 3]

Every peer is a ratio of images/s against eager fp32 measured in the same run, with the lowest
cosine of its embeddings against eager fp32's on the same pixels. A peer that cannot be installed,
exported or run here is reported with its error, never left out. Writes
build/bench/peers_latest.{json,md} and peers_<vendor>_<class>_<cores>core.*, the name its copy
takes in bench/results/.

The served paths of this service, and infinity served through its HTTP API (bench.infinity_peer),
are measured by `python -m bench` against the same eager baseline, not in this run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import venvs
from bench.machine import ROOT, describe, report_header, result_name, write_report
from bench.measure import closed_loop
from bench.workloads import load_reference
from export import random_checkpoint

BATCH = 8
CALIBRATION_BATCHES = 4  # NNCF's calibration: random pixels are as good as any for random weights
Array = np.ndarray[Any, Any]
Infer = Callable[[Array], Array]


class ImageTower(torch.nn.Module):
    """get_image_features as a module of one tensor, for the exporters."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        features = self.model.get_image_features(pixel_values=pixel_values)
        # transformers 5 returns an output object whose pooler_output is the projected features
        projected: torch.Tensor = getattr(features, "pooler_output", features)
        return projected


def export_onnx(tower: ImageTower, path: Path) -> None:
    pixels = torch.randn(BATCH, 3, 224, 224)
    torch.onnx.export(
        tower,
        (pixels,),
        str(path),
        input_names=["pixel_values"],
        output_names=["image_embeds"],
        dynamic_axes={"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )


def onnxruntime_peer(path: Path) -> Infer:
    ort = importlib.import_module("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 2
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda pixels: np.asarray(session.run(None, {"pixel_values": pixels})[0])


def onnxruntime_int8(fp32: Path, out: Path) -> Path:
    quantization = importlib.import_module("onnxruntime.quantization")
    quantization.quantize_dynamic(str(fp32), str(out), weight_type=quantization.QuantType.QInt8)
    return out


def openvino_peer(model: Any) -> Infer:
    ov = importlib.import_module("openvino")
    # f32 said outright: on a CPU with bf16 OpenVINO otherwise runs "fp32" models in bf16.
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return lambda pixels: np.asarray(compiled(pixels)[0])


def openvino_int8(fp32_onnx: Path) -> Any:
    ov, nncf = importlib.import_module("openvino"), importlib.import_module("nncf")
    model = ov.Core().read_model(str(fp32_onnx))
    rng = np.random.default_rng(1)
    batches = [rng.standard_normal((BATCH, 3, 224, 224), dtype=np.float32) for _ in range(CALIBRATION_BATCHES)]
    return nncf.quantize(model, nncf.Dataset(batches), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(batches))


def lowest_cosine(found: Array, reference: Array) -> float:
    a = found / np.linalg.norm(found, axis=1, keepdims=True)
    b = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    return float(np.min(np.sum(a * b, axis=1)))


def build_peers(tower: ImageTower, work: Path) -> dict[str, Callable[[], Infer]]:
    """name -> how to make it (called once, timed, inside the run: a failure is that peer's)."""
    fp32_onnx = work / "tower.onnx"

    def ort_fp32() -> Infer:
        export_onnx(tower, fp32_onnx)
        return onnxruntime_peer(fp32_onnx)

    def ort_int8() -> Infer:
        return onnxruntime_peer(onnxruntime_int8(fp32_onnx, work / "tower_int8.onnx"))

    def ov_fp32() -> Infer:
        return openvino_peer(importlib.import_module("openvino").Core().read_model(str(fp32_onnx)))

    def ov_int8() -> Infer:
        return openvino_peer(openvino_int8(fp32_onnx))

    return {
        "onnxruntime fp32": ort_fp32,
        "onnxruntime dynamic int8": ort_int8,
        "openvino fp32": ov_fp32,
        "openvino int8 (nncf)": ov_int8,
    }


def versions() -> dict[str, str]:
    found: dict[str, str] = {"torch": str(torch.__version__)}
    for name in ("onnxruntime", "openvino", "nncf", "onnx"):
        try:
            found[name] = str(importlib.import_module(name).__version__)
        except Exception as error:  # not installed: said, not hidden
            found[name] = f"not available: {type(error).__name__}: {error}"
    return found


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# In-process peers of the image tower, {report['date']} ({report['machine_class']}, "
        f"{report['machine']['cores']} cores, commit {report['commit']})",
        "",
        f"Baseline: eager PyTorch fp32 batch {BATCH}, {report['baseline_images_per_s']} images/s (median of runs).",
        "",
        "| peer | images/s (median) | x eager fp32 (each run) | lowest cosine vs eager fp32 | build s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, peer in report["peers"].items():
        if "error" in peer:
            lines.append(f"| {name} | did not run: {peer['error'][:200]} | | | |")
            continue
        ratios = ", ".join(f"{ratio:.2f}" for ratio in peer["ratios"])
        lines.append(
            f"| {name} | {peer['images_per_s']} | {ratios} | {peer['lowest_cosine']:.5f} | {peer['build_s']} |"
        )
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items())]
    return "\n".join(lines) + "\n"


def _bound(infer: Infer, pixels: Array) -> Callable[[], object]:
    return lambda: infer(pixels)


class PeersUnavailable(Exception):
    """The in-process peers could not be installed or run as a whole; the message says why."""


def run_apart(seconds: float, out: Path) -> dict[str, Any]:
    """One run of this file in its own venv (build/bench/peers-venv, built first if need be), as
    `python -m bench` runs it: its report (each peer a ratio against an eager fp32 measured beside
    it in that run, or its error)."""
    requirements = ROOT / "bench" / "requirements-peers.txt"
    try:
        python = venvs.ensure("peers-venv", requirements)
    except venvs.VenvUnavailable as error:
        raise PeersUnavailable(str(error)) from error
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "proto")]), "HF_HUB_OFFLINE": "1"}
    command = [str(python), "-m", "bench.peers", "--runs", "1", "--seconds", str(seconds), "--out", str(out)]
    # run() kills the child however this ends (a timeout, ^C); the peers start no processes of their own
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise PeersUnavailable(f"python -m bench.peers exited {done.returncode}: {venvs.tail(done.stderr)}")
    report: dict[str, Any] = json.loads((out / "peers_latest.json").read_text())
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(os.cpu_count() or 2)
    machine = describe()
    model = load_reference(random_checkpoint.cached("vit-b-16"), "fp32")
    tower = ImageTower(model).eval()
    pixels = np.random.default_rng(0).standard_normal((BATCH, 3, 224, 224), dtype=np.float32)
    with torch.inference_mode():
        reference = tower(torch.from_numpy(pixels)).numpy()

    def eager_call() -> None:
        with torch.inference_mode():
            tower(torch.from_numpy(pixels))

    peers: dict[str, dict[str, Any]] = {}
    runnable: dict[str, Infer] = {}
    with tempfile.TemporaryDirectory(prefix="clip-peers-") as work:
        for name, build in build_peers(tower, Path(work)).items():
            started = time.perf_counter()
            try:
                infer = build()
                cosine = lowest_cosine(infer(pixels), reference)
            except Exception as error:  # the peer's failure is its result, with its error
                peers[name] = {"error": f"{type(error).__name__}: {error}"}
                continue
            runnable[name] = infer
            peers[name] = {"build_s": round(time.perf_counter() - started, 1), "lowest_cosine": cosine, "ratios": []}
        baseline_rates: list[float] = []
        rates: dict[str, list[float]] = {name: [] for name in runnable}
        for _ in range(args.runs):  # eager measured in every run, beside the peers
            baseline = closed_loop("eager fp32", eager_call, BATCH, 1, args.seconds).items_per_s
            baseline_rates.append(baseline)
            for name, infer in runnable.items():
                rate = closed_loop(name, _bound(infer, pixels), BATCH, 1, args.seconds).items_per_s
                rates[name].append(rate)
                peers[name]["ratios"].append(round(rate / baseline, 3))
    for name, found in rates.items():
        peers[name]["images_per_s"] = round(statistics.median(found), 2)
    report = {
        **report_header(machine),
        "batch": BATCH,
        "seconds_per_row": args.seconds,
        "baseline": f"in-process eager PyTorch fp32 batch {BATCH}",
        "baseline_images_per_s": round(statistics.median(baseline_rates), 2),
        "peers": peers,
        "versions": versions(),
    }
    write_report(args.out, ("peers_latest", result_name("peers", machine)), report, markdown(report))


if __name__ == "__main__":
    main()
