"""The served ensembles against transformers' CLIPModel + CLIPProcessor on the same weights.

Tolerances (fp32): embeddings within 1e-4 max abs diff, logits within 1e-3, identical top-1.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from export import random_checkpoint
from tests.support import servers
from tests.support.images import photo_pngs
from tests.support.infer import classify, embed_images, embed_texts
from tests.support.reference import Reference
from tests.support.servers import LauncherTriton

EMBED_TOLERANCE = 1e-4
LOGIT_TOLERANCE = 1e-3
LABELS = [
    "a photo of an astronaut",
    "a photo of a cup of coffee",
    "a photo of a cat",
    "a rocket on the launch pad",
    "a grey photograph of a cameraman",
    "deep space",
]


def check_parity(client: grpcclient.InferenceServerClient, reference: Reference) -> None:
    data = list(photo_pngs())
    opened = [Reference.open_image(item) for item in data]
    served_images = embed_images(client, data)
    expected_images = reference.image_embeds(opened)
    assert np.abs(served_images - expected_images).max() <= EMBED_TOLERANCE
    assert np.allclose(np.linalg.norm(served_images, axis=1), 1.0, atol=1e-5)

    served_texts = embed_texts(client, LABELS)
    assert np.abs(served_texts - reference.text_embeds(LABELS)).max() <= EMBED_TOLERANCE

    logits, probs = classify(client, data, LABELS)
    expected_logits = reference.logits(opened, LABELS)
    assert logits.shape == probs.shape == (len(data), len(LABELS))
    assert np.abs(logits - expected_logits).max() <= LOGIT_TOLERANCE
    assert (logits.argmax(axis=1) == expected_logits.argmax(axis=1)).all()
    expected_probs = np.exp(expected_logits - expected_logits.max(1, keepdims=True))
    expected_probs /= expected_probs.sum(1, keepdims=True)
    assert np.abs(probs - expected_probs).max() <= 1e-4
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_tiny_model_matches_the_reference(
    tiny_client: grpcclient.InferenceServerClient, tiny_reference: Reference
) -> None:
    check_parity(tiny_client, tiny_reference)


def test_the_torchscript_artifact_matches_the_reference_too(
    tiny_checkpoint: Path, tiny_reference: Reference, tmp_path: Path
) -> None:
    """Compiled encoders are the CPU default; the TorchScript model.pt (what --compile none, a GPU,
    or an NGC libtorch backend runs) is held to the same tolerances."""
    repository = random_checkpoint.cached_export("tiny", compile="none")
    assert not (repository / "clip_image_encoder" / "1" / "model.pt2").exists()
    with servers.triton(repository, tmp_path) as triton:
        client = grpcclient.InferenceServerClient(triton.grpc_url)
        try:
            check_parity(client, tiny_reference)
        finally:
            client.close()


def test_logit_scale_comes_from_the_weights(tiny_client: grpcclient.InferenceServerClient) -> None:
    # cosine of an embedding with itself is 1, so the logit is the applied scale: 100, not e^2.6592
    text = embed_texts(tiny_client, ["a cat"])
    logits, _ = classify(tiny_client, list(photo_pngs())[:1], ["a cat"])
    config = tiny_client.get_model_config("clip_similarity", as_json=True)["config"]
    scale = math.exp(float(config["parameters"]["logit_scale"]["string_value"]))
    assert scale == pytest.approx(100.0, rel=1e-6)
    image = embed_images(tiny_client, list(photo_pngs())[:1])
    assert logits[0, 0] == pytest.approx(100.0 * float(image[0] @ text[0]), abs=1e-3)


def test_concurrent_requests_each_get_their_own_result(tiny_client: grpcclient.InferenceServerClient) -> None:
    """The dynamic batcher merges concurrent requests; each must get back exactly its own rows."""
    data = list(photo_pngs())
    alone = [embed_images(tiny_client, [item])[0] for item in data]
    with ThreadPoolExecutor(max_workers=8) as pool:
        batched = list(
            pool.map(
                lambda index: (index, embed_images(tiny_client, [data[index]])[0]),
                [i % len(data) for i in range(4 * len(data))],
            )
        )
    for index, vector in batched:
        assert np.abs(vector - alone[index]).max() <= 1e-5


@pytest.mark.vitb
def test_vit_b_16_shapes_match_the_reference(vitb_triton: LauncherTriton, vitb_checkpoint: Path) -> None:
    client = grpcclient.InferenceServerClient(vitb_triton.grpc_url)
    try:
        check_parity(client, Reference(vitb_checkpoint))
        config = client.get_model_config("clip_image_encoder", as_json=True)["config"]
        assert [int(d) for d in config["output"][0]["dims"]] == [512]
    finally:
        client.close()


def test_prompt_templates_are_averaged_the_clip_way(
    tiny_client: grpcclient.InferenceServerClient, tiny_reference: Reference
) -> None:
    templates = ("a photo of a {}.", "a drawing of a {}.", "{}")
    labels = ["cat", "cup of coffee", "rocket"]
    data = list(photo_pngs())[:3]
    logits, _probs = classify(tiny_client, data, labels, templates)
    prompts = tiny_reference.text_embeds([t.replace("{}", label) for label in labels for t in templates])
    averaged = prompts.reshape(len(labels), len(templates), -1).mean(axis=1)
    averaged /= np.linalg.norm(averaged, axis=1, keepdims=True)
    image = tiny_reference.image_embeds([Reference.open_image(item) for item in data])
    expected = 100.0 * image @ averaged.T
    assert np.abs(logits - expected).max() <= LOGIT_TOLERANCE
    assert (logits.argmax(1) == expected.argmax(1)).all()


def test_template_without_placeholder_is_refused(tiny_client: grpcclient.InferenceServerClient) -> None:
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException, match=r'TEMPLATES\[1\] must contain "\{\}" exactly once'):
        classify(tiny_client, list(photo_pngs())[:1], ["cat"], ("a {}", "no placeholder"))


def test_a_checkpoint_that_resizes_past_its_crop_matches_the_reference(tmp_path: Path) -> None:
    """shortest_edge and crop_size are two facts (256 and 224 here, as in many checkpoints): the
    served embeddings follow the checkpoint's resize, through the gateway, and GetModelInfo says so."""
    from clip_client import ClipClient
    from export.pipeline import export
    from export.repository import Settings
    from tests.support.gateway import gateway_config

    checkpoint = random_checkpoint.cached("tiny", shortest_edge=256)
    reference = Reference(checkpoint)
    export(str(checkpoint), tmp_path / "repository", "fp32", Settings(compile="none"))
    data = list(photo_pngs())
    opened = [Reference.open_image(item) for item in data]
    expected = reference.image_embeds(opened)
    resized_to_crop = Reference(random_checkpoint.cached("tiny")).image_embeds(opened)  # same weights, 224
    assert np.abs(expected - resized_to_crop).max() > 100 * EMBED_TOLERANCE  # the resize matters here
    with (
        servers.triton(tmp_path / "repository", tmp_path) as triton,
        servers.gateway(gateway_config(triton.grpc_url)) as gateway,
        ClipClient(gateway.target) as client,
    ):
        info = client.model_info()
        assert (info.shortest_edge, info.crop_size, info.image_size) == (256, 224, 224)
        served = client.embed(data).images
    assert np.abs(served - expected).max() <= EMBED_TOLERANCE
