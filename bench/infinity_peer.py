"""infinity (michaelfeil/infinity), the served peer users would pick instead of this service, run
by the benchmark on the same random-weight checkpoint and called through its own HTTP API:
`/embeddings_image` with one image per call (a data URI of the same JPEG our rows send) and
`/embeddings` with 32 never-seen texts per call, closed loop, the rows `python -m bench` writes
beside ours against the same eager baseline.

    python -m bench.infinity_peer [--runs 1] [--seconds 8]   # infinity alone, against eager fp32

It lives in its own venv (build/bench/infinity-venv, from bench/requirements-infinity.txt, built
on first use: its pinned transformers and numpy are not the service's), starts in its own session
and is stopped with its children however the run ends. Nothing is downloaded at run time: the
model is a local folder and the hub is switched off. A peer that cannot be installed or started
raises `PeerUnavailable` with the reason, which the report shows in place of its rows.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench import venvs
from bench.measure import Result, closed_loop
from bench.service import ROOT, HttpCaller
from launcher.process_group import end_group
from launcher.server import free_port

REQUIREMENTS = ROOT / "bench" / "requirements-infinity.txt"
READY_TIMEOUT_S = 300.0
IMAGE_CONCURRENCY = (4, 8)
TEXT_CONCURRENCY = (1, 4, 8)
TEXTS_PER_CALL = 32
Record = Callable[[str, Result], None]


class PeerUnavailable(Exception):
    """infinity could not be installed or started on this machine; the message says why."""


def ensure_venv() -> Path:
    """The python of infinity's venv, built first if need be."""
    try:
        return venvs.ensure("infinity-venv", REQUIREMENTS)
    except venvs.VenvUnavailable as error:
        raise PeerUnavailable(str(error)) from error


def version(python: Path) -> str:
    done = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('infinity_emb'))"],
        capture_output=True,
        text=True,
    )
    return done.stdout.strip() or f"unknown: {venvs.tail(done.stderr)}"


@dataclass(frozen=True)
class Infinity:
    address: str  # host:port of its HTTP API
    model_id: str  # what each request's `model` names (GET /models)
    version: str
    ready_s: float  # from launch to its first answer to GET /models


def _model_id(address: str) -> str | None:
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        connection.request("GET", "/models")
        response = connection.getresponse()
        if response.status != 200:
            return None
        return str(json.loads(response.read())["data"][0]["id"])
    except (OSError, http.client.HTTPException, KeyError, IndexError, ValueError):
        return None
    finally:
        connection.close()


@contextlib.contextmanager
def running_infinity(checkpoint: Path, log_file: Path) -> Iterator[Infinity]:
    """`infinity_emb v2` on `checkpoint` (torch engine, CPU) on a free loopback port, until it answers."""
    python = ensure_venv()
    address = f"127.0.0.1:{free_port()}"
    command = [str(python.parent / "infinity_emb"), "v2", "--model-id", str(checkpoint), "--engine", "torch"]
    command += ["--device", "cpu", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1]]
    # offline, and no usage statistics sent anywhere
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0", "DO_NOT_TRACK": "1"}
    started = time.monotonic()
    with log_file.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        while (model_id := _model_id(address)) is None:
            if process.poll() is not None:
                raise PeerUnavailable(
                    f"infinity exited {process.returncode}: {venvs.tail(log_file.read_text('utf-8', 'replace'))}"
                )
            if time.monotonic() - started > READY_TIMEOUT_S:
                raise PeerUnavailable(f"infinity did not answer GET /models within {READY_TIMEOUT_S:.0f} s")
            time.sleep(0.5)
        yield Infinity(address, model_id, version(python), time.monotonic() - started)
    finally:
        end_group(process.pid, grace=30)  # its whole session: the engine runs in child processes
        process.wait()


def data_uri(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()


def image_embedding(peer: Infinity, jpeg: bytes) -> np.ndarray[Any, Any]:
    answer = HttpCaller(peer.address, "/embeddings_image").post({"model": peer.model_id, "input": [data_uri(jpeg)]})
    return np.asarray(answer["data"][0]["embedding"], dtype=np.float32)  # type: ignore[index]


def measure(peer: Infinity, images: list[bytes], seconds: float, record: Record) -> None:
    """infinity's rows, named as `python -m bench` names them."""
    uris = [data_uri(image) for image in images]
    counter = iter(range(10**9))
    embed_image = HttpCaller(peer.address, "/embeddings_image")
    for concurrency in IMAGE_CONCURRENCY:
        row = f"infinity /embeddings_image 1 image c={concurrency}"

        def call_image() -> object:
            return embed_image.post({"model": peer.model_id, "input": [uris[next(counter) % len(uris)]]})

        record(row, closed_loop(row, call_image, 1, concurrency, seconds, 2))
    embed_texts = HttpCaller(peer.address, "/embeddings")
    texts = [f"a photo of thing {i}" for i in range(TEXTS_PER_CALL)]
    for concurrency in TEXT_CONCURRENCY:
        row = f"infinity /embeddings {TEXTS_PER_CALL} new texts c={concurrency} (texts/s)"

        def call_texts() -> object:
            round_ = next(counter)
            return embed_texts.post({"model": peer.model_id, "input": [f"{t} {round_}" for t in texts]})

        record(row, closed_loop(row, call_texts, TEXTS_PER_CALL, concurrency, seconds, 1))


def run(
    checkpoint: Path,
    images: list[bytes],
    seconds: float,
    log_file: Path,
    record: Record,
    expected: np.ndarray[Any, Any],
) -> dict[str, float]:
    """One run: infinity started on `checkpoint`, its rows recorded, stopped; its time to ready and
    the cosine of its embedding of the first image against `expected` (the reference's, unit)."""
    with running_infinity(checkpoint, log_file) as peer:
        found = image_embedding(peer, images[0])
        measure(peer, images, seconds, record)
    return {"ready_s": peer.ready_s, "cosine_vs_reference": float(found @ expected / np.linalg.norm(found))}


def main() -> None:
    import torch

    from bench.workloads import eager, load_reference, reference_image_embedding, sample_png
    from export import random_checkpoint

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(os.cpu_count() or 2)
    checkpoint = random_checkpoint.cached("vit-b-16")
    reference = load_reference(checkpoint, "fp32")
    images = [sample_png(i) for i in range(16)]
    expected = reference_image_embedding(reference, checkpoint, images[0])
    print(f"infinity {version(ensure_venv())}", flush=True)
    for number in range(args.runs):
        baseline = eager(reference, "fp32", 8, args.seconds).items_per_s
        print(f"run {number + 1}: eager fp32 batch 8 {baseline:.2f} images/s", flush=True)

        def show(row: str, result: Result, baseline: float = baseline) -> None:
            print(f"{row}: {result.items_per_s:.2f}/s, {result.items_per_s / baseline:.2f}x eager", flush=True)

        print(run(checkpoint, images, args.seconds, args.out / f"infinity-{number}.log", show, expected), flush=True)


if __name__ == "__main__":
    main()
