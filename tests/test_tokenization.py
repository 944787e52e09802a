"""The committed tokenizer data and the served clip_tokenize model against CLIPTokenizer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from transformers import CLIPTokenizer

from export.build_tokenizer_data import CHECK_IDS, CHECK_TEXT, TOKENIZER_DIR, VOCAB_SIZE
from tests.support.infer import tokenize
from tests.support.reference import Reference

CORPUS = [
    "a photo of a cat",
    "A PHOTO OF A CAT!!!",
    "",
    " ",
    "   leading and trailing   whitespace\t\n",
    "naïve café résumé — déjà vu",
    "東京タワーの写真",
    "фотография собаки",
    "🐱🐶 emoji 👍🏽 and flags 🇫🇷",
    "it's a dog's life, isn't it?",
    "numbers 1234567890 and 3.14159",
    "punctuation: ;;; ... !!! ??? @#$%^&*()",
    "e\u0301 combining accent and ﬁ ligature",
    "zero\u200bwidth space",
    "<|startoftext|> special tokens in text <|endoftext|>",
    "word " * 100,  # far over the 77-token context: truncated with the end token kept
]


def test_committed_tokenizer_data_is_the_released_vocabulary() -> None:
    vocab = json.loads((TOKENIZER_DIR / "vocab.json").read_text(encoding="utf-8"))
    assert len(vocab) == VOCAB_SIZE
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    assert CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR))(CHECK_TEXT)["input_ids"] == CHECK_IDS


def test_served_tokens_are_clip_tokenizers(
    tiny_client: grpcclient.InferenceServerClient, tiny_reference: Reference
) -> None:
    served = tokenize(tiny_client, [text.encode() for text in CORPUS])
    expected = tiny_reference.input_ids(CORPUS)
    assert served.shape == (len(CORPUS), max(len(ids) for ids in expected))
    for row, ids in zip(served, expected, strict=True):
        assert row[: len(ids)].tolist() == ids
        assert set(row[len(ids) :].tolist()) <= {49407}  # padded with the end token


def test_over_long_text_keeps_the_end_token(tiny_client: grpcclient.InferenceServerClient) -> None:
    ids = tokenize(tiny_client, [("word " * 100).encode()])[0]
    assert len(ids) == 77 and ids[0] == 49406 and ids[-1] == 49407


def test_invalid_utf8_is_refused_by_index(tiny_client: grpcclient.InferenceServerClient) -> None:
    with pytest.raises(Exception, match=r"TEXT\[1\] is not valid UTF-8"):
        tokenize(tiny_client, [b"fine", b"\xff\xfe broken"])
    assert tokenize(tiny_client, [b"fine"]).shape == (1, 3)


def test_token_ids_are_int64(tiny_client: grpcclient.InferenceServerClient) -> None:
    assert tokenize(tiny_client, [b"a cat"]).dtype == np.int64
