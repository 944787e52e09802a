"""Faults: a Python-backend stub killed, Triton killed under load. The launcher's supervision
brings Triton back and leaves nothing of the dead instance running; the gateway answers
UNAVAILABLE meanwhile, never hangs, reports NOT_SERVING, and serves again without being restarted."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from clip_client import NO_RETRY, ClientConfig, ClipClient, ClipError, ImageEmbedding
from launcher.process_group import SHM_DIR, members, shm_regions
from tests.support import servers
from tests.support.gateway import gateway_config
from tests.support.images import encode, gradient_photo, photo_pngs
from tests.support.infer import classify
from tests.support.processes import SHM_PREFIX, wait_for
from tests.support.servers import LauncherTriton

CALL_TIMEOUT = 10.0  # the load's per-call deadline; a call that ends later hung past it


@pytest.fixture
def supervised(tiny_repository: Path, tmp_path: Path) -> Iterator[LauncherTriton]:
    with servers.triton(tiny_repository, tmp_path) as triton:
        yield triton


def classification_works(url: str) -> bool:
    try:
        with grpcclient.InferenceServerClient(url) as client:
            classify(client, list(photo_pngs()[:1]), ["cat"])
        return True
    except Exception:
        return False


def test_killed_stub_is_noticed_and_triton_restarted(supervised: LauncherTriton) -> None:
    before = supervised.triton_pid()
    os.kill(supervised.stub_pid("clip_similarity"), signal.SIGKILL)
    started = time.monotonic()
    wait_for(lambda: supervised.triton_pid() != before, 120, "a new Triton after the stub died")
    wait_for(lambda: classification_works(supervised.grpc_url), 120, "classification through the new Triton")
    print(f"stub killed: classification works again after {time.monotonic() - started:.1f}s")
    assert members(before) == [], "the old Triton's other stubs were left running"
    assert supervised.stop() == 0
    assert "stub(s)" in supervised.process.log()


def test_a_hung_triton_is_restarted(tiny_repository: Path, tmp_path: Path) -> None:
    """SIGSTOP: Triton is alive and listening, and answers nothing. Past --hang-timeout the
    launcher ends it (SIGTERM cannot reach a stopped process: SIGKILL) and starts a new one."""
    with servers.triton(tiny_repository, tmp_path, extra_args=("--hang-timeout=5",)) as triton:
        frozen = triton.triton_pid()
        os.kill(frozen, signal.SIGSTOP)
        try:
            started = time.monotonic()
            wait_for(lambda: triton.triton_pid() != frozen, 120, "a new Triton after the old one hung")
            wait_for(lambda: classification_works(triton.grpc_url), 120, "classification through the new Triton")
            print(f"Triton hung: classification works again after {time.monotonic() - started:.1f}s")
            assert members(frozen) == [], "the hung Triton's stubs were left running"
        finally:
            with contextlib.suppress(ProcessLookupError):
                if frozen in members(frozen):  # still ours and still there: let it end with the test
                    os.kill(frozen, signal.SIGCONT)
        assert triton.stop() == 0
        assert "has not answered its liveness check" in triton.process.log()


def test_gateway_rides_out_a_triton_kill_under_load(supervised: LauncherTriton) -> None:
    outcomes: Counter[str] = Counter()
    unexpected: list[BaseException] = []
    slowest = [0.0]
    stop = threading.Event()
    with servers.gateway(gateway_config(supervised.grpc_url)) as gw:

        def load() -> None:
            with ClipClient(config=ClientConfig(target=gw.target, timeout=CALL_TIMEOUT, retry=NO_RETRY)) as client:
                while not stop.is_set():
                    started = time.monotonic()
                    try:
                        client.classify(list(photo_pngs()[:2]), ["cat", "dog", "rocket"])
                        outcomes["OK"] += 1
                    except ClipError as error:
                        outcomes[error.code.name] += 1
                    except BaseException as error:  # anything else is a failure of the test's own
                        unexpected.append(error)
                        return
                    slowest[0] = max(slowest[0], time.monotonic() - started)

        threads = [threading.Thread(target=load) for _ in range(4)]
        try:
            for thread in threads:
                thread.start()
            wait_for(lambda: outcomes["OK"] >= 4, 60, "successful calls before the kill")
            old_triton = supervised.triton_pid()
            regions = shm_regions(old_triton, SHM_PREFIX)
            os.kill(old_triton, signal.SIGKILL)
            killed = time.monotonic()
            gw.wait_ready(False, timeout=10)  # NOT_SERVING while Triton is down
            gw.wait_ready(True, timeout=120)  # and SERVING again, same gateway
            recovered = time.monotonic() - killed
            ok_at_recovery = outcomes["OK"]
            wait_for(lambda: outcomes["OK"] > ok_at_recovery, 60, "successful calls after recovery")
        finally:
            stop.set()
            for thread in threads:
                thread.join(CALL_TIMEOUT + 20)
    left = members(old_triton)  # the dead Triton's process group: its stubs, busy or not
    print(
        f"Triton SIGKILL under load: outcomes {dict(outcomes)}, serving again after {recovered:.1f}s, "
        f"slowest call {slowest[0]:.2f}s, processes left of the killed Triton: {len(left)}, "
        f"its shared-memory regions left: {sum((SHM_DIR / name).exists() for name in regions)} of {len(regions)}"
    )
    assert not unexpected, unexpected
    assert left == []  # no orphaned stub of the dead Triton
    assert regions and not [name for name in regions if (SHM_DIR / name).exists()]  # nor its shared memory
    assert set(outcomes) <= {"OK", "UNAVAILABLE"}, outcomes
    assert outcomes["UNAVAILABLE"] > 0 and outcomes["OK"] > 0
    assert slowest[0] < CALL_TIMEOUT + 0.5  # a protocol deadline: every call ended within it (0.5 s margin)


def test_a_stream_rides_out_a_triton_kill_with_no_image_lost_or_repeated(supervised: LauncherTriton) -> None:
    """embed_many over 120 images, one per stream request and two out at once; Triton SIGKILLed
    after the tenth result. The requests out at the kill are answered UNAVAILABLE (the model server
    restarting) and sent again by the client until Triton is back: every image is yielded exactly
    once, each equal to its unary embedding."""
    images = [encode(gradient_photo(64, 48, seed=seed), "PNG") for seed in range(120)]
    with (
        servers.gateway(gateway_config(supervised.grpc_url)) as gw,
        ClipClient(config=ClientConfig(target=gw.target, timeout=60)) as client,
    ):
        results: dict[int, ImageEmbedding] = {}
        repeated = []
        old_triton = supervised.triton_pid()
        for index, result in client.embed_many(images, batch_size=1, window=2, ordered=False):
            if index in results:
                repeated.append(index)
            results[index] = result
            if len(results) == 10:
                os.kill(old_triton, signal.SIGKILL)
        assert supervised.triton_pid() != old_triton  # the stream outlived the Triton it started on
        assert repeated == [] and sorted(results) == list(range(120))
        assert [index for index, result in results.items() if not result.ok] == []
        for index in (0, 9, 10, 11, 12, 119):  # around the kill, and the ends
            expected = client.embed(images=[images[index]]).images[0]
            vector = results[index].vector
            assert vector is not None
            np.testing.assert_allclose(vector, expected, atol=1e-5)
