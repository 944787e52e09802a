"""int8 is chosen for the machine's kernels, as precision is: the exporter measures whether its
int8 matmul is exact with full-range activations (VNNI) or needs 7-bit ones (AVX2 without VNNI
saturates int16 pair sums), and refuses int8 where no exact scheme beats fp32. Every outcome is
tested with injected measurements; this machine's own measurement must give its class's scheme;
and the AVX2-only kernels, reproduced here with oneDNN's ISA cap, take the reduced-range scheme,
pass the gate with it, and fail it without (the gate on the compiled package is what catches that)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from export import hardware
from export.int8_scheme import EXACT_TOLERANCE, KernelProbe, choose_int8_scheme, probe_kernel
from tests.support import machine
from tests.support.text_tower import check_text_tower
from tests.support.triton import ROOT

EPYC = "AMD EPYC 7B13"


def probes(full: tuple[float, float], reduced: tuple[float, float]):  # type: ignore[no-untyped-def]
    """A probe that answers (relative error, speedup) for full-range and 7-bit activations."""
    return lambda activation_max: KernelProbe(activation_max, *(full if activation_max == 255 else reduced))


VNNI = probes(full=(0.0, 5.8), reduced=(0.0, 8.5))  # measured on the 2-core Xeon (AVX-512 VNNI)
AVX2 = probes(full=(0.11, 1.57), reduced=(0.0, 1.63))  # measured with oneDNN capped at AVX2
SLOW = probes(full=(0.11, 0.7), reduced=(0.0, 0.8))


def test_exact_full_range_kernels_take_static_int8() -> None:
    scheme = choose_int8_scheme(EPYC, probe=VNNI)
    assert (scheme.name, scheme.reduce_range) == ("static", False)
    assert "full-range activations" in scheme.reason and "5.8x fp32" in scheme.reason


def test_saturating_kernels_take_reduced_range_and_say_why() -> None:
    scheme = choose_int8_scheme(EPYC, probe=AVX2)
    assert (scheme.name, scheme.reduce_range) == ("static-reduced-range", True)
    assert "relative error 0.110" in scheme.reason and "1.6x fp32" in scheme.reason
    assert [probe.activation_max for probe in scheme.probes] == [255, 127]


def test_int8_slower_than_fp32_is_refused_with_the_figure_unless_forced() -> None:
    with pytest.raises(hardware.PrecisionRefused) as refused:
        hardware.choose_precision("int8", "cpu", info={"model": EPYC, "features": ["avx2"]}, int8_probe=SLOW)
    message = str(refused.value)
    assert f"int8 is refused on {EPYC}" in message and "measured 0.80x fp32" in message
    assert "--precision fp32" in message and "--allow-slow-precision" in message
    forced = hardware.choose_precision(
        "int8", "cpu", allow_slow=True, info={"model": EPYC, "features": ["avx2"]}, int8_probe=SLOW
    )
    assert forced.int8_scheme is not None and forced.int8_scheme.reduce_range and "forced" in forced.reason


def test_inexact_kernels_are_refused_even_when_forced() -> None:
    broken = probes(full=(0.11, 2.0), reduced=(0.05, 2.0))
    with pytest.raises(hardware.PrecisionRefused, match="7-bit activations are inexact too"):
        hardware.choose_precision("int8", "cpu", allow_slow=True, info={"model": EPYC}, int8_probe=broken)


def test_this_machine_measures_the_scheme_of_its_class() -> None:
    """The real probe on this CPU, held against what its flags (and any oneDNN ISA cap) say."""
    expected = machine.expected_int8_scheme()
    scheme = choose_int8_scheme("this CPU")
    print(f"{machine.describe()}: {scheme.summary()}")
    assert scheme.name == expected, scheme.reason
    full = scheme.probes[0]
    assert full.exact == machine.int8_kernels_have_vnni(), full


def run_in_avx2_kernels(code: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    """`code` in a Python of its own whose oneDNN and MKL run their AVX2 kernels (read at start-up)."""
    environment = {**os.environ, **machine.AVX2_KERNELS}
    return subprocess.run(
        [sys.executable, "-c", code, *arguments], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=900
    )


def test_avx2_kernels_saturate_full_range_and_are_exact_in_7_bits() -> None:
    result = run_in_avx2_kernels(
        "import json; from export.int8_scheme import probe_kernel as p\n"
        "print(json.dumps([[r.activation_max, r.relative_error, r.speedup] for r in (p(255), p(127))]))"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (full_max, full_error, _), (_, reduced_error, reduced_speedup) = json.loads(result.stdout.splitlines()[-1])
    print(f"AVX2 kernels: full-range error {full_error:.4f}, 7-bit error {reduced_error:.2g}, {reduced_speedup:.2f}x")
    assert full_max == 255 and full_error > EXACT_TOLERANCE and reduced_error <= EXACT_TOLERANCE
    assert probe_kernel(127).exact  # and here, whatever this CPU is


EXPORT_INT8 = """
import json, sys
from pathlib import Path
from export import hardware, int8_scheme
from export.pipeline import ExportRefused, export
if sys.argv[3] == "full-range":  # what the exporter chose before it measured: static full-range
    hardware.choose_int8_scheme = lambda cpu, **_: int8_scheme.Int8Scheme("static", False, "forced by the test", ())
try:
    manifest = export(sys.argv[1], Path(sys.argv[2]), "int8")
except ExportRefused as refused:
    print(json.dumps({"refused": str(refused)}))
else:
    text = {key: manifest.get(key) for key in ("text_tower", "text_tower_reason", "int8_text_gate")}
    print(json.dumps({"scheme": manifest["int8_scheme"], "gate": manifest["int8_gate"], **text}))
"""


def export_with_avx2_kernels(checkpoint: Path, out: Path, scheme: str) -> dict:  # type: ignore[type-arg]
    result = run_in_avx2_kernels(EXPORT_INT8, str(checkpoint), str(out), scheme)
    assert result.returncode == 0, result.stderr[-3000:]
    answer: dict = json.loads(result.stdout.splitlines()[-1])  # type: ignore[type-arg]
    return answer


def test_avx2_kernels_export_int8_in_7_bits_and_pass_the_gate(tiny_checkpoint: Path, tmp_path: Path) -> None:
    answer = export_with_avx2_kernels(tiny_checkpoint, tmp_path / "repository", "chosen")
    assert "refused" not in answer, answer
    print(f"AVX2 kernels, chosen scheme: {answer['scheme']['name']}, gate {answer['gate']['compiled']}")
    assert answer["scheme"]["name"] == "static-reduced-range"
    assert answer["gate"]["scheme"] == "static-reduced-range"
    assert answer["gate"]["passed"] and answer["gate"]["compiled"]["passed"]
    # the text tower in the same 7-bit scheme, behind its own gate; on the tiny random model it sits
    # at the gate's edge here (top-1 agreement 90 %, cosine 0.9975), so either outcome may be right,
    # but the served dtype must be the gate's verdict
    print(f"AVX2 kernels, text tower: {answer['text_tower_reason']}")
    check_text_tower(answer)


def test_full_range_int8_on_avx2_kernels_is_caught_by_the_compiled_packages_gate(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """The quantized graph computes in float (it passes); the compiled package runs the saturating
    kernels: only the gate on what is served sees it (0.9961 / 67 % on the AVX2-only EPYC)."""
    answer = export_with_avx2_kernels(tiny_checkpoint, tmp_path / "repository", "full-range")
    print(answer)
    assert "refused" in answer, answer
    assert "(static scheme, compiled package) failed its accuracy gate" in answer["refused"]
    assert not (tmp_path / "repository").exists()
