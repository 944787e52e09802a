"""The tokenizer model's per-prompt cache of token ids, on its own (no Triton)."""

from __future__ import annotations

from array import array

import numpy as np

from tests.support.triton import load_model_module

token_cache = load_model_module("clip_tokenize", "token_cache")
token_rows = load_model_module("common", "token_rows")
lru = load_model_module("common", "byte_lru")


def lists(rows: list) -> list[list[int]]:  # type: ignore[type-arg]
    return [list(row) for row in rows]


class CountingEncoder:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, texts: list[str]) -> list[list[int]]:
        self.calls.append(list(texts))
        return [[0, *(ord(c) for c in text), 1] for text in texts]


def test_only_texts_not_seen_before_are_encoded_once_each() -> None:
    encode = CountingEncoder()
    cache = token_cache.TokenCache(encode, max_bytes=10**6)
    first = lists(cache.ids(["ab", "c", "ab"]))
    assert first == [[0, 97, 98, 1], [0, 99, 1], [0, 97, 98, 1]]
    assert encode.calls == [["ab", "c"]]
    assert lists(cache.ids(["c", "d", "ab"])) == [[0, 99, 1], [0, 100, 1], [0, 97, 98, 1]]
    assert encode.calls[-1] == ["d"]


def test_the_cache_is_bounded_and_evicts_the_least_recently_used() -> None:
    encode = CountingEncoder()
    two = 2 * lru.entry_bytes("a", array("i", [0, 97, 1]))  # one-letter prompts all take the same
    cache = token_cache.TokenCache(encode, max_bytes=two)
    cache.ids(["a", "b"])
    cache.ids(["a"])  # "b" is now the oldest
    cache.ids(["c"])
    assert cache.entries.keys() == ["a", "c"] and cache.entries.bytes == two
    assert lists(cache.ids(["x", "y", "z"])) == [[0, 120, 1], [0, 121, 1], [0, 122, 1]]  # more than fit: answered
    assert len(cache.entries) == 2


def test_a_long_prompt_is_charged_its_real_size() -> None:
    """A 1,000-character non-ASCII prompt takes about 4 KB as a key: it evicts many short ones."""
    cache = token_cache.TokenCache(CountingEncoder(), max_bytes=10 * lru.entry_bytes("a", array("i", [0, 97, 1])))
    cache.ids([chr(ord("a") + index) for index in range(10)])
    assert len(cache.entries) == 10
    cache.ids(["\u00e9" * 200])  # Latin-1: 1 byte per character; fits with room for some short ones
    assert "\u00e9" * 200 in cache.entries and len(cache.entries) < 10
    cache.ids(["\U0001f600" * 1000])  # 4 bytes per character: larger than the whole cap, not kept
    assert "\U0001f600" * 1000 not in cache.entries and cache.entries.bytes <= cache.entries.max_bytes


def test_a_zero_sized_cache_encodes_every_time() -> None:
    encode = CountingEncoder()
    cache = token_cache.TokenCache(encode, max_bytes=0)
    cache.ids(["a"])
    cache.ids(["a"])
    assert encode.calls == [["a"], ["a"]] and not len(cache.entries)


def test_rows_are_padded_on_the_right() -> None:
    batch = token_rows.pad_rows([[5, 6, 7], [5]], pad_id=9)
    assert batch.dtype == np.int64 and batch.tolist() == [[5, 6, 7], [5, 9, 9]]
