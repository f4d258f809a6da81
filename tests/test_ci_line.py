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
