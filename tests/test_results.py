"""qvtools.results: schema, to_frame, summaries with bootstrap CIs, paired differences."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from qvtools import metrics, results
from qvtools.errors import ConfigError

PLUS, FLASH = "qwen3.5-omni-plus-realtime", "qwen3.5-omni-flash-realtime"


def test_docstring_table_matches_columns():
    documented = re.findall(r"^\| `(\w+)` \| (\w+) \|", results.__doc__, flags=re.M)
    assert [name for name, _ in documented] == list(results.COLUMNS)
    assert all(results.COLUMNS[name][0] == dtype for name, dtype in documented)


def test_metric_functions_produce_schema_columns():
    from qvtools.realtime.turn import Turn

    lat = metrics.latency_metrics(Turn(model=PLUS))
    assert set(lat) <= set(results.COLUMNS)
    assert set(metrics.usage_metrics(None)) <= set(results.COLUMNS)


def test_to_frame_order_dtypes_unknown_and_missing():
    rows = [
        {"zzz_extra": 1, "ttfa_ms": 512.5, "target_model": PLUS, "repeat": 0, "simulated": True,
         "status": "completed", "chunk_count": 12},
        {"target_model": FLASH, "repeat": 1, "status": "failed", "error": "boom", "another": "x"},
    ]
    df = results.to_frame(rows)
    assert list(df.columns[: len(results.COLUMNS)]) == list(results.COLUMNS)
    assert list(df.columns[len(results.COLUMNS):]) == ["zzz_extra", "another"]
    for name, (dtype, _) in results.COLUMNS.items():
        assert str(df[name].dtype) == dtype, name
    assert df.loc[0, "ttfa_ms"] == 512.5 and math.isnan(df.loc[1, "ttfa_ms"])
    assert math.isnan(df.loc[0, "loudness_lufs"])
    assert df.loc[1, "error"] == "boom" and pd.isna(df.loc[0, "error"])
    assert df.loc[0, "simulated"] == True and pd.isna(df.loc[1, "simulated"])  # noqa: E712
    assert df["chunk_count"].iloc[0] == 12
    # round-trips through parquet with the same dtypes
    assert len(results.to_frame([])) == 0


def test_to_frame_parquet_roundtrip(tmp_path):
    df = results.to_frame([{"ttfa_ms": 1.0, "target_model": PLUS, "repeat": 2, "simulated": False}])
    df.to_parquet(tmp_path / "r.parquet")
    back = pd.read_parquet(tmp_path / "r.parquet")
    pd.testing.assert_frame_equal(results.to_frame(back), df)


def test_to_frame_bad_values_are_clear_errors():
    with pytest.raises(ConfigError, match="ttfa_ms"):
        results.to_frame([{"ttfa_ms": "fast"}])
    with pytest.raises(ConfigError, match="row 0"):
        results.to_frame([("not", "a dict")])


def _synthetic(rng, n_prompts=30):
    rows = []
    for p in range(n_prompts):
        for rep in range(2):
            base = rng.normal(800, 100)
            rows.append({"target_model": PLUS, "voice_ref": "v1", "prompt_id": f"p{p}", "repeat": rep,
                         "status": "completed", "ttfa_ms": base + 200, "e2e_ms": base + 2000})
            rows.append({"target_model": FLASH, "voice_ref": "v1", "prompt_id": f"p{p}", "repeat": rep,
                         "status": "completed", "ttfa_ms": base, "e2e_ms": base + 1500})
    rows.append({"target_model": FLASH, "voice_ref": "v1", "prompt_id": "px", "repeat": 0,
                 "status": "failed", "error": "timeout"})
    return results.to_frame(rows)


def test_summarize_percentiles_and_ci(rng):
    df = _synthetic(rng)
    s = results.summarize(df, metrics=("ttfa_ms", "e2e_ms"), n_boot=500)
    assert set(s["target_model"]) == {PLUS, FLASH} and len(s) == 4
    flash = s[(s.target_model == FLASH) & (s.metric == "ttfa_ms")].iloc[0]
    assert flash["n"] == 61 and flash["n_completed"] == 60 and flash["n_valid"] == 60
    assert flash["success_rate"] == pytest.approx(60 / 61)
    v = df[(df.target_model == FLASH) & (df.status == "completed")]["ttfa_ms"].to_numpy()
    for q in (50, 90, 95):
        assert flash[f"p{q}"] == pytest.approx(np.percentile(v, q))
        assert flash[f"p{q}_lo"] <= flash[f"p{q}"] <= flash[f"p{q}_hi"]
    # seeded: same input -> same CIs
    pd.testing.assert_frame_equal(s, results.summarize(df, metrics=("ttfa_ms", "e2e_ms"), n_boot=500))


def test_summarize_overall_and_empty_groups():
    df = results.to_frame([{"target_model": PLUS, "status": "failed"}, {"target_model": FLASH, "status": "completed",
                                                                       "ttfa_ms": 700.0}])
    s = results.summarize(df, by=None, metrics="ttfa_ms", n_boot=50)
    assert len(s) == 1 and s.loc[0, "p50"] == 700.0 and s.loc[0, "p50_lo"] == 700.0
    per = results.summarize(df, metrics="ttfa_ms", n_boot=50).set_index("target_model")
    assert math.isnan(per.loc[PLUS, "p50"]) and per.loc[PLUS, "success_rate"] == 0.0
    with pytest.raises(ConfigError, match="nope"):
        results.summarize(df, metrics="nope")
    with pytest.raises(ConfigError, match="ci"):
        results.summarize(df, ci=1.5)


def test_summarize_labels_simulated_latency_metrics():
    rows = [{"target_model": FLASH, "status": "completed", "simulated": True, "ttfa_ms": 800.0 + i,
             "speaker_similarity": 0.8} for i in range(3)]
    rows += [{"target_model": PLUS, "status": "completed", "simulated": False, "ttfa_ms": 900.0,
              "speaker_similarity": 0.7}]
    s = results.summarize(results.to_frame(rows), metrics=("ttfa_ms", "speaker_similarity"), n_boot=20)
    flags = {(r.target_model, r.metric): r.simulated for r in s.itertuples()}
    assert flags == {(FLASH, "ttfa_ms"): True, (FLASH, "speaker_similarity"): False,
                     (PLUS, "ttfa_ms"): False, (PLUS, "speaker_similarity"): False}
    assert results.paired_differences(results.to_frame(rows), "ttfa_ms").simulated is True
    assert results.paired_differences(results.to_frame(rows), "speaker_similarity").simulated is False
    # no simulated column in the input: no column in the output
    plain = results.summarize(pd.DataFrame({"target_model": [FLASH], "ttfa_ms": [1.0]}), metrics="ttfa_ms", n_boot=5)
    assert "simulated" not in plain.columns


def test_paired_differences(rng):
    df = _synthetic(rng)
    r = results.paired_differences(df, "ttfa_ms", n_boot=500)
    assert r.a == PLUS and r.b == FLASH and r.n_pairs == 60
    assert r.median_diff == pytest.approx(200.0)
    assert r.ci_low == pytest.approx(200.0) and r.ci_high == pytest.approx(200.0)
    assert r.a_lower_ratio == 0.0
    assert list(r.pairs.columns) == ["voice_ref", "prompt_id", "repeat", "a", "b", "diff"]
    assert r.to_dict()["n_pairs"] == 60


def test_paired_differences_noisy_ci_and_unpaired(rng):
    rows = []
    for p in range(40):
        rows.append({"target_model": PLUS, "voice_ref": "v", "prompt_id": f"p{p}", "repeat": 0,
                     "status": "completed", "ttfa_ms": 1000 + rng.normal(0, 50)})
        rows.append({"target_model": FLASH, "voice_ref": "v", "prompt_id": f"p{p}", "repeat": 0,
                     "status": "completed", "ttfa_ms": 900 + rng.normal(0, 50)})
    rows.append({"target_model": PLUS, "voice_ref": "v", "prompt_id": "only-plus", "repeat": 0,
                 "status": "completed", "ttfa_ms": 5.0})
    r = results.paired_differences(results.to_frame(rows), "ttfa_ms", n_boot=1000)
    assert r.n_pairs == 40
    assert r.ci_low < r.median_diff < r.ci_high
    assert 50 < r.ci_low and r.ci_high < 150
    empty = results.paired_differences(results.to_frame(rows[:1]), "ttfa_ms")
    assert empty.n_pairs == 0 and math.isnan(empty.median_diff)


def test_bootstrap_ci_contains_median(rng):
    v = rng.normal(10, 1, 200)
    lo, hi = results.bootstrap_ci(v, n_boot=500)
    assert lo < np.median(v) < hi and hi - lo < 0.6
