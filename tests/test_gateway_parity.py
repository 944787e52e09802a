"""Classify, Embed and Similarity through the real gateway and client equal the transformers
reference on the same weights (same tolerances as the model-repository tests)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clip_client import AsyncClipClient, ClipClient, ImageInput
from tests.support import images
from tests.support.gateway import GatewayThread
from tests.support.images import photo_pngs
from tests.support.reference import Reference
from tests.test_model_parity import EMBED_TOLERANCE, LOGIT_TOLERANCE

LABELS = ["astronaut", "cup of coffee", "cat", "rocket"]


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def test_classify_matches_the_reference_with_the_default_template(
    clip_client: ClipClient, tiny_reference: Reference
) -> None:
    data = photo_pngs()[:4]
    result = clip_client.classify(data, LABELS)
    opened = [Reference.open_image(item) for item in data]
    expected = tiny_reference.logits(opened, [f"a photo of a {label}." for label in LABELS])
    assert len(result) == len(data)
    for item, logits in zip(result, expected, strict=True):
        assert item.ok and len(item.labels) == len(LABELS)
        by_index = {score.index: score for score in item.labels}
        scores = np.array([by_index[i].score for i in range(len(LABELS))])
        probs = np.array([by_index[i].probability for i in range(len(LABELS))])
        assert np.abs(scores - logits).max() <= LOGIT_TOLERANCE
        assert np.abs(probs - softmax(logits)).max() <= 1e-4
        assert item.top.index == int(logits.argmax())
        assert [s.probability for s in item.labels] == sorted(probs, reverse=True)
        assert all(s.label == LABELS[s.index] for s in item.labels)


def test_top_k_and_custom_templates(clip_client: ClipClient, tiny_reference: Reference) -> None:
    templates = ["a photo of a {}.", "a drawing of a {}."]
    result = clip_client.classify(photo_pngs()[:1], LABELS, templates=templates, top_k=2)
    prompts = tiny_reference.text_embeds([t.replace("{}", label) for label in LABELS for t in templates])
    label_embeds = prompts.reshape(len(LABELS), len(templates), -1).mean(axis=1)
    label_embeds /= np.linalg.norm(label_embeds, axis=1, keepdims=True)
    image = tiny_reference.image_embeds([Reference.open_image(photo_pngs()[0])])[0]
    expected = 100.0 * label_embeds @ image
    assert [s.index for s in result[0].labels] == list(np.argsort(-expected)[:2])
    for score in result[0].labels:
        assert score.score == pytest.approx(expected[score.index], abs=LOGIT_TOLERANCE)


def test_embed_matches_the_reference(clip_client: ClipClient, tiny_reference: Reference) -> None:
    data = photo_pngs()[:3]
    texts = ["a cat", "a rocket", "naïve café 🐱"]
    result = clip_client.embed(data, texts)
    assert result.dimension == 16 and result.images.shape == (3, 16) and result.texts.shape == (3, 16)
    assert result.images.dtype == np.float32
    expected_images = tiny_reference.image_embeds([Reference.open_image(item) for item in data])
    assert np.abs(result.images - expected_images).max() <= EMBED_TOLERANCE
    assert np.abs(result.texts - tiny_reference.text_embeds(texts)).max() <= EMBED_TOLERANCE
    assert np.allclose(np.linalg.norm(result.images, axis=1), 1.0, atol=1e-5)
    assert not result.image_errors and not result.text_errors
    only_texts = clip_client.embed(texts=["a cat"])
    assert only_texts.images.shape == (0, 16) and only_texts.texts.shape == (1, 16)


def test_similarity_matches_the_reference(clip_client: ClipClient, tiny_reference: Reference) -> None:
    data = photo_pngs()[:2]
    texts = ["a photo of a cat", "a rocket"]
    result = clip_client.similarity(data, texts)
    expected = tiny_reference.logits([Reference.open_image(item) for item in data], texts)
    assert result.scale == pytest.approx(100.0, rel=1e-5)
    assert np.abs(result.scores - expected).max() <= LOGIT_TOLERANCE


async def test_async_client_gives_the_same_answers(tiny_gateway: GatewayThread, clip_client: ClipClient) -> None:
    data = photo_pngs()[:2]
    async with AsyncClipClient(tiny_gateway.target) as client:
        classified = await client.classify(data, LABELS)
        embedded = await client.embed(data, ["a cat"])
        similarity = await client.similarity(data, ["a cat"])
        info = await client.model_info()
    assert [item.labels for item in classified] == [item.labels for item in clip_client.classify(data, LABELS)]
    assert np.array_equal(embedded.images, clip_client.embed(data).images)
    assert np.array_equal(similarity.scores, clip_client.similarity(data, ["a cat"]).scores)
    assert info == clip_client.model_info()


def test_every_image_input_kind_gives_the_same_embedding(clip_client: ClipClient, tmp_path: Path) -> None:
    rgb = images.photos()["chelsea_451x300"]
    png = images.encode(Image.fromarray(rgb), "PNG")
    path = tmp_path / "chelsea.png"
    path.write_bytes(png)
    kinds: list[ImageInput] = [png, bytearray(png), memoryview(png), str(path), path, Image.open(io.BytesIO(png)), rgb]
    vectors = clip_client.embed(kinds).images
    assert np.abs(vectors - vectors[0]).max() <= 1e-6
    batch = clip_client.embed(np.stack([rgb, rgb])).images  # a 4-D array is a batch
    assert batch.shape == (2, 16) and np.abs(batch - vectors[0]).max() <= 1e-6
    floats = clip_client.embed(rgb.astype(np.float32) / 255.0).images
    assert np.abs(floats - vectors[0]).max() <= 1e-6


def test_model_info_reports_the_export(clip_client: ClipClient, tiny_checkpoint: Path) -> None:
    info = clip_client.model_info()
    assert info.model_id == tiny_checkpoint.name == "tiny"  # a name: no server path reaches a client
    assert (info.variant, info.precision, info.embedding_dimension) == ("full", "fp32", 16)
    assert (info.image_size, info.shortest_edge, info.crop_size, info.context_length) == (224, 224, 224, 77)
    assert info.scale == pytest.approx(100.0, rel=1e-5)
    assert info.limits.max_labels_per_request == 1000
    assert info.execution.startswith("AOTInductor-compiled fp32 encoders on CPU; fp32 asked for")


def test_a_model_name_can_be_given_at_export(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from export.pipeline import export
    from export.repository import Settings

    manifest = export(str(tiny_checkpoint), tmp_path / "repository", "fp32", Settings(compile="none"), "acme/clip-tiny")
    assert manifest["model_id"] == "acme/clip-tiny"
    assert str(tmp_path) not in str(manifest["model_id"])
