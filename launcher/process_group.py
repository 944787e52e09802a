"""End every process of a process group, including ones whose parent is already dead, and the
shared memory they leave.

Triton runs in a session (and process group) of its own; the Python-backend stubs it forks stay in
that group. When Triton dies abruptly (SIGKILL, a crash), a stub that is busy with a request is
reparented to init and lives on, ignoring SIGTERM, holding its tower's weights. Its group id still
names the dead Triton, so the group is how we find it. Each stub also has a shared-memory region in
/dev/shm (64 MB and more, in RAM) that only a clean Triton shutdown removes: after a crash it stays
until someone deletes it, so we note the regions while Triton runs and delete what is left.
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


SHM_DIR = Path("/dev/shm")
SHM_PREFIX = "triton_python_backend_shm_region_"


def shm_regions(pgid: int) -> set[str]:
    """The /dev/shm regions of the group's Python-backend stubs (named on their command lines)."""
    regions: set[str] = set()
    for pid in members(pgid):
        try:
            arguments = (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        regions.update(arg.decode() for arg in arguments if arg.startswith(SHM_PREFIX.encode()))
    return regions


def remove_shm_regions(regions: set[str]) -> list[str]:
    """Delete those of `regions` that still exist; returns them."""
    removed = []
    for name in sorted(regions):
        path = SHM_DIR / name
        if name.startswith(SHM_PREFIX) and "/" not in name and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(name)
    return removed


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
