"""A least-recently-used map bounded by the bytes its entries take, measured entry by entry.

Both text caches (token ids per prompt, embeddings per label) hold entries whose size depends on
what callers send: a 1,000-character non-ASCII prompt is a 4 KB key. Bounding them by entry count
with a guessed entry size under-counted long labels; here each entry is charged what it really
takes: sys.getsizeof of its key and its value (strings, bytes, array.array and numpy arrays that
own their data all report their buffers) plus SLOT_BYTES for the map's own bookkeeping.
tests/test_cache_memory.py fills the caches with the longest prompts a request may hold and checks
with tracemalloc that the memory they hold stays under the cap. Pure Python: no Triton needed.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

# The OrderedDict's cost per entry beside key and value (hash slot, entry, linked-list node, and
# the slots evicted entries leave until the table is rebuilt): tracemalloc measured up to 182
# bytes per live entry under LRU churn at 100 to 100,000 entries (CPython 3.11); rounded up.
SLOT_BYTES = 192

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def _size(obj: object) -> int:
    # numpy allocates an array's shape and strides (8 bytes each per dimension) apart from the
    # object and data that sys.getsizeof reports.
    return sys.getsizeof(obj) + 16 * int(getattr(obj, "ndim", 0))


def entry_bytes(key: object, value: object) -> int:
    return _size(key) + _size(value) + SLOT_BYTES


class ByteBoundedLru(Generic[K, V]):
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(0, max_bytes)
        self.bytes = 0  # what the entries held now take, by entry_bytes
        self._entries: OrderedDict[K, V] = OrderedDict()  # sizes recomputed, not stored: no per-entry tuple

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def keys(self) -> list[K]:
        """Oldest first."""
        return list(self._entries)

    def get(self, key: K) -> V | None:
        """The value, now the most recently used; None when absent."""
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
        return found

    def put(self, key: K, value: V) -> None:
        """Store (or refresh) an entry, evicting the least recently used until the total fits.
        An entry larger than the whole cap is not stored."""
        size = entry_bytes(key, value)
        if size > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= entry_bytes(key, old)
        self._entries[key] = value
        self.bytes += size
        while self.bytes > self.max_bytes:
            evicted = self._entries.popitem(last=False)
            self.bytes -= entry_bytes(*evicted)
