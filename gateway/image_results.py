"""One bad image never fails its neighbours, and costs nothing more than its own decode.

Triton's preprocessing answers every image: the usable ones become rows of the result (in request
order), the others come back as data, a google.rpc code and a message per image
(IMAGE_ERROR_CODES, IMAGE_ERROR_MESSAGES). An `ImageBatch` is what a request sends: the images
that have bytes (an image URL that gave nothing is not sent at all); its `rows` turn Triton's
answer into each request image's row of the result, or its `ItemError`.

A large batch goes to Triton in parts (`parts`, at most --triton-call-pixels decoded pixels each,
one Triton call after another): Triton 2.51 does not pass an ensemble's cancellation on to its
steps, so a gateway that dies (or a caller that leaves) leaves at most one part decoding inside
Triton, not the whole request. `ImageOutcomes.joined` puts the parts' answers back together.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from google.rpc import code_pb2

from gateway.calls import ItemError
from gateway.triton_adapter import ImageOutcomes


@dataclass(frozen=True)
class ImageBatch:
    count: int  # images in the request
    sent: list[int]  # the request index of each image sent, in the order sent
    data: list[bytes]  # the bytes sent
    known: dict[int, ItemError]  # request index -> why it was not sent
    pixels: list[int]  # the decoded pixels each image sent declares (0: not known)

    @classmethod
    def of(cls, images: Sequence[bytes], failed: Mapping[int, str], pixels: Sequence[int]) -> ImageBatch:
        """The images to send; `failed`: those already known to have no usable bytes; `pixels`:
        each request image's declared pixels."""
        known = {index: ItemError(code_pb2.INVALID_ARGUMENT, message) for index, message in failed.items()}
        sent = [index for index in range(len(images)) if index not in known]
        return cls(len(images), sent, [images[index] for index in sent], known, [pixels[index] for index in sent])

    def parts(self, max_pixels: int) -> Iterator[list[bytes]]:
        """The images sent, in order, in runs of at most `max_pixels` declared pixels (an image
        larger than that on its own); one run when `max_pixels` is 0."""
        start, total = 0, 0
        for position, pixels in enumerate(self.pixels):
            if max_pixels and position > start and total + pixels > max_pixels:
                yield self.data[start:position]
                start, total = position, 0
            total += pixels
        if start < len(self.data):
            yield self.data[start:]

    def rows(self, outcomes: ImageOutcomes | None) -> list[int | ItemError]:
        """For each request image, its row in Triton's result or why it has none; `outcomes` is
        Triton's answer for the images sent (None when nothing was sent)."""
        answers: dict[int, int | ItemError] = dict(self.known)
        if outcomes is not None:
            rows = 0
            for index, code, message in zip(self.sent, outcomes.codes, outcomes.messages, strict=True):
                if int(code) == 0:
                    answers[index] = rows
                    rows += 1
                else:
                    text = message.decode(errors="replace") if isinstance(message, bytes) else str(message)
                    answers[index] = ItemError(int(code), text)
        return [answers[index] for index in range(self.count)]
