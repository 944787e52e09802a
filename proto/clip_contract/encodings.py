"""Embedding encodings: how a unit-norm float32 vector travels when a caller asks for less than
4 bytes per dimension. The gateway encodes with these functions, the client decodes with them, and
docs/embedding-encodings.md states each one's error against float32 (measured by
tests/test_embedding_encodings.py).

- float32: the vector itself (gRPC `vector`, HTTP JSON numbers or base64 of little-endian float32).
- float16: IEEE half precision, little-endian, 2 bytes per dimension.
- int8: symmetric, one scale per vector: q = round(v * 127 / max|v|), and `scale` = max|v| / 127,
  so v ~ q * scale with an error of at most scale / 2 per dimension; 1 byte per dimension.
- binary: the sign bits, bit i set when v[i] > 0, packed 8 to a byte with the first dimension in
  the highest bit (numpy.packbits); 1 bit per dimension. Hamming distance between two such codes
  estimates the angle between the vectors (the fraction of differing bits ~ angle / pi).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class Encoding:
    name: str  # as the HTTP API's encoding_format and the client's `encoding` take it
    proto_value: int  # clip.v1.EmbeddingEncoding
    dtype: str  # of the decoded array a client hands back: int8 keeps its codes, binary its bytes

    def bytes_per_vector(self, dimension: int) -> int:
        if self.name == "binary":
            return (dimension + 7) // 8
        return dimension * np.dtype(self.dtype).itemsize


FLOAT32 = Encoding("float32", 1, "<f4")
FLOAT16 = Encoding("float16", 2, "<f2")
INT8 = Encoding("int8", 3, "i1")
BINARY = Encoding("binary", 4, "u1")
ENCODINGS = (FLOAT32, FLOAT16, INT8, BINARY)
BY_NAME = {encoding.name: encoding for encoding in ENCODINGS}
BY_PROTO_VALUE = {encoding.proto_value: encoding for encoding in ENCODINGS}
INT8_LEVELS = 127  # symmetric: -127..127, so 0 is exact and the range is the same both ways


def encode(vectors: NDArray[np.float32], encoding: Encoding) -> tuple[list[bytes], NDArray[np.float32]]:
    """[n, d] float32 -> n byte strings, and one scale per vector (1.0 unless int8)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    scales = np.ones(len(vectors), dtype=np.float32)
    if encoding is BINARY:
        codes: NDArray[np.generic] = np.packbits(vectors > 0, axis=1)
    elif encoding is INT8:
        largest = np.abs(vectors).max(axis=1) if vectors.size else scales
        scales = np.where(largest > 0, largest / INT8_LEVELS, 1.0).astype(np.float32)
        codes = np.clip(np.rint(vectors / scales[:, None]), -INT8_LEVELS, INT8_LEVELS).astype(np.int8)
    else:
        codes = vectors.astype(encoding.dtype)
    return [row.tobytes() for row in codes], scales


def codes(data: bytes, encoding: Encoding, dimension: int) -> NDArray[np.generic]:
    """One vector's bytes as the encoding's array: float32/float16 values, int8 codes, or binary's
    packed bytes; ValueError when the length is not the encoding's for `dimension`."""
    expected = encoding.bytes_per_vector(dimension)
    if len(data) != expected:
        raise ValueError(f"{encoding.name} data of {len(data)} bytes, expected {expected} for dimension {dimension}")
    return np.frombuffer(data, dtype=encoding.dtype)


def decode(data: bytes, encoding: Encoding, dimension: int, scale: float = 1.0) -> NDArray[np.float32]:
    """One vector back to float32: the value for float16, q * scale for int8, +-1/sqrt(d) per sign
    bit for binary (a unit vector pointing the way the bits say)."""
    found = codes(data, encoding, dimension)
    if encoding is BINARY:
        bits = np.unpackbits(found.astype(np.uint8))[:dimension]
        return np.where(bits > 0, 1.0, -1.0).astype(np.float32) / np.float32(np.sqrt(dimension))
    if encoding is INT8:
        return (found.astype(np.float32) * np.float32(scale)).astype(np.float32)
    return found.astype(np.float32)
