"""Podman as these machines allow it, for the container test: images built from Debian packages
(no registry is reachable), and the compose file run by docker-compose against podman's
Docker-compatible API.

What this sandbox needs, and why:
- `--runtime runc` and nofile/nproc rlimits of 1024: crun and podman's default rlimits are refused
  here ("error setting rlimit", "cgroups in hybrid mode not supported"). The API service gets
  both from a containers.conf of our own (CONTAINERS_CONF), so compose-created containers do too;
- builds reach PyPI only with host networking, this machine's pip configuration, its CA
  certificates and its local wheel folder (the CPU torch build) mounted in;
- podman runs health checks from systemd timers, and there is no systemd here: HealthTicker runs
  `podman healthcheck run` for the project's containers instead, which is what the timer would do.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from tests.support.processes import ManagedProcess, wait_for

ROOT = Path(__file__).resolve().parents[2]
RUN_FLAGS = ("--runtime", "runc")
LIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")
BASE_IMAGE = "localhost/clip-serve-base:bookworm"
BASE_PACKAGES = "python3.11,python3.11-venv,libpython3.11,ca-certificates"
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
"""


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *RUN_FLAGS, *args], capture_output=True, text=True, timeout=timeout, check=check)


def image_exists(name: str) -> bool:
    return podman("image", "exists", name, check=False).returncode == 0


def image_size(name: str) -> int:
    return int(json.loads(podman("image", "inspect", name).stdout)[0]["Size"])


def build_mounts() -> list[str]:
    """This machine's pip configuration, CA certificates and local wheels, read-only."""
    candidates = [
        "/etc/pip.conf",
        "/etc/xdg/pip",
        str(Path.home() / ".config" / "pip" / "pip.conf"),
        "/etc/ssl/certs",
        *[folder for folder in os.environ.get("PIP_FIND_LINKS", "/opt/wheels").split() if folder.startswith("/")],
    ]
    mounts = []
    for path in dict.fromkeys(candidates):
        if Path(path).exists():
            mounts += ["--volume", f"{path}:{path}:ro"]
    return mounts


def build_base(work: Path) -> float:
    """A Debian bookworm image with Python 3.11, from Debian's packages (mmdebstrap). Seconds taken,
    0 when it already exists."""
    if image_exists(BASE_IMAGE):
        return 0.0
    started = time.monotonic()
    tarball = work / "base.tar"
    subprocess.run(
        ["mmdebstrap", "--quiet", "--variant=minbase", f"--include={BASE_PACKAGES}", "bookworm", str(tarball)],
        check=True,
        capture_output=True,
        timeout=900,
    )
    podman("import", str(tarball), BASE_IMAGE, timeout=300)
    tarball.unlink()
    return time.monotonic() - started


def build(tag: str, dockerfile: Path, context: Path, log: Path, *build_args: str) -> float:
    """`podman build` in Docker's format (HEALTHCHECK is kept only there); seconds taken."""
    started = time.monotonic()
    args = [arg for pair in build_args for arg in ("--build-arg", pair)]
    with log.open("w") as sink:
        subprocess.run(
            [
                "podman",
                *RUN_FLAGS,
                "build",
                "--format",
                "docker",
                "--network",
                "host",
                *LIMITS,
                *build_mounts(),
                "--build-arg",
                f"BASE_IMAGE={BASE_IMAGE}",
                *args,
                "--file",
                str(dockerfile),
                "--tag",
                tag,
                str(context),
            ],
            check=True,
            stdout=sink,
            stderr=subprocess.STDOUT,
            timeout=1800,
        )
    return time.monotonic() - started


@contextlib.contextmanager
def api_service(work: Path) -> Iterator[str]:
    """podman's Docker-compatible API on a socket of its own; yields its DOCKER_HOST."""
    conf = work / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    socket = work / "podman.sock"
    service = ManagedProcess(
        "podman-service",
        ["podman", *RUN_FLAGS, "system", "service", "--time=0", f"unix://{socket}"],
        work / "podman-service.log",
        env={"CONTAINERS_CONF": str(conf)},
    )
    try:
        wait_for(socket.exists, 30, "podman's API socket", explain=service.log_tail)
        yield f"unix://{socket}"
    finally:
        service.stop()


class HealthTicker:
    """Runs every health check of a compose project every `interval` seconds, as podman's
    systemd timers would where systemd runs."""

    def __init__(self, project: str, interval: float = 2.0) -> None:
        self.project = project
        self.interval = interval
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="health-ticker", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.wait(self.interval):
            for name in project_containers(self.project, running=True):
                podman("healthcheck", "run", name, check=False, timeout=60)

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(120)


def project_containers(project: str, running: bool = False) -> list[str]:
    args = ["ps", "--format", "{{.Names}}", "--filter", f"label=com.docker.compose.project={project}"]
    return podman(*args if running else [*args, "--all"], check=False).stdout.split()


def leftovers(project: str) -> dict[str, list[str]]:
    """Every container, pod, volume and network the project still has."""
    label = f"label=com.docker.compose.project={project}"
    return {
        "containers": project_containers(project),
        "pods": podman("pod", "ps", "--format", "{{.Name}}", "--filter", label, check=False).stdout.split(),
        "volumes": podman("volume", "ls", "--format", "{{.Name}}", "--filter", label, check=False).stdout.split(),
        "networks": [
            name
            for name in podman("network", "ls", "--format", "{{.Name}}", check=False).stdout.split()
            if name.startswith(f"{project}_")
        ],
    }
