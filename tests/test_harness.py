"""The harness's own guarantees, shown to fail when they should: a process left behind is found
and ended, and a test that skips without saying it may is a failure."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.processes import Leaked, ManagedProcess, marked, wait_for

pytest_plugins = ["pytester"]


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


def test_an_unexplained_skip_fails_and_an_explained_one_does_not(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makeconftest("from tests.conftest import pytest_configure, pytest_runtest_makereport  # noqa: F401\n")
    pytester.makepyfile(
        """
        import pytest

        def test_silent():
            pytest.skip("tool missing")

        @pytest.mark.may_skip(reason="needs IPv6")
        def test_allowed():
            pytest.skip("no IPv6 here")
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=1, skipped=1)
    result.stdout.fnmatch_lines(["*skipped without a may_skip mark*tool missing*"])
