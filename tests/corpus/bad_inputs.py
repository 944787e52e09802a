"""The bad and odd inputs corpus: every case with the answer the service documents for it.

    python -m tests.corpus.bad_inputs [--out DIR]     # writes each payload and index.json

Image cases are sent as the second image of a Classify next to a good one: `item` cases must
come back with that image's own status (the neighbour answered), `call` cases end the whole call
(size limits). Request cases are whole requests. Answers: OK (after the documented
normalisation), INVALID_ARGUMENT or RESOURCE_EXHAUSTED, with a message naming the problem.
The limits they assume are LIMITS below.
"""

from __future__ import annotations

import argparse
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from gateway.config import Limits
from tests.support.images import SMALL_JPEG, encode
from tests.support.images import gradient_photo as photo

MAX_IMAGES = 8
LIMITS = Limits(
    max_images=MAX_IMAGES,
    max_labels=50,
    max_texts=50,
    max_templates=4,
    max_prompts=100,
    max_label_chars=200,
    max_image_bytes=2_000_000,
    max_image_pixels=4_000_000,
    max_request_bytes=6_000_000,
)


@dataclass(frozen=True)
class Case:
    name: str
    expected: str  # "OK", "INVALID_ARGUMENT" or "RESOURCE_EXHAUSTED"
    image: bytes | None = None  # an image case: sent next to a good image
    scope: str = "item"  # image cases: "item" (its own status) or "call" (the call fails)
    message: str = ""  # a part of the error message that names the problem (required unless OK)
    request: dict = field(default_factory=dict)  # type: ignore[type-arg]  # a request case: Classify/Embed fields


GOOD = SMALL_JPEG


def image_cases() -> list[Case]:
    cases = [Case("zero bytes", "INVALID_ARGUMENT", b"", message="empty image")]
    rng = np.random.default_rng(2024)
    for index in range(60):
        cases.append(
            Case(
                f"random bytes {index}",
                "INVALID_ARGUMENT",
                rng.integers(0, 256, int(rng.integers(1, 4000)), dtype=np.uint8).tobytes(),
                message="not an image in an accepted format",
            )
        )
    # Not GIF: random bytes after its header often declare a frame too big to open (a size-limit case).
    signatures = {
        "JPEG": b"\xff\xd8\xff\xe0",
        "PNG": b"\x89PNG\r\n\x1a\n",
        "BMP": b"BM",
        "WEBP": b"RIFF\x00\x10\x00\x00WEBPVP8 ",
    }
    for fmt, signature in signatures.items():
        for index in range(10):
            body = rng.integers(0, 256, int(rng.integers(8, 3000)), dtype=np.uint8).tobytes()
            cases.append(
                Case(
                    f"{fmt} signature then random bytes {index}",
                    "INVALID_ARGUMENT",
                    signature + body,
                    message=f"corrupt or truncated {fmt} image",
                )
            )
    base = photo()
    for fmt, options in (("JPEG", {"quality": 90}), ("PNG", {}), ("GIF", {}), ("WEBP", {"quality": 80}), ("BMP", {})):
        whole = encode(base if fmt != "GIF" else base.convert("P"), fmt, **options)
        count = 15 if fmt in ("JPEG", "PNG") else 10
        for step in range(count):
            cut = max(2, int(len(whole) * (step + 0.5) / (count + 1)))
            cases.append(
                Case(
                    f"truncated {fmt} at {cut} of {len(whole)} bytes",
                    "INVALID_ARGUMENT",
                    whole[:cut],
                    message=f"corrupt or truncated {fmt} image",
                )
            )
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        cases.append(Case(f"JPEG EXIF orientation {orientation}", "OK", encode(base, "JPEG", exif=exif.tobytes())))
    rgba = base.copy()
    rgba.putalpha(128)
    palette = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
    palette.info["transparency"] = 3
    frames = [photo(seed=s).convert("P") for s in range(3)]
    animated_gif = io.BytesIO()
    frames[0].save(animated_gif, "GIF", save_all=True, append_images=frames[1:], duration=50)
    animated_webp = io.BytesIO()
    webp_frames = [photo(seed=s) for s in range(3)]
    webp_frames[0].save(animated_webp, "WEBP", save_all=True, append_images=webp_frames[1:], duration=50)
    grey16 = Image.fromarray(np.asarray(base.convert("L")).astype(np.uint16) * 257)
    cases += [
        Case("RGBA PNG (alpha onto white)", "OK", encode(rgba, "PNG")),
        Case("palette PNG with transparency", "OK", encode(palette, "PNG")),
        Case("LA PNG", "OK", encode(base.convert("LA"), "PNG")),
        Case("1-bit BMP", "OK", encode(base.convert("1"), "BMP")),
        Case("greyscale JPEG", "OK", encode(base.convert("L"), "JPEG")),
        Case("CMYK JPEG", "OK", encode(base.convert("CMYK"), "JPEG")),
        Case("16-bit greyscale PNG (scaled to 8 bits)", "OK", encode(grey16, "PNG")),
        Case("animated GIF (first frame)", "OK", animated_gif.getvalue()),
        Case("animated WebP (first frame)", "OK", animated_webp.getvalue()),
        Case("1x1 pixel PNG", "OK", encode(Image.new("RGB", (1, 1), (255, 0, 0)), "PNG")),
        Case("lossless WebP", "OK", encode(base, "WEBP", lossless=True)),
        Case(
            "1x5000 strip (extreme aspect)",
            "INVALID_ARGUMENT",
            encode(Image.new("L", (5000, 1)), "PNG"),
            message="aspect ratio too extreme",
        ),
        Case(
            "decompression bomb: 10000x10000 PNG of zeros",
            "RESOURCE_EXHAUSTED",
            encode(Image.new("1", (10000, 10000)), "PNG"),
            scope="call",
            message="pixels",
        ),
        Case(
            "huge dimensions, tiny file: 30000x30000 GIF",
            "RESOURCE_EXHAUSTED",
            encode(Image.new("P", (30000, 30000)), "GIF"),
            scope="call",
            message="pixels",
        ),
        Case(
            "bigger than max_image_bytes",
            "RESOURCE_EXHAUSTED",
            GOOD + bytes(LIMITS.max_image_bytes),
            scope="call",
            message="bytes",
        ),
        Case("PDF", "INVALID_ARGUMENT", b"%PDF-1.7\n1 0 obj<<>>endobj\n", message="PDF is not an accepted"),
        Case("PSD", "INVALID_ARGUMENT", b"8BPS\x00\x01" + bytes(64), message="PSD is not an accepted"),
        Case("FITS", "INVALID_ARGUMENT", b"SIMPLE  =                    T" + bytes(80), message="FITS is not"),
        Case(
            "SVG",
            "INVALID_ARGUMENT",
            b"<svg xmlns='http://www.w3.org/2000/svg' width='10'/>",
            message="SVG is not an accepted",
        ),
        Case("TIFF", "INVALID_ARGUMENT", encode(base, "TIFF"), message="TIFF is not an accepted"),
        Case(
            # the gateway's size pre-check never parses a format Triton would refuse: named, not sized
            "TIFF declaring 16 million pixels",
            "INVALID_ARGUMENT",
            encode(Image.new("L", (4000, 4000)), "TIFF", compression="tiff_deflate"),
            message="TIFF is not an accepted",
        ),
        Case("ICO", "INVALID_ARGUMENT", encode(base.resize((32, 32)), "ICO"), message="ICO is not an accepted"),
        Case("TGA", "INVALID_ARGUMENT", encode(base, "TGA"), message="TGA is not an accepted"),
        Case(
            "EPS-looking text",
            "INVALID_ARGUMENT",
            b"%!PS-Adobe-3.0 EPSF-3.0\n",
            message="PostScript/EPS is not an accepted",
        ),
        Case("HTML", "INVALID_ARGUMENT", b"<!doctype html><html></html>", message="HTML is not an accepted"),
    ]
    return cases


def request_cases() -> list[Case]:
    long_label = "x" * (LIMITS.max_label_chars + 1)
    return [
        Case("no images", "INVALID_ARGUMENT", request={"labels": ["cat"]}, message="images"),
        Case("no labels", "INVALID_ARGUMENT", request={"images": [GOOD]}, message="labels"),
        Case("empty label", "INVALID_ARGUMENT", request={"images": [GOOD], "labels": [""]}, message="labels[0]"),
        Case(
            "whitespace label",
            "INVALID_ARGUMENT",
            request={"images": [GOOD], "labels": [" \t\n"]},
            message="labels[0]: empty or only whitespace",
        ),
        Case(
            "label over max_label_chars",
            "INVALID_ARGUMENT",
            request={"images": [GOOD], "labels": [long_label]},
            message=f"labels[0]: {LIMITS.max_label_chars + 1} characters, more than the limit of",
        ),
        Case(
            "NUL in a label",
            "INVALID_ARGUMENT",
            request={"images": [GOOD], "labels": ["ca\x00t"]},
            message="control characters",
        ),
        Case(
            "bell in a label",
            "INVALID_ARGUMENT",
            request={"images": [GOOD], "labels": ["\x07"]},
            message="labels[0]: contains control characters",
        ),
        Case(
            "too many labels",
            "INVALID_ARGUMENT",
            request={"images": [GOOD], "labels": [f"l{i}" for i in range(LIMITS.max_labels + 1)]},
            message=f"labels: more than {LIMITS.max_labels} entries, the limit per request",
        ),
        Case(
            "too many images",
            "INVALID_ARGUMENT",
            request={"images": [GOOD] * (MAX_IMAGES + 1), "labels": ["cat"]},
            message=f"images: more than {MAX_IMAGES} entries, the limit per request",
        ),
        Case(
            "template without {}",
            "INVALID_ARGUMENT",
            request={"images": [GOOD], "labels": ["cat"], "prompt_templates": ["a photo"]},
            message='prompt_templates[0]: must contain "{}" exactly once',
        ),
        Case(
            "template with two {}",
            "INVALID_ARGUMENT",
            request={"images": [GOOD], "labels": ["cat"], "prompt_templates": ["{} and {}"]},
            message='prompt_templates[0]: must contain "{}" exactly once',
        ),
        Case(
            "too many templates",
            "INVALID_ARGUMENT",
            request={"images": [GOOD], "labels": ["cat"], "prompt_templates": ["{}"] * (LIMITS.max_templates + 1)},
            message=f"prompt_templates: more than {LIMITS.max_templates} entries, the limit per request",
        ),
        Case(
            "labels x templates over max_prompts",
            "INVALID_ARGUMENT",
            request={
                "images": [GOOD],
                "labels": [f"l{i}" for i in range(30)],
                "prompt_templates": ["{}", "a {}", "b {}", "c {}"],
            },
            message=f"labels x templates = 120 prompts, more than the limit of {LIMITS.max_prompts}",
        ),
        Case(
            "top_k above the labels",
            "INVALID_ARGUMENT",
            request={"images": [GOOD], "labels": ["a"], "top_k": 2},
            message="top_k: 2 is more than the 1 labels sent",
        ),
        Case(
            "unicode garbage labels",
            "OK",
            request={
                "images": [GOOD],
                "labels": ["🐱‍👤🧪", "Ω≈ç√∫", "ﷺ", "\u202eevil\u202c", "ザ・ワールド", "e\u0301" * 50],
            },
        ),
        Case("zero-width label", "OK", request={"images": [GOOD], "labels": ["\u200b\u200dcat"]}),
        Case(
            "longest labels and templates, 4-byte characters",
            "OK",
            request={
                "images": [GOOD],
                "labels": [f"{i}" + "\U0001f600" * (LIMITS.max_label_chars - 1) for i in range(4)],
                "prompt_templates": ["\U0001f431" * (LIMITS.max_label_chars - 2) + "{}"],
            },
        ),
        Case("duplicate labels", "OK", request={"images": [GOOD], "labels": ["cat", "cat"]}),
        Case(
            "Embed with nothing",
            "INVALID_ARGUMENT",
            request={"method": "Embed"},
            message="send at least one image or one text",
        ),
        Case(
            "Embed text over max_label_chars",
            "INVALID_ARGUMENT",
            request={"method": "Embed", "texts": [long_label]},
            message="texts[0]: 201 characters, more than the limit of 200",
        ),
        Case(
            "Embed too many texts",
            "INVALID_ARGUMENT",
            request={"method": "Embed", "texts": ["t"] * (LIMITS.max_texts + 1)},
            message=f"texts: more than {LIMITS.max_texts} entries, the limit per request",
        ),
        Case(
            "request over max_request_bytes",
            "RESOURCE_EXHAUSTED",
            request={"images": [GOOD + bytes(1_500_000)] * 4, "labels": ["cat"]},
            message="larger than max",
        ),
        Case(
            "invalid UTF-8 on the wire",
            "INVALID_ARGUMENT",
            request={"raw": b"\x12\x03\xff\xfe\xfd"},
            message="not a valid message of this method",
        ),
        Case(
            "garbage on the wire",
            "INVALID_ARGUMENT",
            request={"raw": b"\xff\xff\xff\xff"},
            message="not a valid message of this method",
        ),
    ]


def cases() -> list[Case]:
    return image_cases() + request_cases()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("build/bad-inputs"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    index = []
    for number, case in enumerate(cases()):
        entry = {"name": case.name, "expected": case.expected, "scope": case.scope, "message": case.message}
        if case.image is not None:
            entry["file"] = f"{number:03d}.bin"
            (args.out / entry["file"]).write_bytes(case.image)
        index.append(entry)
    (args.out / "index.json").write_text(json.dumps(index, indent=2))
    print(f"{len(index)} cases in {args.out}")


if __name__ == "__main__":
    main()
