"""What the int8 export says of its text tower, checked against its own gate."""

from __future__ import annotations

from typing import Any


def check_text_tower(manifest: dict[str, Any]) -> None:
    """The text tower is int8 exactly where both its gates passed, else fp32 saying which failed."""
    gate = manifest["int8_text_gate"]
    passed = gate["passed"] and gate.get("compiled", {}).get("passed", False)
    assert manifest["text_tower"] == ("int8" if passed else "fp32"), manifest["text_tower_reason"]
    if not passed:
        assert "failed its accuracy gate" in manifest["text_tower_reason"]
