"""Each label set's label embeddings as one matrix, kept in the gateway, so that a Classify by label
set id sends Triton only its images (clip_embed_image) and is scored here with
clip_contract.similarity, the arithmetic of Triton's own similarity step: no label strings go to
Triton, nothing is tokenized or looked up per label, no similarity step runs.

A matrix is computed by the first call that needs it (the set's prompts through clip_embed_text,
which the text encoder's per-label cache serves where it can), kept by set id and templates (the id
is a digest of the set's content, so one matrix serves every key holding that set; holding the set
is still checked per key) in an LRU bounded by bytes, and computed again after an eviction or a
restart.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from numpy.typing import NDArray

Key = tuple[str, tuple[str, ...]]  # set id, the templates in force


class LabelMatrices:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes  # 0: none kept (each call computes its own)
        self.bytes = 0
        self._matrices: OrderedDict[Key, NDArray[Any]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._matrices)

    def get(self, key: Key) -> NDArray[Any] | None:
        found = self._matrices.get(key)
        if found is not None:
            self._matrices.move_to_end(key)
        return found

    def put(self, key: Key, matrix: NDArray[Any]) -> None:
        if matrix.nbytes > self.max_bytes:
            return
        old = self._matrices.pop(key, None)
        if old is not None:
            self.bytes -= old.nbytes
        self._matrices[key] = matrix
        self.bytes += matrix.nbytes
        while self.bytes > self.max_bytes:
            _, evicted = self._matrices.popitem(last=False)
            self.bytes -= evicted.nbytes
