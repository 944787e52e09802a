"""End every process of a process group, including ones whose parent is already dead, and the
shared memory they leave.

Triton runs in a session (and process group) of its own; the Python-backend stubs it forks stay in
that group. When Triton dies abruptly (SIGKILL, a crash), a stub that is busy with a request is
reparented to init and lives on, ignoring SIGTERM, holding its tower's weights. Its group id still
names the dead Triton, so the group is how we find it. Each stub also has a shared-memory region in
/dev/shm (64 MB and more, in RAM) that only a clean Triton shutdown removes: after a crash it stays
until someone deletes it, so we note the regions while Triton runs and delete what is left.

Each Triton the launcher starts names its regions with a prefix of its own (the Python backend's
`shm-region-prefix-name`; the backend appends a UUID), so that finding and removing "our" regions
never touches another Triton's, or a benchmark's, on the same machine.
"""

from __future__ import annotations

import contextlib
import glob
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
# The Python backend's own default prefix: what any Triton not started by the launcher uses.
TRITON_SHM_PREFIX = "triton_python_backend_shm_region_"


def _check_prefix(prefix: str) -> None:
    if not prefix or "/" in prefix:
        raise ValueError(f"a shared-memory region prefix must be a non-empty file name part, not {prefix!r}")


def shm_regions(pgid: int, prefix: str) -> set[str]:
    """The /dev/shm regions, named with `prefix`, of the group's Python-backend stubs (each stub
    names its region on its command line)."""
    _check_prefix(prefix)
    regions: set[str] = set()
    for pid in members(pgid):
        try:
            arguments = (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        regions.update(arg.decode() for arg in arguments if arg.startswith(prefix.encode()) and b"/" not in arg)
    return regions


def regions_named(prefix: str) -> set[str]:
    """Every region in /dev/shm whose name starts with `prefix`, whoever made it."""
    _check_prefix(prefix)
    return {path.name for path in SHM_DIR.glob(glob.escape(prefix) + "*") if path.is_file()}


def remove_shm_regions(regions: set[str], prefix: str) -> list[str]:
    """Delete those of `regions` that still exist and carry `prefix` (nothing else is ever
    deleted); returns them."""
    _check_prefix(prefix)
    removed = []
    for name in sorted(regions):
        path = SHM_DIR / name
        if name.startswith(prefix) and "/" not in name and path.is_file():
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
