"""Keep Triton serving: restart it when it exits, when one of its Python-backend stubs dies, or
when it stops answering its liveness check for `hang_timeout` seconds (a hung server: alive,
listening, answering nothing, would otherwise stay NOT_SERVING for good).

A dead stub does not make its model unready in this Triton (2.51): readiness stays green while
every inference through that model fails with "Stub process ... is not healthy". So the
supervisor watches the stub processes themselves (children of tritonserver), and restarts the
whole server, which Triton no longer does for stubs by itself. Restarts are rate-limited: past
`max_restarts` within `window` seconds it gives up and reports why.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path

from launcher.server import LaunchError, TritonServer

log = logging.getLogger("launcher.supervisor")
HUNG = "(hung)"
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # Triton is local: never via HTTP(S)_PROXY


def child_pids(parent: int) -> set[int]:
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            children.add(int(stat.parent.name))
    return children


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie stub is a dead stub


class Supervisor:
    def __init__(
        self,
        server: TritonServer,
        interval: float = 1.0,
        max_restarts: int = 5,
        window: float = 600.0,
        hang_timeout: float = 60.0,
    ) -> None:
        self.server = server
        self.interval = interval
        self.max_restarts = max_restarts
        self.window = window
        if hang_timeout < 0:
            raise ValueError(f"hang_timeout must be 0 (off) or more seconds, not {hang_timeout}")
        self.hang_timeout = hang_timeout  # 0: never restart for silence alone
        self.restarts: deque[float] = deque()
        self.stubs: set[int] = set()
        self.last_answer = time.monotonic()

    def started(self) -> None:
        """Call once Triton is ready: remember the stubs it runs."""
        assert self.server.process is not None
        self.stubs = child_pids(self.server.process.pid)
        self.server.note_regions()
        self.last_answer = time.monotonic()

    def answers(self) -> bool:
        """Whether Triton answers its HTTP liveness check now (within a second)."""
        try:
            with DIRECT.open(f"{self.server.http_url}/v2/health/live", timeout=1.0) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def problem(self) -> str | None:
        process = self.server.process
        if process is None or process.poll() is not None:
            return f"tritonserver exited (code {None if process is None else process.returncode})"
        dead = sorted(pid for pid in self.stubs if not alive(pid))
        if dead:
            return f"Python-backend stub(s) {dead} died"
        if self.hang_timeout and not self.answers():
            silent = time.monotonic() - self.last_answer
            if silent >= self.hang_timeout:
                return f"tritonserver has not answered its liveness check for {silent:.0f}s {HUNG}"
        else:
            self.last_answer = time.monotonic()
        return None

    def check_once(self) -> None:
        """Restart Triton if it needs it; raises LaunchError when restarts are exhausted or fail."""
        problem = self.problem()
        if problem is None:
            return
        now = time.monotonic()
        while self.restarts and now - self.restarts[0] > self.window:
            self.restarts.popleft()
        if len(self.restarts) >= self.max_restarts:
            raise LaunchError(f"{problem}; gave up after {self.max_restarts} restarts in {self.window:.0f}s")
        self.restarts.append(now)
        log.warning("%s: restarting Triton (restart %d)", problem, len(self.restarts))
        self.server.stop(timeout=5.0 if problem.endswith(HUNG) else 20.0)  # a hung server ignores SIGTERM
        self.server.start()
        self.started()
        log.warning("Triton is back (pid %s)", self.server.process.pid if self.server.process else "?")

    def run(self, stop: threading.Event) -> None:
        """Check every `interval` seconds until `stop` is set."""
        self.started()
        while not stop.wait(self.interval):
            self.check_once()
