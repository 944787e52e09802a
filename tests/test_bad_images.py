"""Bad bytes through the served ensembles: each bad image comes back as data (a google.rpc code
and a message naming the problem) beside the usable images' results, in one request, and the
server keeps serving."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from PIL import Image
from tritonclient.utils import InferenceServerException

from tests.support import images
from tests.support.infer import bytes_input, embed_images, embed_images_with_outcomes

GOOD = images.SMALL_JPEG
PNG = images.encode(Image.new("RGB", (64, 64), (0, 128, 255)), "PNG")
INVALID_ARGUMENT = 3


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (b"", "empty image"),
        (b"\x00\x01\x02garbage bytes", "not an image in an accepted format"),
        (PNG[: len(PNG) // 2], "corrupt or truncated PNG"),
        (GOOD[:300], "corrupt or truncated JPEG"),
        (b"%PDF-1.7\n", "PDF is not an accepted image format"),
    ],
)
def test_a_bad_image_is_reported_as_data_beside_the_good_ones(
    tiny_client: grpcclient.InferenceServerClient, bad: bytes, message: str
) -> None:
    embeds, codes, messages = embed_images_with_outcomes(tiny_client, [GOOD, bad, GOOD])
    assert embeds.shape[0] == 2  # the two usable images, in order
    assert codes == [0, INVALID_ARGUMENT, 0]
    assert messages[0] == messages[2] == "" and message in messages[1] and "Traceback" not in messages[1]
    alone = embed_images(tiny_client, [GOOD])
    assert np.abs(embeds - alone).max() < 1e-6


def test_classify_reports_bad_images_the_same_way(tiny_client: grpcclient.InferenceServerClient) -> None:
    inputs = [
        bytes_input("IMAGE", [b"junk", GOOD]),
        bytes_input("TEXT", [b"cat", b"dog"]),
        bytes_input("TEMPLATES", [b"{}"]),
    ]
    result = tiny_client.infer("clip_classify", inputs)
    assert result.as_numpy("LOGITS").shape == (1, 2)
    assert result.as_numpy("IMAGE_ERROR_CODES").tolist() == [INVALID_ARGUMENT, 0]


def test_no_usable_image_gives_a_placeholder_row_and_every_reason(
    tiny_client: grpcclient.InferenceServerClient,
) -> None:
    embeds, codes, messages = embed_images_with_outcomes(tiny_client, [b"", GOOD[:50]])
    assert embeds.shape[0] == 1  # the encoder takes no empty batch: one row to ignore
    assert codes == [INVALID_ARGUMENT, INVALID_ARGUMENT] and all(messages)


def test_empty_request_is_refused(tiny_client: grpcclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException, match="IMAGE is empty"):
        embed_images(tiny_client, [])
    assert embed_images(tiny_client, [GOOD]).shape[0] == 1
