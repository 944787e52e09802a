"""Child processes that tests start, each marked so that nothing it leaves behind goes unseen.

Every process the harness starts carries `CLIP_SERVE_TEST_PROCESS=<session>/<name>` in its
environment. Children inherit it (the launcher passes its environment to Triton, Triton to its
Python-backend stubs), and an orphan keeps it after its parent dies, so scanning /proc for the
mark finds every leftover, however it was left. `stop()` ends a process and then asserts that
nothing carrying its mark survives; the session checks the same for its whole prefix at the end.

Each also gets `CLIP_SERVE_SHM_PREFIX=SHM_PREFIX`, a name unique to this run: every Triton it
starts names its /dev/shm regions with it (the launcher adds its pid and a counter), so the
session's shared-memory check sees this run's regions and no one else's.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from launcher.server import SHM_PREFIX_ENV

MARK = "CLIP_SERVE_TEST_PROCESS"
SESSION = f"pytest-{os.getpid()}-{uuid.uuid4().hex[:8]}"
SHM_PREFIX = f"clip_serve_test_{SESSION}_"
T = TypeVar("T")


class Leaked(AssertionError):
    """Processes outlived the server that started them."""


def wait_for(
    condition: Callable[[], T], timeout: float, what: str, interval: float = 0.05, explain: Callable[[], str] = str
) -> T:
    """Poll `condition` until it returns something truthy (returned), or fail after `timeout`
    seconds saying `what` never happened (and `explain()`, for instance a log tail)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = explain()
            raise AssertionError(f"{what} did not happen within {timeout:.0f} s" + (f": {detail}" if detail else ""))
        time.sleep(interval)


def marked(prefix: str) -> list[tuple[int, str]]:
    """(pid, command line) of every live process whose mark starts with `prefix`."""
    needle = f"{MARK}={prefix}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, IndexError):
            continue
        if state != "Z" and any(item.startswith(needle) for item in environ.split(b"\0")):
            found.append((int(entry.name), command))
    return found


def kill_marked(prefix: str) -> list[tuple[int, str]]:
    """SIGKILL every process with the mark and wait until they are gone (a signal is delivered
    asynchronously: seen in CI, a killed orphan still listed just after the kill); returns what
    was found."""
    found = marked(prefix)
    for pid, _ in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if found:
        wait_for(lambda: not marked(prefix), 10, f"the killed processes of {prefix} ending")
    return found


def assert_none_left(prefix: str, timeout: float = 15.0) -> None:
    """Nothing carrying the mark may be alive (after a short wait for processes already exiting).
    Leftovers are killed, then reported."""
    deadline = time.monotonic() + timeout
    while marked(prefix) and time.monotonic() < deadline:
        time.sleep(0.1)
    leftovers = kill_marked(prefix)
    if leftovers:
        listing = "; ".join(f"{pid}: {command[:160]}" for pid, command in leftovers)
        raise Leaked(f"{len(leftovers)} process(es) of {prefix} were left running: {listing}")


class ManagedProcess:
    """A child in a session of its own, output to a log file (never a pipe that can fill up or
    block a reader), marked for the leak check."""

    counter = 0

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_file: Path,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        ManagedProcess.counter += 1
        self.name = name
        self.mark = f"{SESSION}/{name}-{ManagedProcess.counter}"
        self.log_file = log_file
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("wb") as sink:  # a fresh log: old lines must not look like new events
            self.process = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env={**os.environ, SHM_PREFIX_ENV: SHM_PREFIX, **(env or {}), MARK: self.mark},
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.is_file() else ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def wait_for_log(self, text: str, timeout: float) -> str:
        """Wait until `text` appears in the log; fails at once if the process exits first."""

        def seen() -> bool:
            if text in self.log():
                return True
            if not self.running():
                raise AssertionError(
                    f"{self.name} exited ({self.process.returncode}) before {text!r}: {self.log_tail()}"
                )
            return False

        wait_for(seen, timeout, f"{self.name} logging {text!r}", interval=0.1, explain=self.log_tail)
        return self.log()

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signum)

    def stop(self, timeout: float = 60.0, leak_wait: float = 15.0) -> int:
        """SIGTERM, SIGKILL to its whole group after `timeout`; then no process with its mark may
        remain after `leak_wait` seconds (raises Leaked, after killing them). Returns the exit code."""
        try:
            if self.running():
                self.signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.process.pid, signal.SIGKILL)
                    self.process.wait(30)
        finally:
            assert_none_left(self.mark, leak_wait)
        return int(self.process.returncode)
