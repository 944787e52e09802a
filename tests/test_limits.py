"""Limits that two processes must agree on have one source, the model repository: the gateway reads
the image encoder's max batch size and the preprocessing model's pixel limit from Triton, and
refuses to serve when its own settings ask for more."""

from __future__ import annotations

from pathlib import Path

import pytest

from clip_client import ClipClient, InvalidRequestError
from export import random_checkpoint
from tests.support import servers
from tests.support.gateway import gateway_config
from tests.support.images import SMALL_JPEG
from tests.support.processes import wait_for
from tests.support.servers import GatewayProcess, LauncherTriton


def test_the_gateway_takes_its_image_limits_from_the_repository(clip_client: ClipClient) -> None:
    limits = clip_client.model_info().limits
    assert limits.max_images_per_request == 32  # the exporter's default --max-batch-size
    assert limits.max_image_pixels == 40_000_000  # the exporter's default --max-image-pixels


def test_a_smaller_max_batch_in_the_export_is_the_gateways_limit(tmp_path: Path) -> None:
    repository = random_checkpoint.cached_export("tiny", max_batch_size=4, max_image_pixels=1_000_000, compile="none")
    with (
        servers.triton(repository, tmp_path) as triton,
        servers.gateway(gateway_config(triton.grpc_url)) as gateway,
        ClipClient(gateway.target) as client,
    ):
        limits = client.model_info().limits
        assert (limits.max_images_per_request, limits.max_image_pixels) == (4, 1_000_000)
        assert all(item.ok for item in client.classify([SMALL_JPEG] * 4, ["cat"]))
        with pytest.raises(InvalidRequestError, match="images: more than 4 entries, the limit per request"):
            client.classify([SMALL_JPEG] * 5, ["cat"])


def test_settings_that_exceed_the_repository_are_refused(tiny_triton: LauncherTriton, tmp_path: Path) -> None:
    gateway = GatewayProcess(
        tiny_triton.grpc_url, tmp_path, "--max-images=64", "--max-image-pixels=90000000", wait=False
    )
    try:
        wait_for(lambda: not gateway.process.running(), 60, "the gateway refusing to serve")
        assert gateway.process.process.returncode == 2
        log = gateway.process.log()
        assert "--max-images 64 is more than the image encoder's max batch size 32" in log
        assert "--max-image-pixels 90000000 is more than the preprocessing model's 40000000" in log
    finally:
        gateway.stop()


def test_a_smaller_setting_is_kept(tiny_triton: LauncherTriton) -> None:
    from gateway.config import Limits

    config = gateway_config(tiny_triton.grpc_url, limits=Limits(max_images=2))
    with servers.gateway(config) as gateway, ClipClient(gateway.target) as client:
        assert client.model_info().limits.max_images_per_request == 2
