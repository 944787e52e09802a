"""The README's run command end to end: unavailable model -> one clear line -> demo model served,
the sample image classified through the gateway, and a clean stop on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from launcher.server import free_port
from tests.support.triton import ROOT


def test_serve_falls_back_to_the_demo_model_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "serve",
            "--model",
            "nobody/no-such-clip",
            "--port",
            str(port),
            "--triton-metrics-port",
            str(free_port()),
            "--metrics-listen",
            f"127.0.0.1:{free_port()}",
            "--http-listen",
            f"127.0.0.1:{free_port()}",
            "--repository",
            str(tmp_path / "repository"),
            "--triton-log",
            str(tmp_path / "triton.log"),
        ],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},  # no test may reach a hub, even to be refused
    )
    assert process.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        lines.append(line)
        if "ready on" in line:
            break
    output = "".join(lines)
    assert "nobody/no-such-clip is not available here" in output and "serving the bundled demo model" in output
    assert "(demo, fp32) answers" in output
    ranked = [line.split()[0:2] for line in lines if line.startswith("    ")]
    assert ranked[0] == ["red", "circle"]
    assert "POST /v1/classifications says red circle" in output
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    assert "serve: stopped" in process.stderr.read()
