"""Tests that need the real scenes skip without them, except under CI (HSI_REQUIRE_DATA=1)."""

from __future__ import annotations

from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py")


@pytest.fixture
def probe(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A child pytest with the suite's conftest, one test that needs the data, and no data."""
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(test_probe="def test_needs_data(shared_data):\n    pass\n")
    monkeypatch.setenv("HSI_SHARED_DATA", str(pytester.path / "no_data_here"))
    monkeypatch.delenv("HSI_REQUIRE_DATA", raising=False)
    return pytester


def test_without_data_the_test_skips_and_says_why(probe):
    result = probe.runpytest_subprocess("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*real data not found under *no_data_here: set HSI_SHARED_DATA*"])


def test_under_ci_missing_data_fails(probe, monkeypatch):
    monkeypatch.setenv("HSI_REQUIRE_DATA", "1")
    result = probe.runpytest_subprocess()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*real data not found*HSI_REQUIRE_DATA=1 makes this a failure*"])


def test_a_misspelt_switch_is_an_error(probe, monkeypatch):
    monkeypatch.setenv("HSI_REQUIRE_DATA", "yes")
    result = probe.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*HSI_REQUIRE_DATA='yes': use 1 (or 0, unset).*"])
