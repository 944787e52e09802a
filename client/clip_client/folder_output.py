"""The output of `clip-client embed-dir` and `classify-dir`: one table with a row per file, written
as parts while the job runs and merged when it ends.

Columns: `path` (relative to the folder, POSIX), `size` (bytes), `sha256` (hex), `status` ("OK",
the gRPC code of the file's error, "UNREADABLE", or "DUPLICATE" in parts), `error`,
`duplicate_of` (the path of the first file with the same content, embedded in its place), then
`embedding` (float32 list) for embed-dir, or `labels` / `probabilities` / `scores` (top-k, best
first) for classify-dir.

Rows go to OUT.parts/part-NNNNNN.parquet, one part per flush, each written under a temporary name
and renamed: a part is whole or absent, so a crash (a SIGKILL included) loses at most the rows not
yet flushed. `--resume` reads what OUT and its parts hold. At the end OUT and every part are merged
into OUT (the last row of a path wins), a duplicate takes its original's status and results, and the
parts are removed. OUT is Parquet, or with a `.npy` name a float32 matrix of the embeddings plus a
Parquet index beside it (OUT with `.parquet`, its `row` column the matrix row, -1 for none), as
clip-retrieval writes them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clip_client.errors import OutputError

try:
    import pyarrow as pa
    import pyarrow.parquet as pq
except ImportError as missing:  # an extra: the client itself needs no pyarrow
    raise ImportError("embed-dir and classify-dir write Parquet: pip install 'clip-serve-client[bulk]'") from missing

OK = "OK"
DUPLICATE = "DUPLICATE"
UNREADABLE = "UNREADABLE"
# Statuses a resumed job does not work on again: the file will not change its answer.
FINAL = frozenset({OK, DUPLICATE, "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"})
METADATA_KEY = b"clip-serve"

COMMON = [
    pa.field("path", pa.string(), nullable=False),
    pa.field("size", pa.int64()),
    pa.field("sha256", pa.string()),
    pa.field("status", pa.string(), nullable=False),
    pa.field("error", pa.string()),
    pa.field("duplicate_of", pa.string()),
]
RESULTS = {
    "embed": [pa.field("embedding", pa.list_(pa.float32()))],
    "classify": [
        pa.field("labels", pa.list_(pa.string())),
        pa.field("probabilities", pa.list_(pa.float32())),
        pa.field("scores", pa.list_(pa.float32())),
    ],
}


def schema(kind: str, about: dict[str, Any]) -> pa.Schema:
    """The table's schema; `about` (model id, job kind, labels...) travels in its metadata."""
    return pa.schema(COMMON + RESULTS[kind], metadata={METADATA_KEY: json.dumps(about, sort_keys=True)})


def parts_dir(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def _index_path(out: Path) -> Path:
    return out.with_suffix(".parquet")


def _is_npy(out: Path) -> bool:
    return out.suffix.lower() == ".npy"


def _parts(out: Path) -> list[Path]:
    folder = parts_dir(out)
    return sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []


def read_existing(out: Path, table_schema: pa.Schema) -> pa.Table | None:
    """What OUT (and its parts) already hold, in `table_schema`; None when there is nothing. Refuses
    an output made for another job (another model, kind or label set)."""
    tables = []
    if _is_npy(out) and out.exists():
        tables.append(_read_npy(out, table_schema))
    elif not _is_npy(out) and out.exists():
        tables.append(pq.read_table(out))
    tables += [pq.read_table(part) for part in _parts(out)]
    for table in tables:
        theirs = (table.schema.metadata or {}).get(METADATA_KEY)
        ours = table_schema.metadata[METADATA_KEY]
        if theirs != ours:
            raise OutputError(
                f"{out} was written for another job ({theirs.decode() if theirs else 'unknown'}), "
                f"not this one ({ours.decode()}): give another --out"
            )
    if not tables:
        return None
    return pa.concat_tables([table.select(table_schema.names).cast(table_schema) for table in tables])


def _read_npy(out: Path, table_schema: pa.Schema) -> pa.Table:
    index = pq.read_table(_index_path(out))
    matrix = np.load(out, mmap_mode="r")
    rows = index.column("row").to_numpy()
    has = rows >= 0
    offsets = np.concatenate([[0], np.cumsum(np.where(has, matrix.shape[1], 0))]).astype(np.int32)
    values = pa.array(np.ascontiguousarray(matrix[rows[has]], dtype=np.float32).reshape(-1))
    vectors = pa.ListArray.from_arrays(pa.array(offsets), values, mask=pa.array(~has))
    table = index.drop_columns(["row"]).append_column("embedding", vectors)
    return table.replace_schema_metadata(index.schema.metadata)


def settled_paths(existing: pa.Table | None) -> dict[str, str | None]:
    """Every file whose last row is final (a resumed job skips them): path -> its sha256, or None
    for a duplicate (so that a new copy names the original, never another copy)."""
    if existing is None:
        return {}
    settled: dict[str, str | None] = {}
    for path, sha, status in zip(*(existing.column(c).to_pylist() for c in ("path", "sha256", "status")), strict=True):
        if status in FINAL:
            settled[path] = sha if status != DUPLICATE else None
        else:
            settled.pop(path, None)
    return settled


@dataclass
class PartWriter:
    """Rows of one run, flushed to OUT.parts as whole parts."""

    out: Path
    table_schema: pa.Schema

    def __post_init__(self) -> None:
        self._rows: list[dict[str, Any]] = []
        existing = _parts(self.out)
        self._next = int(existing[-1].stem.split("-")[1]) + 1 if existing else 0

    @property
    def pending(self) -> int:
        return len(self._rows)

    def add(self, row: dict[str, Any]) -> None:
        self._rows.append(row)

    def flush(self) -> None:
        if not self._rows:
            return
        folder = parts_dir(self.out)
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / f"part-{self._next:06d}.parquet"
        temporary = folder / f".{final.name}.tmp"
        pq.write_table(pa.Table.from_pylist(self._rows, schema=self.table_schema), temporary)
        os.replace(temporary, final)  # whole or absent
        self._next += 1
        self._rows = []


def merge(out: Path, table_schema: pa.Schema) -> pa.Table:
    """OUT and its parts as one table, a row per path (its last), sorted by path, duplicates filled
    from their originals; written to OUT, then the parts removed. Returns the table."""
    table = read_existing(out, table_schema)
    if table is None:
        table = table_schema.empty_table()
    paths = table.column("path").to_pylist()
    last = {path: row for row, path in enumerate(paths)}
    keep = sorted(last.values(), key=lambda row: paths[row])
    table = table.take(pa.array(keep, pa.int64()))
    table = _fill_duplicates(table)
    _write(out, table)
    for part in _parts(out):
        part.unlink()
    folder = parts_dir(out)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
    return table


def _fill_duplicates(table: pa.Table) -> pa.Table:
    """A DUPLICATE row takes its original's status, error and results (by row index, columnar)."""
    paths = table.column("path").to_pylist()
    where = {path: row for row, path in enumerate(paths)}
    statuses = table.column("status").to_pylist()
    originals = table.column("duplicate_of").to_pylist()
    source = [
        where.get(original, row) if status == DUPLICATE and original is not None else row
        for row, (status, original) in enumerate(zip(statuses, originals, strict=True))
    ]
    if source == list(range(len(source))):
        return table
    taken = pa.array(source, pa.int64())
    columns = {name: table.column(name) for name in table.schema.names}
    for name in table.schema.names:
        if name not in ("path", "size", "sha256", "duplicate_of"):
            columns[name] = table.column(name).take(taken)
    return pa.table(columns, schema=table.schema)


def _write(out: Path, table: pa.Table) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if not _is_npy(out):
        temporary = out.with_name(f".{out.name}.tmp")
        pq.write_table(table, temporary)
        os.replace(temporary, out)
        return
    vectors = table.column("embedding").combine_chunks()
    has = vectors.is_valid().to_numpy(zero_copy_only=False)
    flat = vectors.flatten().to_numpy()  # the present rows' values only
    count = int(has.sum())
    array = flat.reshape(count, flat.size // count if count else 0).astype(np.float32, copy=False)
    rows = np.where(has, np.cumsum(has) - 1, -1)
    temporary = out.with_name(f".{out.name}.tmp.npy")
    np.save(temporary, array)
    index = table.drop_columns(["embedding"]).append_column("row", pa.array(rows, pa.int64()))
    index_temporary = out.with_name(f".{out.stem}.tmp.parquet")
    pq.write_table(index.replace_schema_metadata(table.schema.metadata), index_temporary)
    os.replace(temporary, out)
    os.replace(index_temporary, _index_path(out))


def refuse_to_overwrite(out: Path) -> None:
    """A job without --resume does not write over an earlier one's output."""
    found = [path for path in (out, parts_dir(out)) if path.exists()]
    if _is_npy(out) and _index_path(out).exists():
        found.append(_index_path(out))
    if found:
        raise OutputError(f"{found[0]} exists: pass --resume to continue that job, or remove it")
