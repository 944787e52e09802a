"""`clip-client embed-dir` and `classify-dir`: every image file under a folder (recursively, in
sorted order) through the service's stream (ClipClient.embed_many / classify_many), into one
output table (clip_client.folder_output), with progress, resume and a summary.

Each file is read once, hashed (SHA-256) and sent; a file whose content was already sent (or is
already in the output) is not sent again: its row says which file it duplicates and takes that
file's results when the output is merged. Memory is bounded by the stream's window (files in
flight), the rows not yet flushed, and one hash and path per file seen.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from clip_client import folder_output as output
from clip_client.errors import OutputError
from clip_client.sync import ClipClient
from clip_client.types import Classification, ImageEmbedding

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
FLUSH_SECONDS = 5.0  # rows are flushed at least this often, and at least every window of results


def image_files(root: Path) -> Iterator[Path]:
    """Image files under `root` by suffix, sorted, recursively (symlinked folders not followed)."""
    for folder, folders, files in os.walk(root):
        folders.sort()
        for name in sorted(files):
            if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                yield Path(folder) / name


@dataclass
class Summary:
    files: int = 0  # image files under the folder
    skipped: int = 0  # already in the output (--resume)
    sent: int = 0
    duplicates: int = 0
    statuses: Counter[str] = field(default_factory=Counter)  # of this run's files
    seconds: float = 0.0
    out: str = ""

    @property
    def worked(self) -> int:
        """Files this run wrote a row for (sent, duplicates, unreadable)."""
        return sum(self.statuses.values())

    @property
    def rate(self) -> float:
        return self.worked / self.seconds if self.seconds else 0.0

    @property
    def failed(self) -> int:
        return sum(n for status, n in self.statuses.items() if status not in (output.OK, output.DUPLICATE))

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "skipped": self.skipped,
            "sent": self.sent,
            "duplicates": self.duplicates,
            "ok": self.statuses[output.OK],
            "failed": self.failed,
            "statuses": dict(self.statuses),
            "seconds": round(self.seconds, 3),
            "files_per_second": round(self.rate, 2),
            "out": self.out,
        }

    def text(self) -> str:
        failed = sorted((s, n) for s, n in self.statuses.items() if s not in (output.OK, output.DUPLICATE))
        failures = ", ".join(f"{n} {status}" for status, n in failed)
        return (
            f"{self.files} files: {self.statuses[output.OK]} ok, {self.failed} failed"
            f"{f' ({failures})' if failures else ''}, {self.duplicates} duplicate{'s' * (self.duplicates != 1)}, "
            f"{self.skipped} already in the output; {self.sent} sent; {self.seconds:.2f} s "
            f"({self.rate:.1f} files/s) -> {self.out}"
        )


class Progress:
    """One line on stderr: files done of all, files/s, ETA, errors. Redrawn in place on a terminal,
    a line every `every` seconds otherwise (a log file stays small)."""

    def __init__(self, total: int, stream: TextIO, started: float, every: float = 10.0) -> None:
        self.total, self.stream, self.every = total, stream, every
        self.tty = stream.isatty()
        self.started = started
        self._shown = 0.0

    def show(self, summary: Summary, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._shown < (0.2 if self.tty else self.every):
            return
        self._shown = now
        done = summary.skipped + summary.worked
        elapsed = now - self.started
        rate = summary.worked / elapsed if elapsed > 0 else 0.0
        left = self.total - done
        eta = f"{left / rate:.0f} s" if rate > 0 else "?"
        line = (
            f"{done}/{self.total} files ({100 * done / max(self.total, 1):.1f} %), {rate:.1f} files/s, "
            f"ETA {eta}, {summary.failed} errors, {summary.duplicates} duplicates"
        )
        self.stream.write(("\r" + line + ("\n" if final else "")) if self.tty else line + "\n")
        self.stream.flush()


@dataclass
class FileEntry:
    path: str  # relative to the folder, POSIX
    size: int
    sha256: str


def _row(entry: FileEntry, status: str, error: str | None = None, **results: Any) -> dict[str, Any]:
    return {"path": entry.path, "size": entry.size, "sha256": entry.sha256, "status": status, "error": error, **results}


def _embedding_row(entry: FileEntry, result: ImageEmbedding) -> dict[str, Any]:
    if result.error is not None:
        return _row(entry, result.error.code.name, str(result.error))
    assert result.vector is not None
    return _row(entry, output.OK, embedding=result.vector.tolist())


def _classification_row(entry: FileEntry, result: Classification) -> dict[str, Any]:
    if result.error is not None:
        return _row(entry, result.error.code.name, str(result.error))
    return _row(
        entry,
        output.OK,
        labels=[score.label for score in result.labels],
        probabilities=[score.probability for score in result.labels],
        scores=[score.score for score in result.labels],
    )


@dataclass
class FolderJob:
    """One embed-dir or classify-dir run. `kind` is "embed" or "classify" (then `labels`,
    `templates` and `top_k` say what to classify against)."""

    client: ClipClient
    root: Path
    out: Path
    kind: str
    resume: bool = False
    batch_size: int | None = None
    window: int | None = None
    labels: Sequence[str] = ()
    templates: Sequence[str] | None = None
    top_k: int = 5
    encoding: str = "float32"
    progress_stream: TextIO | None = None  # sys.stderr as it is when the job runs

    def run(self) -> Summary:
        if not self.root.is_dir():
            raise OutputError(f"{self.root} is not a folder")
        info = self.client.model_info()
        about: dict[str, Any] = {"kind": self.kind, "model_id": info.model_id}
        if self.kind == "classify":
            about.update(labels=list(self.labels), templates=self.templates, top_k=self.top_k)
        table_schema = output.schema(self.kind, about)
        if not self.resume:
            output.refuse_to_overwrite(self.out)
        settled = output.settled_paths(output.read_existing(self.out, table_schema) if self.resume else None)
        summary = Summary(files=sum(1 for _ in image_files(self.root)), out=str(self.out))
        writer = output.PartWriter(self.out, table_schema)
        started = time.monotonic()
        progress = Progress(summary.files, self.progress_stream or sys.stderr, started)
        # content already answered or sent: sha256 -> the path whose row will hold the results
        originals: dict[str, str] = {sha: path for path, sha in settled.items() if sha}
        in_flight: dict[int, FileEntry] = {}

        def inputs() -> Iterator[bytes]:
            for file in image_files(self.root):
                relative = file.relative_to(self.root).as_posix()
                if relative in settled:
                    summary.skipped += 1
                    continue
                try:
                    data = file.read_bytes()
                except OSError as error:
                    entry = FileEntry(relative, 0, "")
                    writer.add(_row(entry, output.UNREADABLE, str(error)))
                    summary.statuses[output.UNREADABLE] += 1
                    continue
                entry = FileEntry(relative, len(data), hashlib.sha256(data).hexdigest())
                original = originals.get(entry.sha256)
                if original is not None:
                    writer.add({**_row(entry, output.DUPLICATE), "duplicate_of": original})
                    summary.duplicates += 1
                    summary.statuses[output.DUPLICATE] += 1
                    continue
                originals[entry.sha256] = relative
                in_flight[summary.sent] = entry
                summary.sent += 1
                yield data

        results: Iterator[tuple[int, Any]]
        if self.kind == "embed":
            results = self.client.embed_many(
                inputs(), encoding=self.encoding, ordered=False, batch_size=self.batch_size, window=self.window
            )
            make_row: Any = _embedding_row
        else:
            label_set = self.client.register_label_set(self.labels, templates=self.templates)
            results = self.client.classify_many(
                inputs(), label_set, top_k=self.top_k, ordered=False, batch_size=self.batch_size, window=self.window
            )
            make_row = _classification_row
        flush_rows = (self.batch_size or self.client.config.bulk_batch_size) * (
            self.window or self.client.config.bulk_window
        )
        flushed = time.monotonic()
        for index, result in results:
            row = make_row(in_flight.pop(index), result)
            writer.add(row)
            summary.statuses[row["status"]] += 1
            if writer.pending >= flush_rows or time.monotonic() - flushed >= FLUSH_SECONDS:
                writer.flush()
                flushed = time.monotonic()
            progress.show(summary)
        writer.flush()
        output.merge(self.out, table_schema)
        summary.seconds = time.monotonic() - started
        progress.show(summary, final=True)
        return summary
