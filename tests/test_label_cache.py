"""The per-label text cache: unit behaviour, and through Triton that a warm label set plus one new
label costs exactly one text encode (read from Triton's metrics endpoint)."""

from __future__ import annotations

import numpy as np
import tritonclient.grpc as grpcclient

from tests.support.images import photo_pngs
from tests.support.infer import classify, embed_texts
from tests.support.servers import LauncherTriton, scrape
from tests.support.triton import load_model_module

cache_module = load_model_module("clip_text_encoder", "label_cache")
lru = load_model_module("common", "byte_lru")


def test_keys_ignore_padding_and_lookups_dedupe() -> None:
    padded = np.array([49406, 320, 2368, 49407, 49407, 49407])
    assert cache_module.row_key(padded, 49407) == cache_module.row_key(padded[:4], 49407)
    cache = cache_module.LabelCache(max_bytes=10**6)
    keys = [b"a", b"b", b"a"]
    found, missing = cache.lookup(keys)
    assert found == {} and missing == [b"a", b"b"]
    cache.store(missing, np.eye(2, 4, dtype=np.float32))
    found, missing = cache.lookup([b"b", b"c"])
    assert list(found) == [b"b"] and missing == [b"c"]


def test_cache_is_bounded_and_least_recently_used_goes_first() -> None:
    one = lru.entry_bytes(b"a", np.zeros(4, dtype=np.float32))
    cache = cache_module.LabelCache(max_bytes=3 * one)
    cache.store([b"a", b"b", b"c"], np.zeros((3, 4), dtype=np.float32))
    cache.lookup([b"a"])  # a is now the most recent
    cache.store([b"d"], np.zeros((1, 4), dtype=np.float32))
    assert cache.entries.keys() == [b"c", b"a", b"d"] and cache.entries.bytes == 3 * one


def test_pad_restores_a_batch() -> None:
    keys = [np.array([1, 2, 9], dtype=np.int64).tobytes(), np.array([1, 9], dtype=np.int64).tobytes()]
    assert cache_module.pad(keys, 9).tolist() == [[1, 2, 9], [1, 9, 9]]


def misses(server: LauncherTriton) -> float:
    """Summed over the text encoder's instances."""
    return sum(
        value for (name, _), value in scrape(server.metrics_url).items() if name == "clip_label_cache_misses_total"
    )


def test_one_new_label_in_a_warm_set_costs_one_encode(
    tiny_triton: LauncherTriton, tiny_client: grpcclient.InferenceServerClient
) -> None:
    labels = [f"label set member number {i}" for i in range(1000)]
    image = list(photo_pngs()[:1])
    classify(tiny_client, image, labels)  # warm (whatever it costs)
    before = misses(tiny_triton)
    warm_logits, _ = classify(tiny_client, image, [*labels, "one brand new label"])
    assert misses(tiny_triton) - before == 1
    reordered, _ = classify(tiny_client, image, list(reversed(labels)))
    assert misses(tiny_triton) - before == 1  # a reordered set is all hits
    assert np.allclose(reordered[0][::-1], warm_logits[0][:1000], atol=1e-4)


def test_cached_embeddings_equal_fresh_ones(tiny_client: grpcclient.InferenceServerClient) -> None:
    texts = ["cache parity one", "cache parity two, a longer text than the first"]
    fresh = embed_texts(tiny_client, texts)
    again = embed_texts(tiny_client, list(reversed(texts)))[::-1]
    assert np.abs(fresh - again).max() <= 1e-6
