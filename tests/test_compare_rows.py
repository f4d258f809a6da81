"""benchmarks/compare_rows.py (issue 19 item 6, the behaviour check of a refactor): two results tables paired
by turn_id; a changed deterministic value is a difference, a changed timing value is not, a changed dtype or a
missing column is. Small literal tables; the real before/after runs are in the README."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_rows.py"
_spec = importlib.util.spec_from_file_location("compare_rows", _PATH)
compare_rows = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare_rows)


def _table(**changes) -> pd.DataFrame:
    df = pd.DataFrame({"turn_id": ["t1", "t2"], "status": ["completed", "failed"], "wer": [0.1, np.nan],
                       "ttfa_ms": [310.0, np.nan], "voice": ["v-20261203-1", "v-20261203-1"]})
    return df.assign(**changes)


def _verdicts(a, b, **kw):
    rows, ok = compare_rows.compare(a, b, **kw)
    return {c: v for c, v, _ in rows}, ok


def test_same_rows_in_another_order_and_other_timings_are_the_same():
    b = _table(ttfa_ms=[290.0, np.nan], voice=["v-20261204-9"] * 2).iloc[::-1].reset_index(drop=True)
    verdicts, ok = _verdicts(_table(), b)
    assert ok and verdicts["status"] == verdicts["wer"] == "equal"  # NaN == NaN
    assert verdicts["ttfa_ms"] == "timing, same dtype" and verdicts["voice"] == "run-specific, same dtype"
    _, strict_ok = _verdicts(_table(), b, strict=True)
    assert not strict_ok  # --strict: the timing column is compared by value


@pytest.mark.parametrize("b, column, verdict", [
    (_table(wer=[0.1, 0.2]), "wer", "DIFFERS"),
    (_table(status=["completed", "completed"]), "status", "DIFFERS"),
    (_table(ttfa_ms=["310", None]), "ttfa_ms", "TIMING DTYPE DIFFERS"),
    (_table().drop(columns="wer"), "wer", "MISSING in B"),
])
def test_a_changed_deterministic_value_dtype_or_column_is_a_difference(b, column, verdict):
    verdicts, ok = _verdicts(_table(), b)
    assert not ok and verdicts[column] == verdict


def test_other_turns_are_refused_and_main_exits_1_on_a_difference(tmp_path, capsys):
    with pytest.raises(SystemExit, match="different turns"):
        compare_rows.compare(_table(), _table(turn_id=["t1", "t3"]))
    for name, frame in (("a", _table()), ("b", _table(wer=[0.3, np.nan]))):
        (tmp_path / name).mkdir()
        frame.to_parquet(tmp_path / name / "results.parquet")
    assert compare_rows.main([str(tmp_path / "a"), str(tmp_path / "a")]) == 0
    assert compare_rows.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 1
    assert "DIFFERENT" in capsys.readouterr().out
