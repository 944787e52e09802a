"""Label sets registered once and named by id in Classify, so a caller tagging a photo library
against 1,000 labels does not send (and the gateway does not parse and check) them on every call.

The id is a digest of the labels and templates: the same set has the same id on every gateway
replica and after a restart, so a caller told NOT_FOUND (the set evicted, or registered on another
replica) registers it again and retries without renaming anything; the Python client does that by
itself. Sets are kept per API key (one tenant cannot probe or use another's) in one store bounded
by the bytes its strings take, least recently used evicted first. The sets' label embeddings are
kept beside them, as one matrix per set (gateway.label_matrices), so a Classify by id sends Triton
its images only.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections import OrderedDict
from dataclasses import dataclass

import grpc

from gateway.calls import Field
from gateway.errors import RequestError, Violation

# What the OrderedDict, the key tuple and the LabelSet cost per set beside the strings (rounded up).
SET_OVERHEAD_BYTES = 512


@dataclass(frozen=True)
class LabelSet:
    labels: tuple[str, ...]
    templates: tuple[str, ...]

    @property
    def id(self) -> str:
        text = json.dumps([self.labels, self.templates], ensure_ascii=False, separators=(",", ":"))
        return "ls-" + hashlib.sha256(text.encode()).hexdigest()[:32]

    @property
    def bytes(self) -> int:
        strings = (*self.labels, *self.templates)
        return SET_OVERHEAD_BYTES + sum(sys.getsizeof(text) + 8 for text in strings)  # 8: its tuple slot


def unknown(label_set_id: str) -> RequestError:
    return RequestError(
        grpc.StatusCode.NOT_FOUND,
        [
            Violation(
                Field("label_set_id"),
                f"no label set {label_set_id[:64]!r} here (evicted, never registered with this key, or "
                "registered on another server): register it again with RegisterLabelSet; its id stays the same",
            )
        ],
    )


class LabelSets:
    """`max_bytes` for every key's sets together (0: none kept); while other keys hold sets too, one
    key past `key_share` of it evicts its own least recently used sets first, so a key that
    registers set after set cannot flush the others' out."""

    def __init__(self, max_bytes: int, key_share: float = 0.5) -> None:
        self.max_bytes = max_bytes
        self.key_share = key_share
        self.bytes = 0
        self._sets: OrderedDict[tuple[str, str], LabelSet] = OrderedDict()  # (tenant, id) -> set
        self._tenant_bytes: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._sets)

    def register(self, tenant: str, label_set: LabelSet) -> str:
        """Keep `label_set` for `tenant` (refreshing it when held); returns its id. A set larger
        than the whole store is refused, naming the flag."""
        if label_set.bytes > self.max_bytes:
            raise RequestError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                [
                    Violation(
                        Field("labels"),
                        f"the set takes {label_set.bytes} bytes, more than the {self.max_bytes} this server "
                        "keeps for all label sets (--max-label-set-bytes)",
                    )
                ],
            )
        key = (tenant, label_set.id)
        self._drop(key)
        self._sets[key] = label_set
        self._count(tenant, label_set.bytes)
        while self._tenant_bytes[tenant] > self.max_bytes * self.key_share and len(self._tenant_bytes) > 1:
            self._drop(next(held for held in self._sets if held[0] == tenant))
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self._sets)))
        return label_set.id

    def _drop(self, key: tuple[str, str]) -> None:
        held = self._sets.pop(key, None)
        if held is not None:
            self._count(key[0], -held.bytes)

    def _count(self, tenant: str, amount: int) -> None:
        self.bytes += amount
        left = self._tenant_bytes.get(tenant, 0) + amount
        if left:
            self._tenant_bytes[tenant] = left
        else:
            del self._tenant_bytes[tenant]

    def get(self, tenant: str, label_set_id: str) -> LabelSet:
        """The set, now the most recently used; NOT_FOUND (a RequestError) when not held."""
        found = self._sets.get((tenant, label_set_id))
        if found is None:
            raise unknown(label_set_id)
        self._sets.move_to_end((tenant, label_set_id))
        return found
