"""The launcher's failure modes: a taken port and a model that cannot load, each with a clear reason."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.server import LaunchError, ServerSettings, TritonServer, free_port
from tests.support.triton import ROOT


def test_taken_port_is_reported_before_starting(tiny_repository: Path, tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        server = TritonServer(
            ServerSettings(
                model_repository=tiny_repository,
                grpc_port=port,
                http_port=free_port(),
                metrics_port=free_port(),
                work_dir=ROOT / "build" / "triton",
                log_file=tmp_path / "log",
            )
        )
        with pytest.raises(LaunchError, match=f"grpc port 127.0.0.1:{port} is already in use"):
            server.start()


def test_model_load_failure_shows_tritons_reason(tiny_repository: Path, tmp_path: Path) -> None:
    broken = tmp_path / "repository"
    shutil.copytree(tiny_repository, broken)
    (broken / "clip_similarity" / "1" / "model.py").write_text("raise ImportError('deliberately broken model')\n")
    server = TritonServer(
        ServerSettings(
            model_repository=broken,
            grpc_port=free_port(),
            http_port=free_port(),
            metrics_port=free_port(),
            work_dir=ROOT / "build" / "triton",
            log_file=tmp_path / "triton.log",
        )
    )
    with pytest.raises(LaunchError, match=r"clip_similarity failed to load: .*deliberately broken model"):
        server.start(ready_timeout=120)
    assert server.process is None  # stopped, not left running


def test_command_line_serves_until_sigterm(tiny_repository: Path, tmp_path: Path) -> None:
    ports = [str(free_port()) for _ in range(3)]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "launcher",
            "--model-repository",
            str(tiny_repository),
            "--grpc-port",
            ports[0],
            "--http-port",
            ports[1],
            "--metrics-port",
            ports[2],
            "--log-file",
            str(tmp_path / "triton.log"),
        ],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    ready = process.stderr.readline()
    assert "Triton ready on grpc" in ready and "serving" in ready
    process.terminate()
    assert process.wait(timeout=60) == 0
    assert "Triton stopped" in process.stderr.read()
