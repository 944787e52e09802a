"""A bounded LRU of text embeddings keyed by their token ids.

Label sets change one label at a time (a new class, a reordered list), so caching whole responses
(Triton's response cache) misses where a per-label cache hits: a warm set of 1,000 labels plus
one new label costs one text encode, not 1,001. Keys are the token ids up to and including the
first end token, so padding never splits a key. Bounded in bytes by what each entry really takes
(byte_lru.py). Pure numpy: unit-tested without Triton.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from byte_lru import ByteBoundedLru
from numpy.typing import NDArray
from token_rows import pad_rows


def row_key(ids: NDArray[Any], eos_token_id: int) -> bytes:
    """The cache key of one padded row of token ids."""
    ends = np.flatnonzero(ids == eos_token_id)
    length = int(ends[0]) + 1 if len(ends) else len(ids)
    return np.ascontiguousarray(ids[:length], dtype=np.int64).tobytes()


def pad(keys: list[bytes], pad_id: int) -> NDArray[np.int64]:
    """Rows of token ids (as keys) back to a [len(keys), longest] int64 batch."""
    return pad_rows([np.frombuffer(key, dtype=np.int64) for key in keys], pad_id)


class LabelCache:
    def __init__(self, max_bytes: int) -> None:
        self.entries: ByteBoundedLru[bytes, NDArray[Any]] = ByteBoundedLru(max_bytes)

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(self, keys: list[bytes]) -> tuple[dict[bytes, NDArray[Any]], list[bytes]]:
        """Cached vectors for the keys that have one, and the distinct missing keys in first-seen order."""
        found: dict[bytes, NDArray[Any]] = {}
        missing: dict[bytes, None] = {}  # ordered, and O(1) to test: a cold 1,000-label set stays linear
        for key in keys:
            if key in found or key in missing:
                continue
            vector = self.entries.get(key)
            if vector is None:
                missing[key] = None
            else:
                found[key] = vector
        return found, list(missing)

    def store(self, keys: list[bytes], vectors: NDArray[Any]) -> None:
        for key, vector in zip(keys, vectors, strict=True):
            self.entries.put(key, vector.copy())  # a copy owns its data: no view keeps the batch alive
