"""The README's test command line and .ci/run's stay identical (issue 19 item 8: both print the slowest tests)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pytest_lines(text: str) -> list[str]:
    return [m.group(0).strip() for m in re.finditer(r"^\s*python -m pip install -e '\.\[test\]' && .*$", text, re.M)]


def test_readme_test_line_is_the_ci_line():
    readme = _pytest_lines((ROOT / "README.md").read_text(encoding="utf-8"))
    ci = _pytest_lines((ROOT / ".ci" / "run").read_text(encoding="utf-8"))
    assert len(ci) == 1 and readme == ci, (readme, ci)
    assert "--durations=25" in ci[0]


def test_a_fast_test_has_a_timeout(request, pytestconfig):
    # pytest-timeout: a fast-tier test fails after FAST_TEST_TIMEOUT_S instead of hanging until CI's limit;
    # the slow tier and notebooks get pyproject's `timeout`
    from conftest import FAST_TEST_TIMEOUT_S

    assert request.node.get_closest_marker("timeout").args == (FAST_TEST_TIMEOUT_S,)
    assert float(pytestconfig.getini("timeout")) >= 5 * FAST_TEST_TIMEOUT_S
