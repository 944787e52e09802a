"""End every process of a process group, including ones whose parent is already dead.

Triton runs in a session (and process group) of its own; the Python-backend stubs it forks stay in
that group. When Triton dies abruptly (SIGKILL, a crash), a stub that is busy with a request is
reparented to init and lives on, ignoring SIGTERM, holding its tower's weights. Its group id still
names the dead Triton, so the group is how we find it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def _stat_fields(pid: str) -> list[str] | None:
    try:
        return (Path("/proc") / pid / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is `pgid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(entry.name)
        # fields[0] is the state, fields[2] the process group
        if fields is not None and fields[0] != "Z" and int(fields[2]) == pgid:
            found.append(int(entry.name))
    return sorted(found)


def end_group(pgid: int, grace: float = 5.0) -> list[int]:
    """SIGTERM every member, SIGKILL what is left after `grace` seconds, and wait until none is
    left. Returns the pids that were still running when called (empty: nothing to clean)."""
    remaining = members(pgid)
    if not remaining:
        return []
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while members(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if members(pgid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        deadline = time.monotonic() + 10.0
        while members(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
    return remaining
