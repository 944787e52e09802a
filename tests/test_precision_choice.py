"""Precision follows the hardware: what the exporter picks, refuses and says, for CPUs described by
their flags and a measured bf16/fp32 matmul ratio (injected here, so every machine class is
covered on any machine), and that compiled code is refused on a CPU below the one it was built for."""

from __future__ import annotations

from pathlib import Path

import pytest

from export import hardware
from export.pipeline import ExportRefused, export
from export.repository import Settings
from tests.support.triton import load_model_module

AVX2_EPYC = {"model": "AMD EPYC 7B13", "features": ["avx2"]}
AVX512_BF16_EPYC = {"model": "AMD EPYC 9B14", "features": ["avx2", "avx512f", "avx512_bf16", "avx512_vnni"]}
SAPPHIRE_RAPIDS = {"model": "Intel Xeon Platinum 8481C", "features": ["avx512f", "avx512_bf16", "amx_bf16", "amx_int8"]}


def measured(ratio: float):  # type: ignore[no-untyped-def]
    return lambda precision: ratio


def test_auto_is_fp32_without_native_bf16_and_says_why() -> None:
    choice = hardware.choose_precision("auto", "cpu", info=AVX2_EPYC, speedup=measured(0.14))
    assert choice.precision == "fp32"
    assert "no native bf16" in choice.reason and "AMD EPYC 7B13" in choice.reason


def test_auto_is_bf16_where_native_and_measured_faster() -> None:
    choice = hardware.choose_precision("auto", "cpu", info=AVX512_BF16_EPYC, speedup=measured(4.4))
    assert choice.precision == "bf16"
    assert "avx512_bf16" in choice.reason and "4.4x fp32" in choice.reason
    assert hardware.choose_precision("auto", "cpu", info=SAPPHIRE_RAPIDS, speedup=measured(9.0)).precision == "bf16"


def test_auto_is_fp32_where_the_flag_is_there_but_bf16_measures_slower() -> None:
    """This project's 2-core Intel Xeon reports avx512_bf16 and runs a bf16 matmul at half fp32."""
    choice = hardware.choose_precision("auto", "cpu", info=AVX512_BF16_EPYC, speedup=measured(0.5))
    assert choice.precision == "fp32" and "0.50x fp32" in choice.reason


def test_bf16_without_native_support_is_refused_with_what_to_use_instead() -> None:
    with pytest.raises(hardware.PrecisionRefused) as refused:
        hardware.choose_precision("bf16", "cpu", info=AVX2_EPYC, speedup=measured(0.14))
    message = str(refused.value)
    assert "no native bf16" in message and "--precision fp32" in message and "--allow-slow-precision" in message


def test_bf16_measured_slower_is_refused_too() -> None:
    with pytest.raises(hardware.PrecisionRefused, match=r"measured 0\.50x the speed of fp32"):
        hardware.choose_precision("bf16", "cpu", info=AVX512_BF16_EPYC, speedup=measured(0.5))


def test_the_override_takes_a_slow_precision_and_says_so() -> None:
    choice = hardware.choose_precision("bf16", "cpu", allow_slow=True, info=AVX2_EPYC, speedup=measured(0.14))
    assert choice.precision == "bf16" and "forced" in choice.reason


def test_an_explicit_gpu_precision_stands() -> None:
    assert hardware.choose_precision("fp16", "gpu").precision == "fp16"


def test_export_refuses_before_loading_anything(
    monkeypatch: pytest.MonkeyPatch, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    monkeypatch.setattr(hardware, "cpu_info", lambda: AVX2_EPYC)
    with pytest.raises(ExportRefused, match="bf16 is refused on AMD EPYC 7B13"):
        export(str(tiny_checkpoint), tmp_path / "repository", "bf16", Settings(compile="none"))
    assert not (tmp_path / "repository").exists()


@pytest.mark.parametrize(
    ("cpu", "bf16_gflops", "why"),
    [
        (AVX2_EPYC, 14.0, "bf16 is refused on AMD EPYC 7B13: it has no native bf16 (avx512_bf16 or amx_bf16)"),
        (
            AVX512_BF16_EPYC,
            50.0,
            "bf16 is refused on AMD EPYC 9B14: it reports avx512_bf16, but a bf16 matmul measured "
            "0.50x the speed of fp32 here",
        ),
    ],
    ids=["not-native", "measured-slower"],
)
def test_the_command_line_refuses_with_exit_2(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tiny_checkpoint: Path,
    tmp_path: Path,
    cpu: dict[str, object],
    bf16_gflops: float,
    why: str,
) -> None:
    """A real checkpoint, so that the refusal (and nothing else, such as a missing model) is what
    ends the command; the CPU and its matmul speeds (fp32: 100 GFLOP/s) are injected."""
    import torch

    from export import cli

    monkeypatch.setattr(hardware, "cpu_info", lambda: cpu)
    monkeypatch.setattr(hardware, "matmul_gflops", lambda dtype, **_: bf16_gflops if dtype == torch.bfloat16 else 100.0)
    out = tmp_path / "repository"
    argv = ["--model", str(tiny_checkpoint), "--precision", "bf16", "--compile", "none", "--out", str(out)]
    assert cli.main(argv) == 2
    error = capsys.readouterr().err
    assert f"export: {why}" in error, error
    assert "--precision fp32" in error and "--allow-slow-precision" in error  # and what to do instead
    assert not out.exists()  # nothing was exported


def test_compiled_code_needs_at_least_its_capability() -> None:
    runtime = load_model_module("common", "capability")
    assert runtime.runs_code_for("AVX2", "AVX512")
    assert runtime.runs_code_for("AVX512", "AVX512")
    assert not runtime.runs_code_for("AVX512", "AVX2")
    assert not runtime.runs_code_for("SVE256", "AVX512")  # another architecture's level: only itself
