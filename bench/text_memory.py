"""Peak memory of the text-encoder stub when one request brings many new prompts (ViT-B/16
shapes, random weights): 20,000 prompts none of which is in the label cache, sent to
clip_embed_text. The stub's peak resident memory (VmHWM) is read from /proc.

    python -m bench.text_memory [--prompts 20000]
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

from bench.machine import describe
from bench.service import ROOT, bytes_input, start_triton
from export import random_checkpoint
from launcher.supervisor import child_pids


def peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=20_000)
    args = parser.parse_args()
    out = ROOT / "build" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    server = start_triton(random_checkpoint.cached_export("vit-b-16"), out / "text-memory-triton.log")
    try:
        assert server.process is not None
        stub = next(
            pid
            for pid in child_pids(server.process.pid)
            if "/clip_text_encoder/" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        )
        before = peak_kib(stub)
        run = uuid.uuid4().hex[:8]
        texts = [f"a photo of new thing {run} number {i}".encode() for i in range(args.prompts)]
        started = time.monotonic()
        outcome = "ok"
        with grpcclient.InferenceServerClient(server.grpc_url) as client:
            try:
                result = client.infer("clip_embed_text", [bytes_input("TEXT", texts)], client_timeout=1800)
                assert np.asarray(result.as_numpy("TEXT_EMBEDS")).shape[0] == args.prompts
            except Exception as error:  # the stub may die of it: that is the finding
                outcome = f"failed: {str(error)[:200]}"
        seconds = time.monotonic() - started
        try:
            after = peak_kib(stub)
        except OSError:
            after = -1  # the stub is gone
        report = {
            "machine": describe(),
            "prompts": args.prompts,
            "outcome": outcome,
            "seconds": round(seconds, 1),
            "stub_peak_rss_mib_before": round(before / 1024),
            "stub_peak_rss_mib_after": round(after / 1024) if after >= 0 else None,
        }
        (out / "text_memory.json").write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report, indent=2))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
