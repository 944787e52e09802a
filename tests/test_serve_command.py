"""The README's run command end to end: unavailable model -> one clear line -> demo model served,
the sample image classified through the gateway and over HTTP, and a clean stop on SIGTERM that
leaves no process behind."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from launcher.server import free_port
from tests.support.processes import ManagedProcess
from tests.support.triton import ROOT


def test_serve_falls_back_to_the_demo_model_and_stops_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no test may reach a hub, even to be refused
    serve = ManagedProcess(
        "serve",
        [
            sys.executable,
            "-m",
            "serve",
            "--model",
            "nobody/no-such-clip",
            "--port",
            str(free_port()),
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
        tmp_path / "serve.log",
        cwd=ROOT,
    )
    try:
        output = serve.wait_for_log("serve: ready on", timeout=300)
    finally:
        code = serve.stop()
    assert "nobody/no-such-clip is not available here" in output and "serving the bundled demo model" in output
    # auto precision follows this machine (bf16 where native and measured faster, else fp32)
    served = re.search(r"\(demo, (fp32|bf16)\) answers", output)
    assert served, output
    precision = served.group(1)
    assert f"serve: it runs AOTInductor-compiled {precision} encoders on CPU; {precision}" in output  # and why
    ranked = [line.split()[0:2] for line in output.splitlines() if line.startswith("    ")]
    assert ranked[0] == ["red", "circle"]
    assert "POST /v1/classifications says red circle" in output
    assert code == 0
    assert "serve: stopped" in serve.log()
