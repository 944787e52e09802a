"""A request's images go to Triton in parts (--triton-call-pixels, gateway.image_results), one
Triton call after another: the answers are those of one call, and a gateway that dies leaves at
most one part running inside Triton (Triton 2.51 does not pass an ensemble's cancellation on to
its steps, so what was sent runs to its time left)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from clip_client import NO_RETRY, ClientConfig, ClipClient, ClipError
from tests.support import servers
from tests.support.gateway import gateway_config
from tests.support.images import photo_pngs
from tests.support.processes import wait_for
from tests.support.servers import LauncherTriton
from tests.test_overload import large_pngs

LABELS = ["a cat", "a dog", "a red car", "a mountain lake"]
TEMPLATES = ["a photo of {}.", "a drawing of {}."]


def test_a_request_in_parts_answers_as_one_call(tiny_triton: LauncherTriton) -> None:
    """Every image its own part (a budget of one pixel), against the whole request in one call:
    the same rows, the bad image's error in its place, and scores equal but for the float32
    rounding of the gateway's matmul (the label set's tolerance, test_label_sets)."""
    images = [*photo_pngs()[:2], b"not an image", *photo_pngs()[2:4]]
    answers = {}
    for budget in (0, 1):
        config = gateway_config(tiny_triton.grpc_url, triton_call_pixels=budget)
        with servers.gateway(config) as gateway, ClipClient(config=ClientConfig(target=gateway.target)) as client:
            answers[budget] = (
                client.classify(images, LABELS, templates=TEMPLATES),
                client.embed(images=images),
                client.similarity(images, LABELS),
            )
    (one_classify, one_embed, one_similarity), (parts_classify, parts_embed, parts_similarity) = answers[0], answers[1]
    assert [r.ok for r in parts_classify] == [True, True, False, True, True]
    for one, parts in zip(one_classify, parts_classify, strict=True):
        assert parts.ok == one.ok
        assert [s.label for s in parts.labels] == [s.label for s in one.labels]
        probabilities = [s.probability for s in one.labels]
        np.testing.assert_allclose([s.probability for s in parts.labels], probabilities, atol=1e-6)
        np.testing.assert_allclose([s.score for s in parts.labels], [s.score for s in one.labels], atol=1e-4)
    assert list(parts_embed.image_errors) == list(one_embed.image_errors) == [2]
    np.testing.assert_allclose(parts_embed.images, one_embed.images, atol=1e-6)  # NaN rows compare equal
    assert list(parts_similarity.image_errors) == list(one_similarity.image_errors) == [2]
    np.testing.assert_allclose(parts_similarity.scores, one_similarity.scores, atol=1e-4)


def test_a_killed_gateway_leaves_at_most_one_part_running_in_triton(
    tiny_triton: LauncherTriton, tmp_path: Path
) -> None:
    """SIGKILL a gateway process a second into an Embed of 32 twelve-megapixel PNGs (the default
    budget makes parts of 4 of them). Before, Triton decoded all 32 for nobody: 7.4 s after the
    kill on a 2-core Xeon, where 4 take 1.0 s. Now it goes on for at most the part it has: measured
    against the time 4 of the images take in this run, whatever the machine's load."""
    request_images = large_pngs(32)
    tiny_triton.wait_idle(timeout=300)
    with (
        servers.gateway_process(tiny_triton.grpc_url, tmp_path, "--log-level=WARNING") as gateway,
        ClipClient(config=ClientConfig(target=gateway.target, retry=NO_RETRY, timeout=120)) as client,
    ):
        started = time.monotonic()
        assert len(client.embed(images=request_images[:4]).images) == 4
        four = time.monotonic() - started
        tiny_triton.wait_idle(timeout=300, quiet=0.5)
        ended = threading.Event()

        def doomed_call() -> None:
            with pytest.raises(ClipError):
                client.embed(images=request_images)
            ended.set()

        caller = threading.Thread(target=doomed_call, daemon=True)
        caller.start()
        wait_for(
            lambda: gateway.metric("clip_gateway_in_flight_requests", method="Embed") > 0,
            30,
            "the gateway working on the call",
        )
        time.sleep(1.0)  # well into its first part: Triton is decoding
        assert not ended.is_set(), "the call ended before the gateway was killed"
        os.kill(gateway.pid, signal.SIGKILL)
        killed = time.monotonic()
        tiny_triton.wait_idle(timeout=300, quiet=0.5)
        went_on = time.monotonic() - killed
        caller.join(30)
        assert ended.is_set(), "the caller did not learn that the gateway had gone"
    print(f"gateway SIGKILLed inside 32 x 12 Mpx: Triton went on {went_on:.1f} s; 4 images take {four:.1f} s")
    assert went_on < 3 * four, f"Triton went on {went_on:.1f} s after the kill; 4 images take {four:.1f} s"
