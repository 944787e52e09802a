"""`clip-client embed-dir` / `classify-dir` against a real tiny-model Triton and gateway: a folder of
good, corrupt and duplicate images into Parquet (or .npy), checked file by file against unary
calls; a job SIGKILLed half way and resumed ends with every file exactly once."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from clip_client import ClipClient
from clip_client.cli import main
from tests.corpus.bad_inputs import image_cases
from tests.support.gateway import GatewayThread
from tests.support.images import encode, gradient_photo
from tests.support.processes import ManagedProcess, wait_for

LABELS = ["a red square", "a gradient", "a cat", "noise"]


def photo(seed: int, fmt: str = "PNG") -> bytes:
    return encode(gradient_photo(64 + seed % 7, 48 + seed % 5, seed=seed), fmt)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Nested good photos, the corpus's corrupt files (named as images), a copy of one photo in
    another folder, and a file that is no image by name (left out)."""
    root = tmp_path / "photos"
    for seed in range(6):
        target = root / ("a" if seed % 2 else "b/c") / f"photo{seed}.{'png' if seed % 3 else 'jpg'}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(photo(seed, "PNG" if seed % 3 else "JPEG"))
    bad = [case for case in image_cases() if case.expected == "INVALID_ARGUMENT" and case.scope == "item"][::12]
    for number, case in enumerate(bad):
        assert case.image is not None
        (root / "bad").mkdir(exist_ok=True)
        (root / "bad" / f"corrupt{number}.jpg").write_bytes(case.image)
    shutil.copy(root / "a" / "photo1.png", root / "copy_of_photo1.PNG")
    (root / "notes.txt").write_text("not an image")
    return root


def rows(path: Path) -> dict[str, dict[str, Any]]:
    table = pq.read_table(path).to_pylist()
    found = {row["path"]: row for row in table}
    assert len(found) == len(table), "a path appears twice"
    return found


def image_paths(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.suffix.lower() != ".txt"}


def test_embed_dir_writes_each_file_once_equal_to_unary_embeds(
    tiny_gateway: GatewayThread, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "photos.parquet"
    code = main(["--target", tiny_gateway.target, "--json", "embed-dir", str(folder), "--out", str(out)])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0
    found = rows(out)
    assert set(found) == image_paths(folder)
    assert not (tmp_path / "photos.parquet.parts").exists()
    with ClipClient(tiny_gateway.target) as client:
        for path, row in found.items():
            data = (folder / path).read_bytes()
            assert row["size"] == len(data)
            expected = client.embed(images=[data])
            if 0 in expected.image_errors:
                assert row["status"] == "INVALID_ARGUMENT" and row["embedding"] is None, row
                assert row["error"] and "image" in str(row["error"])
            else:
                assert row["status"] == "OK", row
                np.testing.assert_allclose(np.asarray(row["embedding"]), expected.images[0], atol=1e-5)
    (duplicate,) = (row for row in found.values() if row["duplicate_of"] is not None)
    pair = {"copy_of_photo1.PNG", "a/photo1.png"}
    assert {duplicate["path"], duplicate["duplicate_of"]} == pair  # the first one walked was sent
    assert duplicate["embedding"] == found[str(duplicate["duplicate_of"])]["embedding"] is not None
    bad = sum(1 for row in found.values() if row["status"] != "OK")
    assert summary["files"] == len(found) and summary["duplicates"] == 1 and summary["failed"] == bad > 0
    assert summary["sent"] == len(found) - 1  # the copy was not sent


def test_classify_dir_keeps_the_top_labels_of_each_unary_classify(
    tiny_gateway: GatewayThread, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("# what the photos may show\n" + "\n".join(LABELS) + "\n\n")
    out = tmp_path / "tags.parquet"
    argv = ["--target", tiny_gateway.target, "classify-dir", str(folder), "--labels-file", str(labels_file)]
    assert main([*argv, "--out", str(out), "--top-k", "2"]) == 0
    assert "files:" in capsys.readouterr().out  # the summary line
    found = rows(out)
    assert set(found) == image_paths(folder)
    with ClipClient(tiny_gateway.target) as client:
        for path, row in found.items():
            (expected,) = client.classify([(folder / path).read_bytes()], LABELS, top_k=2)
            if expected.error is not None:
                assert row["status"] == "INVALID_ARGUMENT" and row["labels"] is None
                continue
            assert row["labels"] == [score.label for score in expected.labels]
            probabilities = [score.probability for score in expected.labels]
            np.testing.assert_allclose(row["probabilities"], probabilities, atol=1e-5)


def test_npy_output_is_a_matrix_with_a_parquet_index(tiny_gateway: GatewayThread, folder: Path, tmp_path: Path) -> None:
    """--out NAME.npy: the embeddings as a float32 matrix, NAME.parquet the rows with `row` (-1:
    no embedding), equal to the Parquet output's."""
    parquet, npy = tmp_path / "table.parquet", tmp_path / "matrix.npy"
    for out in (parquet, npy):
        assert main(["--target", tiny_gateway.target, "embed-dir", str(folder), "--out", str(out)]) == 0
    matrix = np.load(npy)
    index, table = rows(tmp_path / "matrix.parquet"), rows(parquet)
    assert set(index) == set(table) and matrix.dtype == np.float32
    assert sorted(row["row"] for row in index.values() if row["row"] >= 0) == list(range(len(matrix)))
    for path, row in index.items():
        if table[path]["embedding"] is None:
            assert row["row"] == -1
        else:
            np.testing.assert_array_equal(matrix[row["row"]], np.asarray(table[path]["embedding"], np.float32))


def test_an_existing_output_is_not_overwritten_without_resume(
    tiny_gateway: GatewayThread, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "once.parquet"
    argv = ["--target", tiny_gateway.target, "embed-dir", str(folder), "--out", str(out)]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(argv) == 1
    assert "exists: pass --resume" in capsys.readouterr().err
    assert main([*argv, "--resume"]) == 0  # nothing left to do: every file is skipped
    assert "0 sent" in capsys.readouterr().out


def test_a_job_killed_half_way_resumes_with_every_file_exactly_once(
    tiny_gateway: GatewayThread, tmp_path: Path
) -> None:
    root = tmp_path / "many"
    root.mkdir()
    for seed in range(400):
        (root / f"{seed:04d}.png").write_bytes(photo(seed))
    out = tmp_path / "many.parquet"
    parts = tmp_path / "many.parquet.parts"
    cli = [sys.executable, "-m", "clip_client", "--target", tiny_gateway.target]
    job = ["embed-dir", str(root), "--out", str(out), "--batch-size", "1", "--window", "2"]
    first = ManagedProcess("embed-dir", [*cli, *job], tmp_path / "first.log")
    try:
        wait_for(lambda: len(list(parts.glob("part-*.parquet"))) >= 3, 120, "three parts written")
        os.killpg(first.pid, signal.SIGKILL)
        first.process.wait(30)
    finally:
        first.stop()
    assert not out.exists(), "the job finished before it was killed"
    before = sum(pq.read_table(part).num_rows for part in parts.glob("part-*.parquet"))
    assert 0 < before < 400
    second = ManagedProcess("embed-dir-resumed", [*cli, "--json", *job, "--resume"], tmp_path / "second.log")
    try:
        wait_for(lambda: not second.running(), 300, "the resumed job ending", explain=second.log_tail)
    finally:
        second.stop()
    assert second.process.returncode == 0, second.log_tail()
    found = rows(out)
    assert set(found) == {f"{seed:04d}.png" for seed in range(400)}
    assert all(row["status"] == "OK" for row in found.values())
    summary = json.loads(second.log()[second.log().index("{") :])
    assert summary["skipped"] == before and summary["sent"] == 400 - before
    assert not parts.exists()
    with ClipClient(tiny_gateway.target) as client:
        for name in ("0000.png", "0399.png"):
            expected = client.embed(images=[(root / name).read_bytes()]).images[0]
            np.testing.assert_allclose(np.asarray(found[name]["embedding"]), expected, atol=1e-5)
