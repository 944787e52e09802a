"""The clip-client command line against a real gateway."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clip_client.cli import main
from tests.support.gateway import GatewayThread
from tests.support.images import photo_pngs


@pytest.fixture
def image_file(tmp_path: Path) -> Path:
    path = tmp_path / "astronaut.png"
    path.write_bytes(photo_pngs()[0])
    return path


def test_classify_prints_a_ranked_table(
    tiny_gateway: GatewayThread, image_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "--target",
            tiny_gateway.target,
            "classify",
            str(image_file),
            "--labels",
            "cat",
            "astronaut",
            "rocket",
            "--top-k",
            "2",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == str(image_file) and len(lines) == 3 and "%" in lines[1]


def test_classify_json_and_per_image_errors(
    tiny_gateway: GatewayThread, image_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really")
    assert (
        main(
            [
                "--target",
                tiny_gateway.target,
                "--json",
                "classify",
                str(image_file),
                str(broken),
                "--labels",
                "cat",
                "dog",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert len(result["results"][0]["labels"]) == 2 and result["results"][0]["error"] is None
    assert "corrupt or truncated JPEG" in result["results"][1]["error"]


def test_embed_info_and_similarity(
    tiny_gateway: GatewayThread, image_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["--target", tiny_gateway.target, "--json", "embed", "--image", str(image_file), "--text", "a cat"]) == 0
    )
    embedded = json.loads(capsys.readouterr().out)
    assert embedded["dimension"] == 16 and len(embedded["images"][0]) == 16 and len(embedded["texts"]) == 1
    assert main(["--target", tiny_gateway.target, "info"]) == 0
    assert "embedding_dimension" in capsys.readouterr().out
    similarity = ["--target", tiny_gateway.target, "similarity", str(image_file), "--texts", "a", "b"]
    assert main(["--json", *similarity]) == 0
    scores = json.loads(capsys.readouterr().out)["rows"][0]["scores"]
    assert main(similarity) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(image_file)
    assert [line.rsplit(":", 1)[0] for line in lines[1:]] == ["  'a'", "  'b'"]
    assert [float(line.rsplit(":", 1)[1]) for line in lines[1:]] == pytest.approx(scores, abs=1e-3)


def test_errors_are_one_line_on_stderr(
    tiny_gateway: GatewayThread, image_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--target", tiny_gateway.target, "classify", str(image_file), "--labels", " "]) == 1
    assert "INVALID_ARGUMENT" in capsys.readouterr().err
    assert main(["--target", tiny_gateway.target, "classify", "/no/such/file.png", "--labels", "a"]) == 2
