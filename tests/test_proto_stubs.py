"""The committed stubs are exactly what scripts/gen_proto.py makes from the .proto: nobody edited
them by hand and nobody forgot to regenerate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.triton import ROOT

GENERATED = ROOT / "proto" / "clip_api"


def test_generated_stubs_are_current(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "scripts/gen_proto.py", "--out", str(tmp_path)], cwd=ROOT, check=True)
    fresh = {path.name: path.read_text() for path in tmp_path.iterdir() if path.is_file()}
    committed = {path.name: path.read_text() for path in GENERATED.iterdir() if path.is_file()}
    assert fresh == committed


def test_every_proto_field_and_value_is_commented() -> None:
    lines = (ROOT / "proto" / "clip" / "v1" / "clip_service.proto").read_text().splitlines()
    fields = [
        (n, line.strip())
        for n, line in enumerate(lines)
        if line.strip().endswith(";") and "=" in line and not line.strip().startswith(("option", "syntax"))
    ]
    assert len(fields) > 40
    for number, field in fields:
        if field.split()[0].endswith("_UNSPECIFIED"):
            continue  # the buf-style zero value needs no words
        assert lines[number - 1].strip().startswith("//"), f"proto line {number + 1} has no comment: {field}"
