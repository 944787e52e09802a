"""The tokenizer model's per-prompt cache of token ids, on its own (no Triton)."""

from __future__ import annotations

import numpy as np

from tests.support.triton import load_model_module

token_cache = load_model_module("clip_tokenize", "token_cache")
token_rows = load_model_module("common", "token_rows")


class CountingEncoder:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, texts: list[str]) -> list[list[int]]:
        self.calls.append(list(texts))
        return [[0, *(ord(c) for c in text), 1] for text in texts]


def test_only_texts_not_seen_before_are_encoded_once_each() -> None:
    encode = CountingEncoder()
    cache = token_cache.TokenCache(encode, max_entries=10)
    first = cache.ids(["ab", "c", "ab"])
    assert first == [[0, 97, 98, 1], [0, 99, 1], [0, 97, 98, 1]]
    assert encode.calls == [["ab", "c"]]
    assert cache.ids(["c", "d", "ab"]) == [[0, 99, 1], [0, 100, 1], [0, 97, 98, 1]]
    assert encode.calls[-1] == ["d"]


def test_the_cache_is_bounded_and_evicts_the_least_recently_used() -> None:
    encode = CountingEncoder()
    cache = token_cache.TokenCache(encode, max_entries=2)
    cache.ids(["a", "b"])
    cache.ids(["a"])  # "b" is now the oldest
    cache.ids(["c"])
    assert list(cache.entries) == ["a", "c"]
    assert cache.ids(["x", "y", "z"]) == [[0, 120, 1], [0, 121, 1], [0, 122, 1]]  # more than fit: still answered
    assert len(cache.entries) == 2


def test_a_zero_sized_cache_encodes_every_time() -> None:
    encode = CountingEncoder()
    cache = token_cache.TokenCache(encode, max_entries=0)
    cache.ids(["a"])
    cache.ids(["a"])
    assert encode.calls == [["a"], ["a"]] and not cache.entries


def test_rows_are_padded_on_the_right() -> None:
    batch = token_rows.pad_rows([[5, 6, 7], [5]], pad_id=9)
    assert batch.dtype == np.int64 and batch.tolist() == [[5, 6, 7], [5, 9, 9]]
