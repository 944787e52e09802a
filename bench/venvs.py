"""The benchmark's own venvs under build/bench/, one per peer, so that a peer's pinned packages
(infinity's transformers and numpy, OpenVINO's and NNCF's dependencies) never meet the service's.
Each is built on first use from its requirements file, torch first with the exact pin that is the
CPU build on local disk (anything looser pulls CUDA), and brought up to date when that file
changes."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from bench.machine import ROOT

TORCH = "torch==2.13.0"


class VenvUnavailable(Exception):
    """A peer's venv could not be built on this machine; the message names the step and why."""


def tail(text: str, limit: int = 600) -> str:
    """The end of a tool's output, on one line: where its error is."""
    return " ".join(text.strip().splitlines()[-6:])[-limit:]


def ensure(name: str, requirements: Path) -> Path:
    """The python of build/bench/`name`, with `requirements` installed."""
    venv = ROOT / "build" / "bench" / name
    python = venv / "bin" / "python"
    stamp = venv / ".requirements.sha"
    want = hashlib.sha256(requirements.read_bytes()).hexdigest()
    if python.is_file() and stamp.is_file() and stamp.read_text() == want:
        return python
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "-q", TORCH],
        [str(python), "-m", "pip", "install", "-q", "-r", str(requirements)],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            raise VenvUnavailable(f"{name}: `{' '.join(step[2:])}` failed: {tail(done.stderr)}")
    stamp.write_text(want)
    return python
