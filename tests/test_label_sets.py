"""Named label sets: RegisterLabelSet once, Classify by id, against a real gateway and Triton."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from clip_api import clip_service_pb2 as pb
from clip_api import clip_service_pb2_grpc
from clip_client import InvalidRequestError
from gateway.label_sets import LabelSet as StoredSet
from gateway.label_sets import LabelSets
from tests.support import servers
from tests.support.gateway import GatewayThread, gateway_config
from tests.support.servers import LauncherTriton
from tests.test_tenants import client_for, keys_file

LABELS = [f"label set entry {i}" for i in range(300)]
TEMPLATES = ["a photo of a {}.", "a drawing of a {}."]


@pytest.fixture(scope="module")
def keyed_gateway(tiny_triton: LauncherTriton, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayThread]:
    folder = tmp_path_factory.mktemp("label-set-keys")
    # Room for about two sets of LABELS: a third evicts the least recently used.
    config = gateway_config(
        tiny_triton.grpc_url, api_keys_file=keys_file(folder, "alice", "bob"), max_label_set_bytes=60_000
    )
    with servers.gateway(config) as gateway:
        yield gateway


def test_a_set_by_id_ranks_exactly_as_its_labels_do(keyed_gateway: GatewayThread, photo_png: bytes) -> None:
    with client_for(keyed_gateway, "alice") as client:
        label_set = client.register_label_set(LABELS, templates=TEMPLATES)
        assert label_set.id.startswith("ls-") and label_set.labels == tuple(LABELS)
        by_labels = client.classify([photo_png, b"not an image"], LABELS, templates=TEMPLATES, top_k=5)
        by_id = client.classify([photo_png, b"not an image"], label_set, top_k=5)
    assert [s.label for s in by_id[0].labels] == [s.label for s in by_labels[0].labels]
    # scored in the gateway with Triton's own arithmetic (clip_contract.similarity): equal but for
    # the float32 rounding of a matmul of another shape
    np.testing.assert_allclose(
        [s.probability for s in by_id[0].labels], [s.probability for s in by_labels[0].labels], atol=1e-6
    )
    np.testing.assert_allclose([s.score for s in by_id[0].labels], [s.score for s in by_labels[0].labels], atol=1e-4)
    assert by_id[1].error is not None  # a bad image is its own result, as with labels


def triton_requests(triton: LauncherTriton) -> dict[str, int]:
    """Successful requests per model, from Triton's own statistics."""
    with grpcclient.InferenceServerClient(triton.grpc_url) as client:
        stats = client.get_inference_statistics(as_json=True)
    # (JSON leaves out zero counts)
    return {m["name"]: int(m["inference_stats"].get("success", {}).get("count", 0)) for m in stats["model_stats"]}


def test_a_classify_by_id_sends_triton_only_its_images_once_the_set_is_known(
    keyed_gateway: GatewayThread, tiny_triton: LauncherTriton, photo_png: bytes
) -> None:
    """The first call by id computes the set's label matrix (its prompts through clip_embed_text);
    later calls run only clip_embed_image in Triton: no labels, no tokenizing, no similarity step."""
    labels = [f"matrix label {i}" for i in range(40)]
    with client_for(keyed_gateway, "alice") as client:
        label_set = client.register_label_set(labels, templates=TEMPLATES)
        client.classify(photo_png, label_set)  # computes and keeps the matrix
        tiny_triton.wait_idle(timeout=120)
        before = triton_requests(tiny_triton)
        for _ in range(3):
            assert client.classify(photo_png, label_set, top_k=3)[0].ok
        tiny_triton.wait_idle(timeout=120)
        after = triton_requests(tiny_triton)
    ran = {
        name: after.get(name, 0) - before.get(name, 0) for name in after if after.get(name, 0) != before.get(name, 0)
    }
    assert ran.get("clip_embed_image") == 3, ran
    for name in ("clip_classify", "clip_embed_text", "clip_tokenize", "clip_text_encoder", "clip_similarity"):
        assert name not in ran, ran


def test_the_id_is_the_same_for_the_same_set_on_any_gateway_and_differs_with_templates(
    keyed_gateway: GatewayThread, tiny_triton: LauncherTriton, tmp_path: Path
) -> None:
    config = gateway_config(tiny_triton.grpc_url, api_keys_file=keys_file(tmp_path, "alice"))
    with (
        servers.gateway(config) as other,
        client_for(other, "alice") as there,
        client_for(keyed_gateway, "alice") as here,
    ):
        assert here.register_label_set(LABELS).id == there.register_label_set(LABELS).id
        assert here.register_label_set(LABELS).id != here.register_label_set(LABELS, templates=["{}"]).id


def test_a_classify_by_id_sends_no_labels_and_an_unknown_id_is_not_found_by_name(
    keyed_gateway: GatewayThread, photo_png: bytes
) -> None:
    with client_for(keyed_gateway, "alice") as client:
        label_set = client.register_label_set(["cat", "dog"])
        request = client._classify_request(photo_png, label_set, None, 0)
        assert request.label_set_id == label_set.id and not request.labels and not request.prompt_templates
    with grpc.insecure_channel(keyed_gateway.target) as channel:
        stub = clip_service_pb2_grpc.ClipServiceStub(channel)
        key = (("authorization", "Bearer alice-key"),)
        image = pb.Image(data=photo_png)
        with pytest.raises(grpc.RpcError) as unknown:
            stub.Classify(pb.ClassifyRequest(images=[image], label_set_id="ls-nothing"), metadata=key, timeout=30)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        assert "label_set_id" in (unknown.value.details() or "") and "RegisterLabelSet" in (
            unknown.value.details() or ""
        )
        both = pb.ClassifyRequest(images=[image], label_set_id=label_set.id, labels=["cat"])
        with pytest.raises(grpc.RpcError) as mixed:
            stub.Classify(both, metadata=key, timeout=30)
        assert mixed.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "not both" in (mixed.value.details() or "")


def test_a_set_is_checked_as_classify_checks_labels(keyed_gateway: GatewayThread) -> None:
    with client_for(keyed_gateway, "alice") as client:
        with pytest.raises(InvalidRequestError, match="labels"):
            client.register_label_set([])
        with pytest.raises(InvalidRequestError, match="labels"):
            client.register_label_set([f"x{i}" for i in range(1001)])
        with pytest.raises(InvalidRequestError, match="templates"):
            client.register_label_set(["cat"], templates=["no placeholder"])


def test_one_keys_sets_are_not_anothers(keyed_gateway: GatewayThread, photo_png: bytes) -> None:
    with client_for(keyed_gateway, "alice") as alice:
        label_set = alice.register_label_set(["only alice's", "set"])
        assert alice.classify(photo_png, label_set)[0].ok
    with grpc.insecure_channel(keyed_gateway.target) as channel:  # bob knows the id, not the labels
        stub = clip_service_pb2_grpc.ClipServiceStub(channel)
        request = pb.ClassifyRequest(images=[pb.Image(data=photo_png)], label_set_id=label_set.id)
        with pytest.raises(grpc.RpcError) as foreign:
            stub.Classify(request, metadata=(("authorization", "Bearer bob-key"),), timeout=30)
        assert foreign.value.code() == grpc.StatusCode.NOT_FOUND


def test_an_evicted_set_is_registered_again_by_the_client(keyed_gateway: GatewayThread, photo_png: bytes) -> None:
    first = [f"evicted first {i}" for i in range(300)]
    with client_for(keyed_gateway, "bob") as client:
        label_set = client.register_label_set(first)
        for round_number in range(3):  # each about 30 KB of the 60 KB store: the first is evicted
            client.register_label_set([f"filler {round_number} {i}" for i in range(300)])
        with grpc.insecure_channel(keyed_gateway.target) as channel:
            stub = clip_service_pb2_grpc.ClipServiceStub(channel)
            request = pb.ClassifyRequest(images=[pb.Image(data=photo_png)], label_set_id=label_set.id)
            with pytest.raises(grpc.RpcError) as evicted:
                stub.Classify(request, metadata=(("authorization", "Bearer bob-key"),), timeout=30)
            assert evicted.value.code() == grpc.StatusCode.NOT_FOUND
        result = client.classify(photo_png, label_set, top_k=1)  # NOT_FOUND, registered again, answered
        assert result[0].top.label in first


def test_the_store_stays_within_its_bytes_and_refuses_a_set_larger_than_all_of_it() -> None:
    store = LabelSets(max_bytes=50_000)
    for round_number in range(50):
        store.register("t", StoredSet(tuple(f"label {round_number} {i}" for i in range(100)), ()))
        assert store.bytes <= 50_000
    assert 0 < len(store) < 50
    with pytest.raises(Exception, match="--max-label-set-bytes"):
        store.register("t", StoredSet(tuple(f"{i:0200d}" for i in range(300)), ()))


def test_a_key_registering_set_after_set_evicts_its_own_not_anothers() -> None:
    store = LabelSets(max_bytes=50_000, key_share=0.5)
    kept = store.register("quiet", StoredSet(("the quiet key's", "set"), ()))
    for round_number in range(50):  # about 4 KB each: the churning key passes its half many times
        store.register("churning", StoredSet(tuple(f"churn {round_number} {i}" for i in range(40)), ()))
        assert store.bytes <= 50_000
    assert store.get("quiet", kept).labels == ("the quiet key's", "set")
    alone = LabelSets(max_bytes=50_000, key_share=0.5)
    for round_number in range(50):  # with no other key holding sets, one key may use all of it
        alone.register("only", StoredSet(tuple(f"alone {round_number} {i}" for i in range(40)), ()))
    assert alone.bytes > 25_000


def test_a_client_is_told_when_the_server_sent_another_encoding_than_it_asked_for() -> None:
    from clip_client import ClipClient, ServerError

    with ClipClient("127.0.0.1:1") as client:  # no call is made: only the answer is read
        older_server = pb.EmbedResponse(dimension=4)  # encoding 0: a server from before encodings
        with pytest.raises(ServerError, match="asked for int8 embeddings, the server sent float32"):
            client._embeddings(older_server, "int8")
        assert client._embeddings(older_server, "float32").encoding == "float32"
