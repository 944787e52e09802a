"""The launcher's failure modes (a taken port, a model that cannot load: each with a clear reason,
nothing left running) and its normal life (ready, then a clean stop on SIGTERM)."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

from configuration import threads
from launcher.runtime import TritonRuntime
from launcher.server import (
    DEFAULT_SHM_PREFIX,
    SHM_PREFIX_ENV,
    LaunchError,
    ServerSettings,
    TritonServer,
    command,
    free_port,
)
from tests.support.processes import wait_for
from tests.support.servers import LauncherTriton
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
        assert server.process is None  # refused before anything was started


def test_model_load_failure_shows_tritons_reason_and_leaves_nothing(tiny_repository: Path, tmp_path: Path) -> None:
    broken = tmp_path / "repository"
    shutil.copytree(tiny_repository, broken)
    (broken / "clip_similarity" / "1" / "model.py").write_text("raise ImportError('deliberately broken model')\n")
    launcher = LauncherTriton(broken, tmp_path)
    try:
        wait_for(
            lambda: not launcher.process.running(), 120, "the launcher giving up", explain=launcher.process.log_tail
        )
        assert launcher.process.process.returncode == 1
        assert "clip_similarity failed to load:" in launcher.process.log()
        assert "deliberately broken model" in launcher.process.log()
    finally:
        launcher.stop()  # fails if any process of it (Triton, a stub) is still running


def test_a_package_compiled_for_a_higher_capability_is_refused_at_load(tiny_repository: Path, tmp_path: Path) -> None:
    """As if the repository had been exported on a CPU with more than this one has: the encoder
    says so and what to do, instead of dying on an illegal instruction mid-request."""
    foreign = tmp_path / "repository"
    shutil.copytree(tiny_repository, foreign)
    config = foreign / "clip_image_encoder" / "config.pbtxt"
    assert 'string_value: "AVX512"' in config.read_text() or 'string_value: "AVX2"' in config.read_text()
    config.write_text(config.read_text().replace('string_value: "AVX512"', 'string_value: "AVX10"'))
    config.write_text(config.read_text().replace('string_value: "AVX2"', 'string_value: "AVX10"'))
    launcher = LauncherTriton(foreign, tmp_path)
    try:
        wait_for(
            lambda: not launcher.process.running(), 120, "the launcher giving up", explain=launcher.process.log_tail
        )
        log = launcher.process.log()
        assert "clip_image_encoder failed to load:" in log
        assert "model.pt2 was compiled for AVX10" in log and "--compile none" in log
    finally:
        launcher.stop()


def test_command_line_serves_until_sigterm(tiny_repository: Path, tmp_path: Path) -> None:
    launcher = LauncherTriton(tiny_repository, tmp_path)
    try:
        launcher.wait_ready()
        ready = launcher.process.log()
        assert "Triton ready on grpc" in ready and "serving" in ready
        # which path runs and why, from the launcher and from each encoder model as it loads
        assert "launcher: AOTInductor-compiled fp32 encoders on CPU; fp32 asked for" in ready
        assert "clip_image_encoder: running AOTInductor package model.pt2" in launcher.triton_log.read_text()
    finally:
        code = launcher.stop()
    assert code == 0
    assert "Triton stopped" in launcher.process.log()


def test_each_launcher_names_its_shared_memory_with_a_prefix_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two Tritons never share a region prefix (the launcher's pid and a counter, after
    $CLIP_SERVE_SHM_PREFIX), so each finds and deletes only its own regions; Triton is told it."""
    monkeypatch.setenv(SHM_PREFIX_ENV, "base_")
    first, second = (ServerSettings(model_repository="s3://bucket/repository") for _ in range(2))
    assert first.shm_region_prefix != second.shm_region_prefix
    assert first.shm_region_prefix.startswith(f"base_{os.getpid()}_")
    runtime = TritonRuntime(Path("tritonserver"), Path("backends"), Path("caches"), Path("lib"))
    assert f"--backend-config=python,shm-region-prefix-name={first.shm_region_prefix}" in command(runtime, first)
    monkeypatch.delenv(SHM_PREFIX_ENV)
    assert ServerSettings(model_repository="s3://bucket/repository").shm_region_prefix.startswith(DEFAULT_SHM_PREFIX)


def test_triton_and_its_stubs_run_numpy_on_one_blas_thread(tiny_triton: LauncherTriton) -> None:
    """configuration.threads: OpenBLAS's spinning threads took the encoders' cores on 2 cores; the
    launcher starts Triton (and so every Python-backend stub) with OPENBLAS_NUM_THREADS=1."""
    triton = tiny_triton.triton_pid()
    for pid in (triton, *tiny_triton.stub_pids()):
        environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert b"OPENBLAS_NUM_THREADS=1" in environment, pid


def test_an_operators_own_blas_threads_are_kept() -> None:
    environment = {"OPENBLAS_NUM_THREADS": "4"}
    threads.pin(environment)
    assert environment == {"OPENBLAS_NUM_THREADS": "4"}
    empty: dict[str, str] = {}
    threads.pin(empty)
    assert empty == {"OPENBLAS_NUM_THREADS": "1"}
