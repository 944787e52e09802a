"""A least-recently-used cache of token ids per prompt text, so a label set sent again is not
tokenized again.

Tokenizing a 1,000-label set again on every Classify that sends it was the largest per-request cost
of a warm 1,000-label Classify outside the image tower (docs/benchmarks.md). Keyed by the
exact prompt string; values are the unpadded ids (truncation included) as compact int32 arrays, so
padding is per request. Bounded in bytes by what each entry really takes (byte_lru.py).
Pure Python: unit-tested without Triton.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Sequence

from byte_lru import ByteBoundedLru

Encode = Callable[[list[str]], list[list[int]]]


class TokenCache:
    def __init__(self, encode: Encode, max_bytes: int) -> None:
        self._encode = encode  # unpadded ids per text, truncated to the context
        self.entries: ByteBoundedLru[str, array[int]] = ByteBoundedLru(max_bytes)

    def ids(self, texts: Sequence[str]) -> list[array[int]]:
        """Token ids of every text, in order; only texts not cached are encoded (once each)."""
        known: dict[str, array[int]] = {}
        missing: list[str] = []
        for text in texts:
            if text in known:
                continue
            cached = self.entries.get(text)
            if cached is None:
                known[text] = array("i")  # placeholder: filled below, and marks the text as seen
                missing.append(text)
            else:
                known[text] = cached
        if missing:
            for text, ids in zip(missing, self._encode(missing), strict=True):
                known[text] = array("i", ids)  # CLIP's vocabulary fits int32: 4 bytes per id
                self.entries.put(text, known[text])
        return [known[text] for text in texts]
