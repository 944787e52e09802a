"""The gateway's pixel pre-check reads image headers from untrusted bytes: only with the parsers of
the formats Triton's preprocessing accepts, and never on the event loop that serves every call."""

from __future__ import annotations

import asyncio
import io
import threading

import pytest
from PIL import Image, PsdImagePlugin, TiffImagePlugin

from gateway import validation
from gateway.calls import ImageInput
from gateway.config import Limits
from gateway.image_sources import ImageSources
from tests.support import images

LIMITS = Limits(max_images=8, max_image_pixels=1_000_000)


def huge_tiff() -> bytes:
    """A TIFF whose header declares 4,000 x 4,000 pixels (the pixels themselves are a tiny strip)."""
    buffer = io.BytesIO()
    Image.new("L", (4000, 4000)).save(buffer, "TIFF", compression="tiff_deflate")
    return buffer.getvalue()


def test_refused_formats_are_never_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []

    def spy(plugin: type) -> None:
        original = plugin._open  # type: ignore[attr-defined]

        def record(self: Image.Image) -> None:
            opened.append(plugin.__name__)
            original(self)

        monkeypatch.setattr(plugin, "_open", record)

    spy(TiffImagePlugin.TiffImageFile)
    spy(PsdImagePlugin.PsdImageFile)
    # Over the pixel limit if parsed; not parsed, so no size problem here: Triton names the format.
    assert validation.image_size_problem(huge_tiff(), LIMITS)[0] is None
    assert validation.image_size_problem(b"8BPS\x00\x01" + bytes(40), LIMITS)[0] is None
    assert opened == []
    # the accepted formats are still read: an oversized PNG is refused by its header
    big_png = images.encode(Image.new("RGB", (1001, 1000)), "PNG")
    assert validation.image_size_problem(big_png, LIMITS) == ("1001000 pixels, more than the limit of 1000000", 1001000)


def test_headers_are_read_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[int] = []
    original = validation._declared_pixels

    def record(data: bytes) -> int | None:
        threads.append(threading.get_ident())
        return original(data)

    monkeypatch.setattr(validation, "_declared_pixels", record)

    async def scenario() -> int:
        request = [ImageInput(data=png) for png in images.photo_pngs()[:3]]
        gathered = await ImageSources(None).check(request, LIMITS, required=True)
        assert len(gathered.data) == 3
        return threading.get_ident()

    loop_thread = asyncio.run(scenario())
    assert len(threads) == 3
    assert loop_thread not in threads
