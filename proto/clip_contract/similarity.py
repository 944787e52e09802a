"""Zero-shot scores from embeddings: CLIP's prompt ensemble and the scaled cosine, in float32 with
numpy. The Triton similarity step (clip_similarity) and the gateway (a Classify by label set id,
whose label matrix it keeps) compute with these same functions, so both give the same numbers.

- `prompt_ensemble`: [L*T, D] prompt embeddings, T templates per label, label-major (the order
  clip_tokenize expands them in: every template of label 0, then of label 1, ...) -> [L, D] unit
  label embeddings: each prompt normalised, the label's prompts averaged, the mean renormalised.
- `scores`: LOGITS = scale * cosine(images, labels) and PROBS = softmax over the labels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray


def l2_normalize(vectors: NDArray[Any]) -> NDArray[Any]:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    unit: NDArray[Any] = vectors / np.maximum(norms, np.finfo(np.float32).tiny)
    return unit


def prompt_ensemble(texts: NDArray[Any], per_label: int) -> NDArray[Any]:
    """[L*T, D] prompt embeddings -> [L, D] unit label embeddings (CLIP's prompt ensembling)."""
    grouped = l2_normalize(texts).reshape(len(texts) // per_label, per_label, texts.shape[-1])
    return l2_normalize(grouped.mean(axis=1))


def softmax(logits: NDArray[Any]) -> NDArray[Any]:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probabilities: NDArray[Any] = shifted / shifted.sum(axis=-1, keepdims=True)
    return probabilities


def prompts(labels: list[str], templates: list[str]) -> list[str]:
    """The prompt texts of `labels` under `templates`, label-major: clip_tokenize expands a
    Classify's labels with it, and the gateway a label set's."""
    return [template.replace("{}", label) for label in labels for template in templates]


def scores(
    images: NDArray[Any], labels: NDArray[Any], scale: np.float32
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """(LOGITS, PROBS) [images, labels] of image embeddings against unit label embeddings."""
    logits = (scale * (l2_normalize(images.astype(np.float32)) @ labels.T)).astype(np.float32)
    return logits, softmax(logits).astype(np.float32)
