"""Session fixtures (random-weight checkpoints, their exports, real Triton servers and gateways)
and the session-wide rules: no process started by a test, and no shared memory of a Triton it ran,
may outlive the run; and no test may skip or be expected to fail (xfail) unless it is marked
`may_skip` with the reason it is allowed to; a skip at collection is an error."""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

from clip_client import ClipClient
from export import random_checkpoint
from gateway.config import Limits
from launcher.process_group import SHM_DIR, regions_named, remove_shm_regions
from launcher.server import SHM_PREFIX_ENV
from tests.support import images, processes, servers
from tests.support.gateway import GatewayThread, gateway_config
from tests.support.reference import Reference
from tests.support.servers import LauncherTriton
from tests.support.web import Canary, ImageWebServer


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "may_skip(reason): the test may skip, or be expected to fail (xfail), for the reason given"
    )
    # Tritons this run starts, in this process or through the harness, name their shared memory
    # with the run's own prefix (the harness also passes it to every process it starts).
    os.environ[SHM_PREFIX_ENV] = processes.SHM_PREFIX


def may_skip_reason(item: pytest.Item) -> str:
    """The reason a `may_skip` mark gives ("" when there is no mark, or it gives none)."""
    mark = item.get_closest_marker("may_skip")
    if mark is None:
        return ""
    reason = mark.kwargs.get("reason", mark.args[0] if mark.args else "")
    return reason.strip() if isinstance(reason, str) else ""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A test that skips, or is expected to fail (an xfail mark or pytest.xfail(), whether it then
    fails or passes), is a failure unless it is marked `may_skip` with the reason it may: in CI a
    silently skipped test is a test that did not run, and an xfail one a failure nobody sees."""
    report: pytest.TestReport = yield
    expected_failure = getattr(report, "wasxfail", None)
    if (report.skipped or expected_failure is not None) and not may_skip_reason(item):
        if expected_failure is not None:
            del report.wasxfail  # reported as what it now is: a failure
            detail = f"xfail without a may_skip mark giving the reason: {expected_failure or '(no reason)'}"
            if report.longrepr is not None:
                detail += f"\n{report.longrepr}"
        else:
            skipped = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
            detail = f"skipped without a may_skip mark giving the reason: {skipped}"
        report.outcome = "failed"
        report.longrepr = detail
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    """A skip while collecting (a module-level pytest.importorskip, pytest.skip(allow_module_level=True))
    is a collection error: no mark can explain it (the module's marks are never read), and every test
    in the module would silently not run. Skip inside the tests that need the thing, marked may_skip."""
    report: pytest.CollectReport = yield
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = (
            f"skipped at collection, which no may_skip mark can explain: {reason} "
            "(skip inside the tests that need it, marked may_skip with the reason)"
        )
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Every process any test started (marked by the harness) must be gone by now, and so must the
    shared memory of every Triton they ran (crashed ones included): the regions whose names carry
    this run's prefix. Another Triton's on the same machine (a benchmark's, another run's) are
    neither counted nor touched."""
    try:
        processes.assert_none_left(processes.SESSION, timeout=5)
    except processes.Leaked as leaked:
        session.config.get_terminal_writer().line(f"\nLEAKED PROCESSES: {leaked}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    regions = regions_named(processes.SHM_PREFIX)
    if regions:
        remove_shm_regions(regions, processes.SHM_PREFIX)
        message = f"\nLEAKED SHARED MEMORY: {len(regions)} Triton region(s) left in {SHM_DIR}"
        session.config.get_terminal_writer().line(message, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def tiny_checkpoint() -> Path:
    return random_checkpoint.cached("tiny")


@pytest.fixture(scope="session")
def tiny_reference(tiny_checkpoint: Path) -> Reference:
    return Reference(tiny_checkpoint)


@pytest.fixture(scope="session")
def tiny_repository() -> Path:
    # The image tower on torch whatever OpenVINO measures on this machine: the tests that read which
    # path runs must not depend on a timing (tests/test_openvino_runtime.py serves the other one).
    return random_checkpoint.cached_export("tiny", image_runtime="torch")


@pytest.fixture(scope="session")
def tiny_triton(tiny_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LauncherTriton]:
    with servers.triton(tiny_repository, tmp_path_factory.mktemp("triton-tiny")) as server:
        yield server


@pytest.fixture(scope="session")
def tiny_client(tiny_triton: LauncherTriton) -> Iterator[grpcclient.InferenceServerClient]:
    client = grpcclient.InferenceServerClient(tiny_triton.grpc_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def vitb_checkpoint() -> Path:
    return random_checkpoint.cached("vit-b-16")


@pytest.fixture(scope="session")
def vitb_triton(vitb_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LauncherTriton]:
    with servers.triton(random_checkpoint.cached_export("vit-b-16"), tmp_path_factory.mktemp("triton-vitb")) as server:
        yield server


@pytest.fixture(scope="session")
def tiny_gateway(tiny_triton: LauncherTriton) -> Iterator[GatewayThread]:
    with servers.gateway(gateway_config(tiny_triton.grpc_url)) as gateway:
        yield gateway


@pytest.fixture(scope="session")
def clip_client(tiny_gateway: GatewayThread) -> Iterator[ClipClient]:
    with ClipClient(tiny_gateway.target) as client:
        yield client


URL_API_KEY = "url-test-key"
URL_MAX_IMAGE_BYTES = 1_000_000


@pytest.fixture(scope="session")
def photo_png() -> bytes:
    return images.photo_pngs()[2]


@pytest.fixture(scope="session")
def canary() -> Iterator[Canary]:
    listener = Canary()
    yield listener
    listener.close()


@pytest.fixture(scope="session")
def image_web(photo_png: bytes) -> Iterator[ImageWebServer]:
    server = ImageWebServer("127.0.0.2", photo_png, huge_bytes=3 * URL_MAX_IMAGE_BYTES)
    yield server
    server.close()


@pytest.fixture(scope="session")
def url_gateway(tiny_triton: LauncherTriton) -> Iterator[GatewayThread]:
    """A gateway that fetches image URLs, allows exactly 127.0.0.2 (the test web server; the
    canary is on 127.0.0.1), follows two redirects, has short timeouts, serves HTTP and needs a key."""
    config = gateway_config(
        tiny_triton.grpc_url,
        image_urls=True,
        url_allowed_networks="127.0.0.2/32",
        url_max_redirects=2,
        url_connect_timeout=1.0,
        url_read_timeout=1.0,
        url_total_timeout=3.0,
        http_listen="127.0.0.1:0",
        api_keys=URL_API_KEY,
        limits=Limits(max_image_bytes=URL_MAX_IMAGE_BYTES),
    )
    with servers.gateway(config) as gateway:
        yield gateway
