"""The benchmark's stage breakdown, read from a real Triton's statistics around real gateway calls."""

from __future__ import annotations

import time

import tritonclient.grpc as grpcclient

from bench import stages
from clip_client import ClipClient


def test_a_classify_is_broken_down_into_the_ensembles_models_and_the_time_outside_triton(
    tiny_client: grpcclient.InferenceServerClient, clip_client: ClipClient, photo_png: bytes
) -> None:
    calls = 3
    before = stages.snapshot(tiny_client)
    started = time.perf_counter()
    for call in range(calls):  # labels never seen: no response-cache hit hides the text tower's work
        clip_client.classify(photo_png, [f"stage label {time.time_ns()} {call} {i}" for i in range(3)])
    client_mean_ms = (time.perf_counter() - started) / calls * 1000
    found = stages.breakdown(before, stages.settled_snapshot(tiny_client, before, calls), calls, client_mean_ms)

    per_model = found["models"]
    assert per_model["clip_classify"]["requests_per_call"] == 1.0
    for model in ("clip_preprocess_image", "clip_image_encoder", "clip_tokenize", "clip_text_encoder"):
        assert per_model[model]["requests_per_call"] >= 1.0, (model, per_model)
        assert per_model[model]["cache_hit_share"] == 0.0, (model, per_model)
        assert per_model[model]["compute_infer_ms"] > 0, (model, per_model)
        stage_sum = sum(per_model[model][f"{stage}_ms"] for stage in stages.STAGES)
        assert stage_sum <= per_model[model]["request_ms"] + 0.05, (model, per_model)  # rounding
    assert "clip_embed_text" not in per_model  # a model this row never called is left out
    # The ensemble's request time holds its models' work; what the client saw beyond it is outside Triton.
    assert per_model["clip_classify"]["request_ms"] >= per_model["clip_image_encoder"]["compute_infer_ms"]
    assert found["triton_ms_per_call"] == per_model["clip_classify"]["request_ms"]
    assert 0 < found["outside_triton_ms_per_call"] < client_mean_ms
