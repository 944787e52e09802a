"""Start a real tritonserver, wait until every model is ready, and stop it cleanly."""

from __future__ import annotations

import collections
import contextlib
import ctypes
import itertools
import json
import logging
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from clip_contract import artifacts
from launcher.process_group import end_group, regions_named, remove_shm_regions, shm_regions
from launcher.runtime import TritonRuntime, locate

log = logging.getLogger("launcher.server")


class LaunchError(RuntimeError):
    """Triton did not come up; the message carries Triton's own reason."""


# Where the names of the Python-backend stubs' /dev/shm regions start (the test harness sets it
# to one of its run's own); each launcher adds its pid and a counter, the backend a UUID.
SHM_PREFIX_ENV = "CLIP_SERVE_SHM_PREFIX"
DEFAULT_SHM_PREFIX = "clip_serve_shm_"
_shm_counter = itertools.count(1)


def unique_shm_prefix() -> str:
    """A region-name prefix no other Triton uses: $CLIP_SERVE_SHM_PREFIX (default clip_serve_shm_),
    this process's pid and a counter. Regions are then found and deleted by it alone."""
    base = os.environ.get(SHM_PREFIX_ENV) or DEFAULT_SHM_PREFIX
    if "/" in base:
        raise ValueError(f"{SHM_PREFIX_ENV} must be a file name part, not {base!r}")
    return f"{base}{os.getpid()}_{next(_shm_counter)}_"


@dataclass(frozen=True)
class ServerSettings:
    model_repository: Path | str  # a local folder, or a URL Triton reads itself (s3://, gs://, as://)
    grpc_port: int = 8001
    http_port: int = 8000
    metrics_port: int = 8002
    address: str = "127.0.0.1"  # Triton is internal: only the gateway talks to it
    # Where the Python backend for this interpreter is prepared (copied once, then reused). The
    # container image prepares it at build time and names it in CLIP_SERVE_TRITON_DIR, so a
    # read-only root filesystem is enough at run time.
    work_dir: Path = field(default_factory=lambda: Path(os.environ.get("CLIP_SERVE_TRITON_DIR", "build/triton")))
    log_file: Path | None = None  # None: Triton's log goes to this process's stdout
    response_cache_bytes: int = 256 * 1024 * 1024
    # Pre-sized shared memory per stub, so the first large request does not pay for growth.
    python_shm_bytes: int = 64 * 1024 * 1024
    python_shm_growth_bytes: int = 64 * 1024 * 1024
    # How this Triton's stubs' /dev/shm regions are named (Triton's default is shared by every
    # Triton on the machine): unique per launcher instance unless given. One given must not be
    # shared with another Triton: stop() deletes every region that carries it.
    shm_region_prefix: str = field(default_factory=unique_shm_prefix)
    extra_args: tuple[str, ...] = field(default_factory=tuple)


_LOAD_FAILURE = re.compile(r"failed to load '([^']+)' version \d+: (.*)")


def _terminate_with_parent() -> None:
    """In the child before exec: SIGTERM when the thread that started us dies, so a launcher
    that is SIGKILLed or crashes leaves no orphaned Triton holding the ports (Linux only)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def port_in_use(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError:
            return True
    return False


_handed_out: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A port free now to listen on, chosen below the kernel's ephemeral range: a port the kernel
    hands out (bind to 0) can be taken by any outgoing connection before our server binds it
    (seen in tests: "Failed to bind to address 127.0.0.1:33773")."""
    low, _ = _ephemeral_range()
    candidates = range(max(1024, low - 12000), low) if low > 2048 else range(0)
    for port in random.sample(candidates, min(200, len(candidates))):
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:  # no room below: the kernel's choice
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def is_remote(repository: Path | str) -> bool:
    """Object storage that Triton reads itself (s3://bucket/path, gs://, as://)."""
    return isinstance(repository, str) and "://" in repository


def repository_location(text: str) -> Path | str:
    """A --model-repository value: a URL stays a string, anything else is a local path."""
    return text if "://" in text else Path(text)


def expected_models(repository: Path | str) -> list[str]:
    """The models a local repository holds; for object storage, not known before Triton lists them."""
    if is_remote(repository):
        return []
    return sorted(path.parent.name for path in Path(repository).glob("*/config.pbtxt"))


def command(runtime: TritonRuntime, settings: ServerSettings) -> list[str]:
    repository = settings.model_repository
    location = repository if is_remote(repository) else Path(repository).resolve()
    return [
        str(runtime.binary),
        f"--model-repository={location}",
        f"--backend-directory={runtime.backend_dir.resolve()}",
        f"--cache-directory={runtime.cache_dir}",
        f"--cache-config=local,size={settings.response_cache_bytes}",
        f"--backend-config=python,shm-default-byte-size={settings.python_shm_bytes}",
        f"--backend-config=python,shm-growth-byte-size={settings.python_shm_growth_bytes}",
        f"--backend-config=python,shm-region-prefix-name={settings.shm_region_prefix}",
        # Each auto-complete starts an extra stub that imports torch; our configs are complete.
        "--disable-auto-complete-config",
        f"--grpc-address={settings.address}",
        f"--grpc-port={settings.grpc_port}",
        f"--http-address={settings.address}",
        f"--http-port={settings.http_port}",
        f"--metrics-address={settings.address}",
        f"--metrics-port={settings.metrics_port}",
        "--allow-gpu-metrics=false",
        "--exit-timeout-secs=10",
        "--log-verbose=0",
        *settings.extra_args,
    ]


class TritonServer:
    """A tritonserver child process: start() waits until it serves, stop() ends it."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.process: subprocess.Popen[bytes] | None = None
        self._log_handle: IO[bytes] | None = None
        self._log_thread: threading.Thread | None = None
        # The last lines of Triton's log, to explain a failed start.
        self.recent_log: collections.deque[str] = collections.deque(maxlen=400)
        # Shared-memory regions of this Triton's stubs, to delete if Triton cannot (it crashed).
        self.regions: set[str] = set()

    def _pump_log(self) -> None:
        """Copy Triton's output to the log file (or our stdout) and keep its tail."""
        process = self.process
        assert process is not None and process.stdout is not None
        sink = self._log_handle
        for line in iter(process.stdout.readline, b""):
            self.recent_log.append(line.decode(errors="replace").rstrip("\n"))
            if sink is not None:
                sink.write(line)
                sink.flush()
            else:
                sys.stdout.buffer.write(line)
                sys.stdout.buffer.flush()

    @property
    def grpc_url(self) -> str:
        return f"{self.settings.address}:{self.settings.grpc_port}"

    @property
    def http_url(self) -> str:
        host = "127.0.0.1" if self.settings.address in ("0.0.0.0", "") else self.settings.address
        return f"http://{host}:{self.settings.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.settings.address}:{self.settings.metrics_port}/metrics"

    def start(self, ready_timeout: float = 300.0) -> None:
        settings = self.settings
        if not is_remote(settings.model_repository) and not expected_models(settings.model_repository):
            raise LaunchError(f"{settings.model_repository} holds no models: run `python -m export` first")
        for name, port in (
            ("grpc", settings.grpc_port),
            ("http", settings.http_port),
            ("metrics", settings.metrics_port),
        ):
            if port_in_use(settings.address, port):
                raise LaunchError(
                    f"{name} port {settings.address}:{port} is already in use: choose another with --{name}-port"
                )
        settings.work_dir.mkdir(parents=True, exist_ok=True)
        runtime = locate(settings.work_dir)
        if settings.log_file is not None:
            settings.log_file.parent.mkdir(parents=True, exist_ok=True)
            self._log_handle = settings.log_file.open("ab")
        self.process = subprocess.Popen(
            command(runtime, settings),
            env=runtime.environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # our Ctrl-C is handled by us, then passed on as SIGTERM
            preexec_fn=_terminate_with_parent,
        )
        self._log_thread = threading.Thread(target=self._pump_log, name="triton-log", daemon=True)
        self._log_thread.start()
        try:
            self.wait_ready(ready_timeout)
        except BaseException:
            self.stop()
            raise
        self.note_regions()

    def note_regions(self) -> None:
        """Remember the stubs' shared-memory regions (call when Triton has started stubs)."""
        if self.process is not None:
            self.regions |= shm_regions(self.process.pid, self.settings.shm_region_prefix)

    def wait_ready(self, timeout: float) -> None:
        """Poll until every model in the repository is READY; fail fast on a load error or an exit."""
        import tritonclient.grpc as grpcclient

        expected = expected_models(self.settings.model_repository)
        deadline = time.monotonic() + timeout
        client = grpcclient.InferenceServerClient(self.grpc_url)
        try:
            while True:
                if self.process is not None and self.process.poll() is not None:
                    if self._log_thread is not None:
                        self._log_thread.join(5)
                    raise LaunchError(
                        f"tritonserver exited with code {self.process.returncode}: {self.failure_reason()}"
                    )
                states = self._model_states(client)
                failed = {name: reason for name, (state, reason) in states.items() if state == "UNAVAILABLE" and reason}
                if failed:
                    details = "; ".join(f"{name}: {reason}" for name, reason in sorted(failed.items()))
                    raise LaunchError(f"models failed to load: {details}")
                # Object storage: every model Triton found there (its index is complete once it lists any).
                wanted = expected or list(states)
                if wanted and all(states.get(name, ("", ""))[0] == "READY" for name in wanted):
                    return
                if time.monotonic() > deadline:
                    pending = [name for name in wanted if states.get(name, ("", ""))[0] != "READY"]
                    pending = pending or ["(no model listed yet)"]
                    raise LaunchError(
                        f"models not ready after {timeout:.0f}s: {', '.join(pending)}; {self.failure_reason()}"
                    )
                time.sleep(0.25)
        finally:
            client.close()

    @staticmethod
    def _model_states(client: object) -> dict[str, tuple[str, str]]:
        from tritonclient.utils import InferenceServerException

        try:
            index = client.get_model_repository_index(as_json=True)  # type: ignore[attr-defined]
        except InferenceServerException:
            return {}  # not listening yet
        return {model["name"]: (model.get("state", ""), model.get("reason", "")) for model in index.get("models", [])}

    def failure_reason(self) -> str:
        """Triton's own words: each model's load error, else the last error lines of its log."""
        lines = list(self.recent_log)
        reasons = {}
        for line in lines:
            match = _LOAD_FAILURE.search(line)
            if match and match.group(1) not in reasons:
                reasons[match.group(1)] = match.group(2).split("\\n")[0]
        if reasons:
            return "; ".join(f"model {name} failed to load: {reason}" for name, reason in reasons.items())
        errors = [line for line in lines if line.startswith("E") or "error" in line.lower()]
        return "\n".join((errors or lines)[-10:]) or "no log output"

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM to Triton (it stops its stubs), SIGKILL after `timeout`; then end whatever is
        left in its process group, which after a crash or a SIGKILL means orphaned stubs.
        Returns Triton's exit code."""
        process, self.process = self.process, None
        code = None
        if process is not None:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
            code = process.returncode
            prefix = self.settings.shm_region_prefix
            self.regions |= shm_regions(process.pid, prefix)  # stubs still running (orphans) name theirs
            orphans = end_group(process.pid)  # Triton leads its own group (start_new_session)
            if orphans:
                log.warning("ended %d process(es) Triton left behind: %s", len(orphans), orphans)
            # The prefix is this server's alone: whatever carries it now is what its stubs left
            # (one that died before it was noted included).
            leftover = remove_shm_regions(self.regions | regions_named(prefix), prefix)
            if leftover:
                log.warning("deleted %d shared-memory region(s) Triton left in /dev/shm", len(leftover))
            self.regions = set()
        if self._log_thread is not None:
            self._log_thread.join(5)
            self._log_thread = None
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None
        return code


def manifest(repository: Path | str) -> dict[str, object]:
    """What the exporter recorded (model id, precision, ...); empty for object storage."""
    if is_remote(repository):
        return {}
    path = Path(repository) / artifacts.MANIFEST
    return json.loads(path.read_text()) if path.is_file() else {}
