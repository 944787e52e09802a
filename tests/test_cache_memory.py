"""The text caches stay under their byte caps with the largest entries a request may create: the
longest prompt the gateway admits (a template and a label at the character limit, every character
a 4-byte code point) and the longest token row (the full context) with a ViT-B/16 embedding.
Memory is measured with tracemalloc, not taken from the caches' own accounting."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable

import numpy as np

from gateway.config import Limits
from tests.support.triton import load_model_module

token_cache = load_model_module("clip_tokenize", "token_cache")
label_cache = load_model_module("clip_text_encoder", "label_cache")

CAP = 4 * 1024 * 1024
CONTEXT = 77  # CLIP's context: no token row is longer
DIMENSION = 512  # ViT-B/16's embedding
FILL = 3  # entries worth three caps are offered: the cap, not the supply, must bound the memory


def longest_prompt(serial: int) -> str:
    """A template and a label each at the character limit, made of emoji (4 bytes per character in
    a Python string), distinct per serial."""
    limit = Limits().max_label_chars
    label = f"{serial:08d}" + "\U0001f600" * (limit - 8)
    template = "\U0001f431" * (limit - 2) + "{}"
    return template.replace("{}", label)


def held_after(fill: Callable[[], object]) -> tuple[int, object]:
    """Bytes still allocated after `fill` returns (what the object it returns holds)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = fill()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before, kept
    finally:
        tracemalloc.stop()


def test_token_cache_holds_at_most_its_cap_of_the_longest_prompts() -> None:
    def fill() -> object:
        cache = token_cache.TokenCache(lambda texts: [list(range(CONTEXT)) for _ in texts], CAP)
        per_entry = 4 * 2 * Limits().max_label_chars
        for serial in range(FILL * CAP // per_entry):
            cache.ids([longest_prompt(serial)])
        return cache

    held, cache = held_after(fill)
    entries = cache.entries  # type: ignore[attr-defined]
    print(f"token cache: {len(entries)} longest prompts, {held / 2**20:.2f} MiB held, cap {CAP / 2**20:.0f} MiB")
    assert held <= CAP
    assert held >= 0.8 * CAP  # and the accounting is not so cautious that the cache wastes its room
    assert entries.bytes <= CAP


def test_label_cache_holds_at_most_its_cap_of_the_longest_rows() -> None:
    def fill() -> object:
        cache = label_cache.LabelCache(CAP)
        per_entry = DIMENSION * 4 + CONTEXT * 8
        for serial in range(FILL * CAP // per_entry):
            key = np.arange(serial, serial + CONTEXT, dtype=np.int64).tobytes()
            cache.store([key], np.ones((1, DIMENSION), dtype=np.float32))
        return cache

    held, cache = held_after(fill)
    entries = cache.entries  # type: ignore[attr-defined]
    print(f"label cache: {len(entries)} longest rows, {held / 2**20:.2f} MiB held, cap {CAP / 2**20:.0f} MiB")
    assert held <= CAP
    assert held >= 0.8 * CAP
    assert entries.bytes <= CAP
