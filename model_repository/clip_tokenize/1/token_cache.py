"""A bounded LRU of token ids per prompt text, so a label set sent again is not tokenized again.

Tokenizing a 1,000-label set again on every Classify that sends it was the largest per-request cost
of a warm 1,000-label Classify outside the image tower (docs/benchmarks.md). Keyed by the
exact prompt string; values are the unpadded ids (truncation included), so padding is per request.
Pure Python: unit-tested without Triton.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

Encode = Callable[[list[str]], list[list[int]]]


class TokenCache:
    def __init__(self, encode: Encode, max_entries: int) -> None:
        self._encode = encode  # unpadded ids per text, truncated to the context
        self.max_entries = max_entries
        self.entries: OrderedDict[str, list[int]] = OrderedDict()

    def ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of every text, in order; only texts not cached are encoded (once each)."""
        known: dict[str, list[int]] = {}
        missing: list[str] = []
        for text in texts:
            if text in known:
                continue
            cached = self.entries.get(text)
            if cached is None:
                known[text] = []  # placeholder: filled below, and marks the text as seen
                missing.append(text)
            else:
                self.entries.move_to_end(text)
                known[text] = cached
        if missing:
            for text, ids in zip(missing, self._encode(missing), strict=True):
                known[text] = ids
                if self.max_entries:
                    self.entries[text] = ids
            while len(self.entries) > self.max_entries:
                self.entries.popitem(last=False)
        return [known[text] for text in texts]
