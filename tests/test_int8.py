"""The int8 path: calibrated on images, gated on held-out ones, compiled, served. A calibration set
that does not look like what is served is refused at export; the shipped set passes and the served
int8 embeddings stay within the gate's cosine of the fp32 reference."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clip_client import ClipClient
from export import quantize
from export.pipeline import ExportRefused, export
from export.repository import Settings
from tests.support import machine, servers
from tests.support.gateway import gateway_config
from tests.support.images import photo_pngs
from tests.support.processes import wait_for
from tests.support.reference import Reference


def broken_calibration(folder: Path) -> Path:
    """Twelve images: the held-out places (every fourth) hold real photographs, the calibration
    places solid black pictures, so the activation ranges are learnt from nothing like the photos."""
    folder.mkdir()
    photos = sorted(quantize.DEFAULT_CALIBRATION.glob("*_0.jpg"))
    for index in range(12):
        target = folder / f"{index:02d}.jpg"
        if index % quantize.HELD_OUT_EVERY == quantize.HELD_OUT_EVERY - 1:
            shutil.copy(photos[index], target)
        else:
            Image.new("RGB", (256, 256)).save(target)
    return folder


def test_a_broken_calibration_is_refused(tiny_checkpoint: Path, tmp_path: Path) -> None:
    settings = Settings(calibration_images=str(broken_calibration(tmp_path / "calibration")))
    with pytest.raises(ExportRefused, match="failed its accuracy gate on 3 held-out images") as refused:
        export(str(tiny_checkpoint), tmp_path / "repository", "int8", settings)
    print(refused.value)
    assert "--calibration-images" in str(refused.value)
    assert not (tmp_path / "repository").exists()


def test_too_few_calibration_images_are_refused(tiny_checkpoint: Path, tmp_path: Path) -> None:
    (tmp_path / "few").mkdir()
    Image.new("RGB", (64, 64)).save(tmp_path / "few" / "one.jpg")
    with pytest.raises(ExportRefused, match="needs at least 8"):
        export(
            str(tiny_checkpoint), tmp_path / "repository", "int8", Settings(calibration_images=str(tmp_path / "few"))
        )


@pytest.fixture(scope="module")
def int8_repository(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repository = tmp_path_factory.mktemp("int8") / "repository"
    # torch's int8 tower (the one these tests are about), whatever OpenVINO's would measure here
    export(str(tiny_checkpoint), repository, "int8", Settings(image_runtime="torch"))
    return repository


@pytest.fixture(scope="module")
def int8_client(int8_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClipClient]:
    with (
        servers.triton(int8_repository, tmp_path_factory.mktemp("triton-int8")) as triton,
        servers.gateway(gateway_config(triton.grpc_url)) as gateway,
        ClipClient(gateway.target) as client,
    ):
        yield client


def test_the_shipped_calibration_passes_and_is_recorded(int8_repository: Path) -> None:
    manifest = json.loads((int8_repository / "manifest.json").read_text())
    gate = manifest["int8_gate"]
    assert manifest["precision"] == "int8" and manifest["artifact"] == "aoti"
    # the scheme this machine class takes (VNNI: full-range activations; without: 7-bit), and why
    scheme = machine.expected_int8_scheme()
    print(f"{machine.describe()}: {manifest['int8_scheme']['reason']}; gate {gate['compiled']}")
    assert manifest["int8_scheme"]["name"] == gate["scheme"] == scheme
    assert manifest["int8_scheme"]["reason"] in manifest["precision_reason"]
    assert gate["passed"] and gate["compiled"]["passed"]
    assert gate["held_out"] >= 10 and gate["mean_cosine"] >= quantize.MIN_MEAN_COSINE
    assert (int8_repository / "clip_image_encoder" / "1" / "model.pt2").is_file()


def test_served_int8_stays_within_the_gate_of_the_reference(int8_client: ClipClient, tiny_checkpoint: Path) -> None:
    info = int8_client.model_info()
    assert info.precision == "int8" and "int8 image tower, fp32 text tower" in info.execution
    activations = "full-range activations" if machine.int8_kernels_have_vnni() else "reduced-range (7-bit) activations"
    assert activations in info.execution, info.execution
    reference = Reference(tiny_checkpoint)
    data = list(photo_pngs())
    served = int8_client.embed(data, ["a photo of a cat"])
    expected = reference.image_embeds([Reference.open_image(item) for item in data])
    cosines = np.sum(served.images * expected, axis=1)  # both unit length
    print(f"tiny int8 served vs fp32 reference: cosine min {cosines.min():.5f}, mean {cosines.mean():.5f}")
    assert cosines.min() >= quantize.MIN_COSINE and cosines.mean() >= quantize.MIN_MEAN_COSINE
    # the text tower stays fp32: parity as tight as the fp32 export's
    assert np.abs(served.texts - reference.text_embeds(["a photo of a cat"])).max() <= 1e-4


def test_full_range_int8_is_refused_at_load_where_the_kernels_saturate(int8_repository: Path, tmp_path: Path) -> None:
    """As if a repository exported on a VNNI machine were served on an AVX2-only one (whose code
    runs there when both are AVX2 in torch's terms): oneDNN's AVX2 kernels, reproduced with its ISA
    cap, would saturate the full-range activations, so the image encoder refuses to load and says
    what to do."""
    foreign = tmp_path / "repository"
    shutil.copytree(int8_repository, foreign)
    config = foreign / "clip_image_encoder" / "config.pbtxt"
    text = config.read_text()
    assert 'key: "int8_activations"' in text
    config.write_text(text.replace('string_value: "reduced-range"', 'string_value: "full-range"'))
    launcher = servers.LauncherTriton(foreign, tmp_path, env={"ONEDNN_MAX_CPU_ISA": "AVX2"})
    try:
        wait_for(
            lambda: not launcher.process.running() or "Triton ready" in launcher.process.log(),
            300,
            "the launcher giving up (or, wrongly, serving)",
            explain=launcher.process.log_tail,
        )
        log = launcher.process.log()
        assert "Triton ready" not in log, log
        assert "clip_image_encoder failed to load:" in log
        assert "saturate on them (no VNNI)" in log and "7-bit activations here" in log
    finally:
        launcher.stop()
