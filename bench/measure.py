"""Timing helpers: closed-loop load at a fixed concurrency, latency percentiles, process memory."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Result:
    name: str
    items_per_s: float
    p50_ms: float
    p99_ms: float
    calls: int
    mean_ms: float

    def row(self) -> dict[str, float | str | int]:
        return {
            "name": self.name,
            "items_per_s": round(self.items_per_s, 2),
            "p50_ms": round(self.p50_ms, 1),
            "p99_ms": round(self.p99_ms, 1),
            "calls": self.calls,
        }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def closed_loop(
    name: str,
    call: Callable[[], object],
    items_per_call: int,
    concurrency: int,
    seconds: float,
    warmup_calls: int = 2,
    measuring: Callable[[], None] = lambda: None,
) -> Result:
    """`concurrency` threads each call `call` back to back for `seconds`; one call = one latency.
    `measuring` is called once the warm-up calls are done, just before the measured ones."""
    for _ in range(warmup_calls):
        call()
    measuring()
    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def worker() -> None:
        while True:  # at least one call per worker, so seconds=0 measures exactly one (a cold call)
            started = time.perf_counter()
            call()
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)
            if time.perf_counter() >= stop_at:
                return

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return Result(
        name,
        len(latencies) * items_per_call / wall,
        1000 * statistics.median(latencies),
        1000 * percentile(latencies, 0.99),
        len(latencies),
        1000 * statistics.fmean(latencies),
    )


@dataclass(frozen=True)
class Memory:
    """Of a process tree: RSS counts every shared page once per process (libtorch's ~210 MB of
    code in every encoder stub, Triton's shared-memory pool in Triton and each stub); PSS splits
    each shared page between the processes that map it, so its sum is the tree's real footprint."""

    rss: int
    pss: int


def _descendants(pids: list[int]) -> list[int]:
    children: dict[int, list[int]] = {}
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(status.parent.name))
    found, stack = [], list(pids)
    while stack:
        pid = stack.pop()
        if pid not in found:
            found.append(pid)
            stack.extend(children.get(pid, []))
    return found


def _kib(path: Path, field: str) -> int:
    try:
        for line in path.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_memory(pids: list[int]) -> Memory:
    """Memory of these processes and all their descendants (Triton's stubs are its children)."""
    tree = _descendants(pids)
    rss = sum(_kib(Path(f"/proc/{pid}/status"), "VmRSS") for pid in tree)
    pss = sum(_kib(Path(f"/proc/{pid}/smaps_rollup"), "Pss") for pid in tree)
    return Memory(rss * 1024, pss * 1024)


def rss_bytes(pids: list[int]) -> int:
    return tree_memory(pids).rss
