"""bench.bulk's report: its markdown has a row for every probe and both runs, and says whether
the stream met its target (the benchmark itself takes minutes on the real model: not run here)."""

from __future__ import annotations

import os

from bench.bulk import RssSampler, markdown


def run(label: str, images_per_s: float) -> dict[str, object]:
    return {
        "label": label,
        "images": 100,
        "seconds": 10.0,
        "images_per_s": images_per_s,
        "errors": 0,
        "rss_start_mib": 100.0,
        "rss_peak_mib": 110.0,
        "rss_end_mib": 101.0,
    }


def test_the_report_lists_every_probe_and_the_target() -> None:
    report = {
        "machine": {"model": "Some CPU", "cores": 2},
        "machine_class": "avx2",
        "precision": "int8",
        "commit": "abc1234",
        "date": "2026-12-03",
        "command": "python -m bench.bulk",
        "probes": [
            {"per_call": 8, "concurrency": 2, "images_per_s": 18.2},
            {"per_call": 8, "stream_window": 2, "images_per_s": 17.9},
        ],
        "unary": run("unary Embed", 18.2),
        "stream": run("EmbedStream", 17.9),
        "target": {"ratio": 0.984, "met": False},
    }
    text = markdown(report)
    assert "| unary, 8 image(s) per call, c=2 | 18.2 |" in text
    assert "| stream, 8 per request, window 2 | 17.9 |" in text
    assert "| EmbedStream | 100 | 10.0 | 17.9 | 0 | 100.0 / 110.0 / 101.0 |" in text
    assert "**0.984x** (target >= 1.0x: not met)" in text


def test_the_rss_sampler_reads_this_process() -> None:
    with RssSampler(os.getpid(), interval=0.01) as sampler:
        block = bytearray(32 * 2**20)  # touched: resident
        block[::4096] = b"x" * len(block[::4096])
    summary = sampler.summary()
    assert summary["rss_peak_mib"] >= summary["rss_start_mib"] > 0
    del block
