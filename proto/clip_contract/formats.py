"""The image formats clip-serve decodes, and the signatures of formats people send that it refuses.

ACCEPTED are PIL format names: the gateway reads headers with only these parsers and Triton's
preprocessing decodes with only these, so untrusted bytes never meet a PSD, TIFF, EPS or other
plugin. JPEG also opens multi-picture (MPO) files; GIF and WebP use their first frame.
"""

from __future__ import annotations

ACCEPTED = ("JPEG", "PNG", "WEBP", "GIF", "BMP")

# Leading bytes of the formats accepted (to say "truncated JPEG" rather than "unknown") and of
# formats that are refused (to name them in the error).
SIGNATURES = {
    b"\xff\xd8\xff": "JPEG",
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"BM": "BMP",
    b"%PDF": "PDF",
    b"8BPS": "PSD",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"SIMPLE  =": "FITS",
    b"<svg": "SVG",
    b"<?xml": "XML/SVG",
    b"\x00\x00\x00\x0cjP": "JPEG 2000",
    b"\x00\x00\x01\x00": "ICO",
    b"\x00\x00\x02\x00": "CUR",
    b"%!PS": "PostScript/EPS",
    b"<!doctype html": "HTML",
    b"<!DOCTYPE html": "HTML",
    b"<html": "HTML",
}
TGA_FOOTER = b"TRUEVISION-XFILE.\x00"  # TGA has no leading signature; version 2 files end with this


def sniff(data: bytes) -> str | None:
    """The format that `data`'s leading bytes announce, if it is one named here."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data.endswith(TGA_FOOTER):
        return "TGA"
    head = data[:16].lstrip()
    return next((name for magic, name in SIGNATURES.items() if head.startswith(magic)), None)
