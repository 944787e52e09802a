"""The image tower on OpenVINO: exported through the same checks as the torch tower, chosen by
measurement (--image-runtime auto) or asked for, and served by Triton with the reference's
embeddings. The choice itself is unit-tested on made-up measurements."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from clip_client import ClipClient
from export import openvino_export, quantize
from export.pipeline import ExportRefused, export
from export.repository import Settings
from tests.support import machine, servers
from tests.support.gateway import gateway_config
from tests.support.images import photo_pngs
from tests.support.reference import Reference


def test_auto_keeps_openvino_only_when_it_is_measured_faster() -> None:
    slower = openvino_export.decide("auto", {"torch": 10.0, "openvino": 10.5}, None, "1 instance x 2 threads")
    faster = openvino_export.decide("auto", {"torch": 10.0, "openvino": 11.5}, None, "1 instance x 2 threads")
    assert slower.runtime == "torch" and "1.05x" in slower.reason and "from 1.1x" in slower.reason
    assert faster.runtime == "openvino" and "11.5 images/s against torch's 10.0 (1.15x)" in faster.reason
    # an int8 tower costs OpenVINO no extra memory (both runtimes prepack its weights): a smaller margin
    int8 = openvino_export.decide("auto", {"torch": 10.0, "openvino": 10.6}, None, "2 instances x 1 thread", 1.05)
    assert int8.runtime == "openvino" and "2 instances x 1 thread" in int8.reason


def test_a_tower_openvino_cannot_serve_stays_on_torch_or_is_refused_when_asked_for() -> None:
    problem = "the int8 image tower (OpenVINO model) failed its accuracy gate"
    kept = openvino_export.decide("auto", {}, problem, "1 instance x 2 threads")
    assert kept.runtime == "torch" and problem in kept.reason
    with pytest.raises(ValueError, match="--image-runtime openvino: the int8 image tower"):
        openvino_export.decide("openvino", {}, problem, "1 instance x 2 threads")
    assert (
        openvino_export.decide("torch", {}, None, "1 instance x 2 threads").reason
        == "torch: asked for (--image-runtime torch)"
    )


def test_openvino_without_the_compiled_path_is_refused(tiny_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportRefused, match="--image-runtime openvino needs the compiled path"):
        settings = Settings(compile="none", image_runtime="openvino")
        export(str(tiny_checkpoint), tmp_path / "repository", "fp32", settings)


@pytest.fixture(scope="module", params=["fp32", "int8"])
def openvino_repository(
    request: pytest.FixtureRequest, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    repository = tmp_path_factory.mktemp(f"openvino-{request.param}") / "repository"
    try:
        export(str(tiny_checkpoint), repository, request.param, Settings(image_runtime="openvino"))
    except ExportRefused as refused:
        # Measured to pass only with VNNI kernels; without them (7-bit activations) the refusal
        # naming OpenVINO's gate is the answer an explicit request gets, never a torch tower.
        if request.param != "int8" or machine.int8_kernels_have_vnni() or "OpenVINO model" not in str(refused):
            raise
        pytest.skip(f"this CPU has no VNNI and the OpenVINO int8 tower was refused: {refused}")
    return repository


@pytest.fixture(scope="module")
def openvino_triton(
    openvino_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[servers.LauncherTriton]:
    with servers.triton(openvino_repository, tmp_path_factory.mktemp("triton-openvino")) as triton:
        yield triton


@pytest.fixture(scope="module")
def openvino_client(openvino_triton: servers.LauncherTriton) -> Iterator[ClipClient]:
    with servers.gateway(gateway_config(openvino_triton.grpc_url)) as gateway, ClipClient(gateway.target) as client:
        yield client


@pytest.mark.may_skip(
    reason="an AVX2-only CPU's OpenVINO int8 tower may fail the accuracy gate (the fixture checks the refusal)"
)
def test_the_export_records_openvino_and_serves_it_in_place_of_the_package(openvino_repository: Path) -> None:
    manifest = json.loads((openvino_repository / "manifest.json").read_text())
    assert manifest["image_runtime"] == "openvino", manifest["image_runtime_reason"]
    assert set(manifest["image_runtime_images_per_second"]) == {"torch", "openvino"}
    folder = openvino_repository / "clip_image_encoder" / "1"
    assert (folder / "model.xml").is_file() and (folder / "model.bin").is_file()
    assert not (folder / "model.pt2").exists()  # the package OpenVINO replaced is not shipped
    assert (openvino_repository / "clip_text_encoder" / "1" / "model.pt2").is_file()  # text stays torch
    config = (folder.parent / "config.pbtxt").read_text()
    assert 'string_value: "openvino"' in config and 'key: "openvino_precision"' in config


@pytest.mark.may_skip(
    reason="an AVX2-only CPU's OpenVINO int8 tower may fail the accuracy gate (the fixture checks the refusal)"
)
def test_served_openvino_embeddings_match_the_reference(
    openvino_client: ClipClient,
    openvino_triton: servers.LauncherTriton,
    openvino_repository: Path,
    tiny_checkpoint: Path,
) -> None:
    precision = json.loads((openvino_repository / "manifest.json").read_text())["precision"]
    info = openvino_client.model_info()
    assert "image tower on OpenVINO" in info.execution, info.execution
    # what the image encoder says it loaded, not only what the manifest says it should
    assert "clip_image_encoder: running OpenVINO" in openvino_triton.triton_log.read_text()
    data = list(photo_pngs())
    served = openvino_client.embed(data, ["a photo of a cat"])
    reference = Reference(tiny_checkpoint)
    expected = reference.image_embeds([Reference.open_image(item) for item in data])
    cosines = np.sum(served.images * expected, axis=1)  # both unit length
    difference = np.abs(served.images - expected).max()
    print(f"tiny {precision} on OpenVINO vs reference: cosine min {cosines.min():.6f}, max |diff| {difference:.2e}")
    if precision == "int8":
        assert cosines.min() >= quantize.MIN_COSINE and cosines.mean() >= quantize.MIN_MEAN_COSINE
    else:
        assert difference <= 1e-4
    # the text tower is torch's either way: int8 within its gate, fp32 within the fp32 export's parity
    text_expected = reference.text_embeds(["a photo of a cat"])
    if precision == "int8":
        assert float(np.sum(served.texts * text_expected)) >= quantize.MIN_COSINE
    else:
        assert np.abs(served.texts - text_expected).max() <= 1e-4


def test_a_timing_worker_that_fails_fails_the_timing_and_is_reaped(tmp_path: Path) -> None:
    """A worker that cannot load its tower (here: no such file) ends the timing with an error
    naming what it said, rather than hanging on it; the pipeline then keeps torch, saying why."""
    with pytest.raises(RuntimeError, match="a worker said ''"):
        openvino_export.as_served("torch", tmp_path / "missing.pt2", 2, 1, "f32", 16)
