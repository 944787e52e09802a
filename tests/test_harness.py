"""The harness's own guarantees, shown to fail when they should: a process left behind is found
and ended (by its server's stop, and by the session's own check), the session's shared-memory check
sees this run's Triton regions and no one else's, and a test that skips or is expected to fail
without saying why it may is a failure.

The session-level checks run in a pytest session of their own (pytester, in a process of its own:
its own session mark and shared-memory prefix, so that its check never looks at this run's)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from launcher.process_group import SHM_DIR, TRITON_SHM_PREFIX, shm_regions
from launcher.server import DEFAULT_SHM_PREFIX
from tests.support.processes import SHM_PREFIX, Leaked, ManagedProcess, kill_marked, marked, wait_for
from tests.support.servers import ROOT, LauncherTriton

pytest_plugins = ["pytester"]

SESSION_RULES = (
    "from tests.conftest import (  # noqa: F401\n"
    "    pytest_configure, pytest_make_collect_report, pytest_runtest_makereport, pytest_sessionfinish\n"
    ")\n"
)


def inner_session(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, source: str) -> pytest.RunResult:
    """`source` as the test file of a pytest session in a process of its own, under this suite's
    session rules; the session's files (and what its tests write there) are in pytester.path."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makeconftest(SESSION_RULES)
    pytester.makepyfile(source)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=300)


def test_a_process_left_behind_is_found_killed_and_reported(tmp_path: Path) -> None:
    # The shell exits at once; the sleep it started in the background lives on as an orphan.
    leaker = ManagedProcess("leaker", ["sh", "-c", "sleep 600 & echo started"], tmp_path / "leaker.log")
    leaker.wait_for_log("started", timeout=30)
    wait_for(lambda: not leaker.running(), 30, "the shell exiting")
    # (until the background child has exec'd, it still shows the shell's command line)
    wait_for(lambda: [command for _, command in marked(leaker.mark)] == ["sleep 600"], 30, "the orphan sleeping")
    with pytest.raises(Leaked, match="sleep 600"):
        leaker.stop(leak_wait=0.5)
    assert marked(leaker.mark) == []  # and it was ended


def test_a_clean_process_passes_the_check(tmp_path: Path) -> None:
    sleeper = ManagedProcess("sleeper", ["sleep", "600"], tmp_path / "sleeper.log")
    assert sleeper.stop() == -15  # SIGTERM


def test_an_unexplained_skip_or_xfail_fails_and_an_explained_one_does_not(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makeconftest("from tests.conftest import pytest_configure, pytest_runtest_makereport  # noqa: F401\n")
    pytester.makepyfile(
        """
        import pytest

        def test_silent():
            pytest.skip("tool missing")

        @pytest.mark.skip(reason="later")
        def test_skip_mark():
            pass

        @pytest.mark.may_skip
        def test_mark_without_reason():
            pytest.skip("no reason given for the mark")

        def test_importorskip_in_the_test():
            pytest.importorskip("no_such_module_for_the_harness_test")

        @pytest.mark.xfail(reason="known bug")
        def test_xfail_mark():
            assert False

        @pytest.mark.xfail(reason="flaky")
        def test_xfail_mark_that_passes():
            pass

        def test_xfail_call():
            pytest.xfail("not implemented")

        @pytest.mark.may_skip(reason="needs IPv6")
        def test_allowed():
            pytest.skip("no IPv6 here")

        @pytest.mark.may_skip(reason="needs the optional onnx package")
        def test_allowed_importorskip():
            pytest.importorskip("no_such_module_for_the_harness_test")

        @pytest.mark.may_skip(reason="upstream bug 123, fixed in the next release")
        @pytest.mark.xfail(reason="upstream bug 123", strict=True)
        def test_allowed_xfail_mark():
            assert False

        @pytest.mark.may_skip(reason="the reference answers wrongly on this platform")
        def test_allowed_xfail_call():
            pytest.xfail("reference wrong here")
        """
    )
    result = pytester.runpytest("-rA")
    # the skip mark is refused at setup (an error); the rest in the call
    result.assert_outcomes(failed=6, errors=1, skipped=2, xfailed=2)
    result.stdout.fnmatch_lines_random(
        [
            "*_ test_silent _*",
            "skipped without a may_skip mark giving the reason: Skipped: tool missing",
            "*_ ERROR at setup of test_skip_mark _*",
            "skipped without a may_skip mark giving the reason: Skipped: later",
            "*_ test_mark_without_reason _*",
            "skipped without a may_skip mark giving the reason: Skipped: no reason given for the mark",
            "*_ test_importorskip_in_the_test _*",
            "skipped without a may_skip mark giving the reason: Skipped: could not import 'no_such_module*",
            "*_ test_xfail_mark _*",
            "xfail without a may_skip mark giving the reason: known bug",
            "*_ test_xfail_mark_that_passes _*",
            "xfail without a may_skip mark giving the reason: flaky",
            "*_ test_xfail_call _*",
            "xfail without a may_skip mark giving the reason: not implemented",
            "SKIPPED * no IPv6 here",
            "SKIPPED * could not import 'no_such_module*",
            "XFAIL *::test_allowed_xfail_mark - upstream bug 123",
            "XFAIL *::test_allowed_xfail_call - reference wrong here",
        ]
    )


def test_a_skip_at_collection_is_an_error(pytester: pytest.Pytester) -> None:
    """A module-level importorskip or skip would silently drop every test of its module."""
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makeconftest(
        "from tests.conftest import pytest_configure, pytest_make_collect_report, pytest_runtest_makereport  # noqa\n"
    )
    pytester.makepyfile(
        test_importorskip="""
        import pytest

        pytestmark = pytest.mark.may_skip(reason="cannot explain it: the module is never imported")
        onnx = pytest.importorskip("no_such_module_for_the_harness_test")

        def test_never_collected():
            pass
        """,
        test_module_skip="""
        import pytest

        pytest.skip("no GPU", allow_module_level=True)

        def test_never_collected():
            pass
        """,
        test_fine="""
        def test_runs():
            pass
        """,
    )
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.INTERRUPTED  # as for any collection error: nothing runs
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines_random(
        [
            "*skipped at collection, which no may_skip mark can explain*no_such_module_for_the_harness_test*",
            "*skipped at collection, which no may_skip mark can explain*no GPU*",
            "*Interrupted: 2 errors during collection*",
        ]
    )


def test_a_process_left_behind_fails_the_session_and_is_ended(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = inner_session(
        pytester,
        monkeypatch,
        """
        from pathlib import Path

        from tests.support.processes import ManagedProcess, marked, wait_for

        def test_starts_a_process_and_never_stops_it(tmp_path):
            leaker = ManagedProcess("leaker", ["sleep", "600"], tmp_path / "leaker.log")
            Path("mark").write_text(leaker.mark)
            wait_for(lambda: [command for _, command in marked(leaker.mark)] == ["sleep 600"], 60, "the sleep running")
        """,
    )
    mark = (pytester.path / "mark").read_text()
    try:
        result.assert_outcomes(passed=1)  # the test itself passes: the session's check is what fails
        assert result.ret == pytest.ExitCode.TESTS_FAILED
        result.stdout.fnmatch_lines(["*LEAKED PROCESSES: 1 process(es) of pytest-*were left running*sleep 600*"])
        assert marked(mark) == []  # and the session ended it
    finally:
        kill_marked(mark)  # what the inner session left, were its check broken


def test_a_region_of_this_run_left_behind_fails_the_session_and_is_removed(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = inner_session(
        pytester,
        monkeypatch,
        """
        import uuid
        from pathlib import Path

        from launcher.process_group import SHM_DIR
        from launcher.server import unique_shm_prefix

        def test_a_triton_of_the_run_leaves_its_region():
            # named as a Triton started in this session names one: the run's prefix, the
            # launcher's pid and counter, the backend's UUID
            region = SHM_DIR / f"{unique_shm_prefix()}{uuid.uuid4()}"
            region.write_bytes(b"left behind")
            Path("region").write_text(str(region))
        """,
    )
    region = Path((pytester.path / "region").read_text())
    try:
        assert region.name.startswith("clip_serve_test_pytest-")  # the inner run's prefix, not ours
        assert not region.name.startswith(SHM_PREFIX)
        result.assert_outcomes(passed=1)
        assert result.ret == pytest.ExitCode.TESTS_FAILED
        result.stdout.fnmatch_lines([f"*LEAKED SHARED MEMORY: 1 Triton region(s) left in {SHM_DIR}*"])
        assert not region.exists()  # and the session removed it
    finally:
        region.unlink(missing_ok=True)


def test_a_foreign_region_beside_the_run_is_neither_counted_nor_removed(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regions that appear while the session runs but are not its own: another Triton's with the
    Python backend's default names (a benchmark's, say), another launcher's with ours."""
    foreign = [SHM_DIR / f"{TRITON_SHM_PREFIX}{uuid.uuid4()}", SHM_DIR / f"{DEFAULT_SHM_PREFIX}1_1_{uuid.uuid4()}"]
    monkeypatch.setenv("FOREIGN_REGIONS", ",".join(map(str, foreign)))
    try:
        result = inner_session(
            pytester,
            monkeypatch,
            """
            import os
            from pathlib import Path

            def test_other_tritons_create_regions_during_the_run():
                for region in os.environ["FOREIGN_REGIONS"].split(","):
                    Path(region).write_bytes(b"in use")
            """,
        )
        result.assert_outcomes(passed=1)
        assert "LEAKED" not in result.stdout.str()
        assert result.ret == pytest.ExitCode.OK
        assert [region.read_bytes() for region in foreign] == [b"in use", b"in use"]  # untouched
    finally:
        for region in foreign:
            region.unlink(missing_ok=True)


def test_tritons_of_this_run_name_their_regions_with_its_prefix(tiny_triton: LauncherTriton) -> None:
    """What makes the session's shared-memory check see them: every stub's region carries the run's
    prefix (passed to the launcher by the harness), and exists."""
    stubs = tiny_triton.stub_pids()
    regions = shm_regions(tiny_triton.triton_pid(), SHM_PREFIX)
    assert stubs and len(regions) == len(stubs), (stubs, regions)
    assert all((SHM_DIR / name).is_file() for name in regions)
