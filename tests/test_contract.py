"""The contract (clip_contract) is what every part reads: the committed model templates agree with
it, a template that drifts is refused before anything is written, every precision is on the wire,
the exported repository carries the contract into every Python model, and "ready" means every
public model, whoever asks."""

from __future__ import annotations

import filecmp
import http.server
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from clip_api import clip_service_pb2 as pb
from clip_contract import models, parameters, precisions
from export import repository
from tests.support.servers import LauncherTriton


def template_configs() -> dict[str, object]:
    return {
        folder.name: repository.read_config(folder / "config.pbtxt")
        for folder in sorted(repository.TEMPLATE_DIR.iterdir())
        if (folder / "config.pbtxt").is_file()
    }


def test_every_template_is_a_model_of_the_contract() -> None:
    configs = template_configs()
    assert set(configs) == set(models.BY_NAME)
    for config in configs.values():
        repository.check_contract(config)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "drift, message",
    [
        (lambda c: setattr(c.output[0], "name", "SCORES"), "outputs"),
        (lambda c: setattr(c.input[0], "data_type", 11), "inputs"),  # TYPE_FP32 for the image bytes
        (lambda c: c.input.pop(), "inputs"),
    ],
)
def test_a_template_that_drifts_from_the_contract_is_refused(drift: object, message: str) -> None:
    config = template_configs()[models.CLASSIFY.name]
    drift(config)  # type: ignore[operator]
    with pytest.raises(repository.ContractMismatch, match=f"clip_classify: config.pbtxt {message}"):
        repository.check_contract(config)  # type: ignore[arg-type]


def test_an_optional_input_is_optional_in_its_config() -> None:
    config = template_configs()[models.TOKENIZE.name]
    config.input[1].optional = False  # type: ignore[attr-defined]
    with pytest.raises(repository.ContractMismatch, match="TEMPLATES"):
        repository.check_contract(config)  # type: ignore[arg-type]


def test_every_precision_is_on_the_wire_and_has_a_tower_dtype() -> None:
    wire = {name for name in pb.Precision.keys() if name != "PRECISION_UNSPECIFIED"}  # noqa: SIM118 (an enum wrapper)
    assert {spec.wire_name for spec in precisions.PRECISIONS.values()} == wire
    for spec in precisions.PRECISIONS.values():
        assert isinstance(getattr(torch, spec.tower_dtype), torch.dtype), spec
    with pytest.raises(ValueError, match="unknown precision 'int4'; one of fp32, bf16, fp16, int8"):
        precisions.lookup("int4")


def test_the_exported_repository_carries_the_contract(tiny_repository: Path) -> None:
    source = Path(models.__file__).parent
    for model in models.MODELS:
        config = repository.read_config(tiny_repository / model.name / "config.pbtxt")
        repository.check_contract(config)
        if config.backend == "python":
            copied = tiny_repository / model.name / "1" / "clip_contract"
            names = sorted(path.name for path in source.glob("*.py"))
            assert sorted(path.name for path in copied.glob("*.py")) == names
            assert filecmp.cmpfiles(source, copied, names, shallow=False)[0] == names
        if model.public:
            assert set(parameters.MODEL_CARD) <= set(config.parameters), model.name
    preprocess = repository.read_config(tiny_repository / models.PREPROCESS_IMAGE.name / "config.pbtxt")
    assert {parameters.SHORTEST_EDGE, parameters.CROP_SIZE} <= set(preprocess.parameters)
    assert "image_size" not in preprocess.parameters


def healthcheck(url: str) -> subprocess.CompletedProcess[str]:
    """`python -m launcher.healthcheck URL`, as the compose file and the Kubernetes probes run it."""
    return subprocess.run([sys.executable, "-m", "launcher.healthcheck", url], capture_output=True, text=True)


@pytest.fixture
def only_classify_ready() -> Iterator[str]:
    """A stand-in Triton HTTP endpoint where clip_classify is READY and no other model is."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ready = self.path == f"/v2/models/{models.CLASSIFY.name}/ready"
            self.send_response(200 if ready else 400)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_ready_means_every_public_model(tiny_triton: LauncherTriton, only_classify_ready: str) -> None:
    assert healthcheck(tiny_triton.http_url).returncode == 0
    partial = healthcheck(only_classify_ready)
    assert partial.returncode == 1 and models.EMBED_IMAGE.name in partial.stderr


def test_preprocessing_the_service_cannot_reproduce_is_refused_at_export() -> None:
    from transformers import CLIPModel

    from export.checkpoint import CheckpointError
    from export.pipeline import model_facts
    from export.random_checkpoint import cached

    model = CLIPModel.from_pretrained(str(cached("tiny")))
    facts = model_facts(model, {"size": {"shortest_edge": 256}, "crop_size": {"height": 224, "width": 224}})
    assert (facts.shortest_edge, facts.crop_size) == (256, 224)
    assert model_facts(model, {"size": 224, "crop_size": 224}).shortest_edge == 224  # older configs: plain ints
    with pytest.raises(CheckpointError, match="crops 192 pixels, but the vision tower takes 224"):
        model_facts(model, {"size": {"shortest_edge": 256}, "crop_size": {"height": 192, "width": 192}})
    with pytest.raises(CheckpointError, match=re.escape("size is {'height': 224, 'width': 300}")):
        model_facts(model, {"size": {"height": 224, "width": 300}})  # a fixed resize, not shortest-edge
    with pytest.raises(CheckpointError, match=re.escape("crop_size is {'height': 224, 'width': 300}")):
        model_facts(model, {"crop_size": {"height": 224, "width": 300}})  # not square
