"""The bundled demo model really classifies, measured through the served Classify (gateway +
Triton), on held-out pictures from another seed, with prompts it never saw verbatim: exported fp32
(compiled), and int8 (calibrated on the shipped set, accuracy-gated) against the same bar."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from clip_client import ClipClient
from demo.evaluate import EVAL_SEED
from demo.shapes import CLASSES, dataset
from demo.train import HELD_OUT_TEMPLATES, TRAIN_TEMPLATES
from export import quantize, random_checkpoint
from export.pipeline import export
from tests.support import servers
from tests.support.gateway import gateway_config
from tests.support.reference import Reference
from tests.test_model_parity import EMBED_TOLERANCE

DEMO = Path(__file__).resolve().parents[1] / "models" / "clip-demo"
PER_CLASS = 10  # 160 held-out pictures


@pytest.fixture(scope="module", params=["fp32", "int8"])
def demo_client(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClipClient]:
    repository = random_checkpoint.CACHE / "repositories" / f"demo-{request.param}"
    export(str(DEMO), repository, request.param)
    with (
        servers.triton(repository, tmp_path_factory.mktemp("triton-demo")) as triton,
        servers.gateway(gateway_config(triton.grpc_url)) as gateway,
        ClipClient(gateway.target) as client,
    ):
        yield client


def png(image: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")  # type: ignore[attr-defined]
    return buffer.getvalue()


def test_held_out_prompts_never_occur_in_training_captions() -> None:
    assert not set(HELD_OUT_TEMPLATES) & set(TRAIN_TEMPLATES)


@pytest.mark.parametrize("template", HELD_OUT_TEMPLATES)
def test_zero_shot_accuracy_through_the_service_is_at_least_95_percent(demo_client: ClipClient, template: str) -> None:
    items = dataset(EVAL_SEED, PER_CLASS)
    assert Counter(label for _, label in items) == dict.fromkeys(CLASSES, PER_CLASS)  # every class, evenly
    correct = 0
    for start in range(0, len(items), 32):
        chunk = items[start : start + 32]
        result = demo_client.classify([png(image) for image, _ in chunk], list(CLASSES), templates=[template])
        correct += sum(item.top.label == label for item, (_, label) in zip(result, chunk, strict=True))
    accuracy = correct / len(items)
    precision = demo_client.model_info().precision
    print(f"demo model {precision}, template {template!r}: top-1 {accuracy:.1%} on {len(items)} held-out pictures")
    assert accuracy >= 0.95


def test_demo_model_is_reported_as_demo_and_matches_the_reference(demo_client: ClipClient) -> None:
    info = demo_client.model_info()
    assert info.variant == "demo" and info.model_id == "clip-demo"  # a name, never the server's path
    reference = Reference(DEMO)
    pictures = [image for image, _ in dataset(EVAL_SEED + 1, 1)[:4]]
    served = demo_client.embed([png(image) for image in pictures], ["a red circle"])
    expected = reference.image_embeds(pictures)
    if info.precision == "int8":  # within the accuracy gate's cosine
        assert np.sum(served.images * expected, axis=1).min() >= quantize.MIN_COSINE
    else:
        assert np.abs(served.images - expected).max() <= EMBED_TOLERANCE
    text_expected = reference.text_embeds(["a red circle"])
    if info.precision == "int8":  # its text tower too (the demo model's passes its gate: 0.9999)
        assert "int8 text tower" in info.execution, info.execution
        assert float(np.sum(served.texts * text_expected)) >= quantize.MIN_COSINE
    else:
        assert np.abs(served.texts - text_expected).max() <= EMBED_TOLERANCE
