"""What a benchmark result was measured on (export/hardware.py describes the machine), and a short
name for its class, which names the committed result files, and how reports are written."""

from __future__ import annotations

import datetime
import json
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from export.hardware import describe

__all__ = ["ROOT", "describe", "machine_class", "report_header", "result_name", "write_report"]
ROOT = Path(__file__).resolve().parents[1]


def machine_class(info: dict[str, Any] | None = None) -> str:
    """A short name for the kind of CPU: which precisions it runs natively."""
    info = info or describe()
    features = set(info.get("features", []))
    if "amx_bf16" in features:
        return "amx"
    if "avx512_bf16" in features:
        return "avx512bf16"
    if "avx512f" in features:
        return "avx512"
    return "avx2"


def report_header(machine: dict[str, Any]) -> dict[str, Any]:
    """What every report starts with: when, on what, at which commit."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return {
        "date": datetime.date.today().isoformat(),
        "machine": machine,
        "machine_class": machine_class(machine),
        "commit": commit.stdout.strip(),
    }


def result_name(kind: str, machine: dict[str, Any]) -> str:
    """The name a committed copy of a `kind` report takes in bench/results/: one per machine class."""
    vendor = next((name for name in ("intel", "amd") if name in machine["model"].lower()), "cpu")
    return f"{kind}_{vendor}_{machine_class(machine)}_{machine['cores']}core"


def write_report(out: Path, stems: Sequence[str], report: dict[str, Any], text: str) -> None:
    """The report as STEM.json and its markdown as STEM.md under `out`, for every stem; printed."""
    for stem in stems:
        (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
        (out / f"{stem}.md").write_text(text)
    print(text)
