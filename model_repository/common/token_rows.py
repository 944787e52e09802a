"""Rows of token ids of different lengths as one padded int64 batch: shared by the tokenizer and
the text encoder. Pure numpy, so unit tests import it without Triton. (The exporter copies this
folder's modules into every Python model.)"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray


def pad_rows(rows: Sequence[Sequence[int] | NDArray[Any]], pad_id: int) -> NDArray[np.int64]:
    """[len(rows), longest] int64, each row padded with `pad_id` on the right."""
    batch = np.full((len(rows), max((len(row) for row in rows), default=0)), pad_id, dtype=np.int64)
    for index, row in enumerate(rows):
        batch[index, : len(row)] = row
    return batch
