"""Bad bytes through the served ensembles: a clear INVALID_ARG naming the problem, and the
server keeps serving the next good request."""

from __future__ import annotations

import pytest
import tritonclient.grpc as grpcclient
from PIL import Image
from tritonclient.utils import InferenceServerException

from tests.support import images
from tests.support.infer import classify, embed_images

GOOD = images.SMALL_JPEG
PNG = images.encode(Image.new("RGB", (64, 64), (0, 128, 255)), "PNG")


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (b"", r"IMAGE\[1\]: empty image"),
        (b"\x00\x01\x02garbage bytes", r"IMAGE\[1\]: not an image in an accepted format"),
        (PNG[: len(PNG) // 2], r"IMAGE\[1\]: corrupt or truncated PNG"),
        (GOOD[:300], r"IMAGE\[1\]: corrupt or truncated JPEG"),
        (b"%PDF-1.7\n", r"IMAGE\[1\]: PDF is not an accepted image format"),
    ],
)
def test_bad_image_gets_invalid_arg_naming_it(
    tiny_client: grpcclient.InferenceServerClient, bad: bytes, message: str
) -> None:
    for call in (lambda: embed_images(tiny_client, [GOOD, bad]), lambda: classify(tiny_client, [GOOD, bad], ["x"])):
        with pytest.raises(InferenceServerException, match=message) as caught:
            call()
        assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "Traceback" not in str(caught.value)
    assert embed_images(tiny_client, [GOOD]).shape[0] == 1


def test_empty_request_is_refused(tiny_client: grpcclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException, match="IMAGE is empty"):
        embed_images(tiny_client, [])
    assert embed_images(tiny_client, [GOOD]).shape[0] == 1
